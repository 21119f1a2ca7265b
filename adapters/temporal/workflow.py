"""The Temporal side of a perdure run: ONE generic workflow class and the :class:`Journal` it runs on.

SEMANTICS.md onto Temporal:

* a perdure run is a Temporal workflow execution whose *workflow id* is the run id and whose *type* is the
  perdure workflow name; :class:`PerdureWorkflow` (dynamic: it accepts every type) runs
  ``perdure.core.runtime.run_workflow`` with a :class:`TemporalJournal`;
* a step or tool is an activity (``perdure.step``, activity id = position) whose result is perdure's
  envelope JSON -- or a local activity when the URL says ``steps=local``; recorded ``perdure.now()`` is
  always a local activity (a clock read needs neither heartbeats nor another worker);
* an approval is ``workflow.wait_condition`` on the ``perdure.decide`` signal, with Temporal's timer as
  the timeout; while waiting, the pending approval is in the run's memo (key ``perdure.pending/<approval
  id>``, one per approval, so concurrent approvals each stay decidable) so ``describe()`` shows it with no
  worker alive; a decision sent while no worker runs is a signal in the history, delivered on replay;
* a durable sleep is a Temporal timer; sleep and approval outcomes are written to the memo key
  ``perdure.record`` so the history alone rebuilds ``steps()``;
* a long run continues as new every ``continue_as_new_after`` operations, carrying its journal into the
  next Temporal run of the same workflow id (see :mod:`.continuation`);
* any exception escaping user workflow code fails the run with the original type name (an
  ``ApplicationError``), as on the memory engine -- except perdure's ``NonDeterminismError`` found while
  Temporal *replays*: the worker ends that run FAILED itself, with perdure's message (``worker.py``).
  Temporal's own ``NondeterminismError`` fails the run too (the worker's
  ``workflow_failure_exception_types``) instead of retrying the workflow task forever.

Workflow code runs with Temporal's deterministic event loop but without its import sandbox (see
``worker.worker_options``): perdure already routes time, randomness and I/O through recorded steps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta

import pydantic_core
from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

from ...core.backend import STEP_TIMEOUT_GRACE
from ...core.errors import NonDeterminismError
from ...core.runtime import Journal, decision_envelope, run_workflow, sleep_envelope, timeout_envelope
from ...core.types import ApprovalRequest, Decision, ErrorInfo, StepCall, StepKind
from .continuation import (
    JOURNAL_PAYLOAD,
    CarriedJournal,
    RunState,
    continued_input,
    first_start,
    unsettled_entry,
)
from .payloads import (
    DECISION_SIGNAL,
    GATE_WORKFLOW,
    MEMO_PENDING_LEGACY,
    MEMO_RECORD,
    MEMO_RUN,
    SLEEP_SUMMARY,
    STEP_ACTIVITY,
    WAKE_SIGNAL,
    encode_call,
    pending_key,
    raw,
    record_json,
    text_of,
)
from .settings import PROFILES, TemporalSettings

# Steps that are always local activities: a clock read is microseconds of work with no side effect.
ALWAYS_LOCAL = frozenset({"perdure.now"})
# Runs whose history has this patch marker may continue as new; histories written before continue-as-new
# existed have none and replay as they ran (Temporal's own versioning of a workflow change).
CONTINUE_AS_NEW_PATCH = "perdure.continue-as-new"
# Runs whose history has this marker (at their first unsettled operation) let cancelled or raising
# operations through the cut; a history in which one ended unsettled *without* it -- written by an earlier
# perdure -- replays as it ran: waiting at its cut for every earlier position (forever, for a cancelled one).
UNSETTLED_PATCH = "perdure.unsettled-operations"
# The policy of runs started without a RunState (by a client older than continue-as-new): only when
# Temporal suggests it. A constant: runs must replay the same way on every worker.
LEGACY_CONTINUE_AS_NEW_AFTER = 0


@dataclass(frozen=True)
class StepOptions:
    """How the workflow schedules steps: fixed per worker (task queue), read by every run it executes."""

    local: bool
    start_to_close: timedelta
    heartbeat: timedelta
    retry: RetryPolicy

    @classmethod
    def of(cls, settings: TemporalSettings) -> StepOptions:
        p = settings.profile
        return cls(
            local=settings.steps == "local",
            # perdure's own step timeout ends the attempt first (activities.py); this is the backstop.
            start_to_close=timedelta(seconds=settings.attempt_timeout + STEP_TIMEOUT_GRACE),
            heartbeat=timedelta(seconds=p.heartbeat_timeout),
            # Unlimited attempts: Temporal retries a step whose worker died (that is recovery, whatever the
            # step's RetryPolicy says); the activity itself ends the retries by *returning* the failure
            # envelope once perdure's policy is exhausted, and sets perdure's delay per attempt. The
            # intervals here only pace retries after a timeout, i.e. after a crash.
            retry=RetryPolicy(
                initial_interval=timedelta(seconds=p.crash_retry_interval),
                backoff_coefficient=2.0,
                maximum_interval=timedelta(seconds=p.crash_retry_max_interval),
                maximum_attempts=0,
            ),
        )


# Called (from the workflow thread) with (run_id, error) when a replay proves the run's code changed.
FailureReporter = Callable[[str, ErrorInfo], None]
# Called (from the workflow thread) with (run_id, position, kind, name) for each step a replayed run's code
# issues as an activity: the worker's replay check compares it with the step in flight there (worker.py).
StepReporter = Callable[[str, int, str, str], None]


@dataclass(frozen=True)
class WorkerContext:
    """What a worker tells the runs it executes: step options, where to report a failed replay, and (the
    replay check only) where to report the steps the code asks for."""

    steps: StepOptions
    report_failure: FailureReporter | None = None
    report_step: StepReporter | None = None


# task queue -> context, set by the worker before it polls (workflow instances look theirs up).
_CONTEXTS: dict[str, WorkerContext] = {}


def register_worker(
    task_queue: str, settings: TemporalSettings, report_failure: FailureReporter | None = None,
    report_step: StepReporter | None = None,
) -> None:
    _CONTEXTS[task_queue] = WorkerContext(StepOptions.of(settings), report_failure, report_step)


def _context() -> WorkerContext:
    found = _CONTEXTS.get(workflow.info().task_queue)
    if found is None:  # a worker built without TemporalBackend.serve (e.g. a user's Replayer): production
        found = WorkerContext(StepOptions.of(TemporalSettings("", "", "", PROFILES["production"])))
    return found


class TemporalJournal(Journal):
    """perdure's three durable primitives as Temporal commands, over the journal carried into this
    Temporal run (see :mod:`.continuation`).

    Temporal replays workflow code against the history itself, so unlike the memory engine this journal
    looks nothing up in Temporal: on replay each command is matched to its recorded event and returns the
    recorded result (the envelope), and ``RunContext`` checks names and kinds. Positions carried from
    earlier Temporal runs of the same perdure run return their envelope from the carried journal.

    Continuing as new: at the first *new* position once the policy says so (the *cut*), that operation
    and any later one wait; when every position before the cut has its outcome -- or never will, being
    *unsettled* (its task cancelled by the workflow, or an exception raised before it was issued) --
    ``drained`` is true and :class:`PerdureWorkflow` continues as new. If the carried input would not fit
    Temporal's payload limit, the cut is lifted for good (``stay``) and the waiting operations go on in
    this Temporal run.
    """

    def __init__(self, instance: PerdureWorkflow, state: RunState, carried: CarriedJournal, *, can: bool) -> None:
        self.instance = instance
        context = _context()
        self.options = context.steps
        self.report_step = context.report_step
        self.state = state
        self.carried = carried
        self.base = len(carried)  # the first position recorded in this Temporal run
        self.recorded: dict[int, str] = {}  # position -> envelope, this Temporal run's outcomes
        self.approvals: set[str] = set()  # ids of the approvals decided (or timed out) in this run
        self.unsettled: dict[int, str] = {}  # position -> carried entry, operations that ended without outcome
        self.settles: bool | None = None  # see _settles
        self.cut: int | None = None
        self.stay = not can  # True: this Temporal run holds the rest of the perdure run

    # --- continue-as-new ------------------------------------------------------------------------------
    def _due(self, position: int) -> bool:
        done = position - self.base  # operations this Temporal run started: at least one, so runs progress
        if done < 1:
            return False
        after = self.state.continue_as_new_after
        return (after > 0 and done >= after) or workflow.info().is_continue_as_new_suggested()

    async def _admit(self, position: int, name: str, kind: StepKind) -> None:
        """Called before an operation is issued: hold it while the run is being continued as new."""
        if position < self.base:  # carried without an outcome
            await self._carried_unsettled(position, name, kind)
            return
        if self.cut is None and not self.stay and self._due(position):
            self.cut = position
        if self.cut is not None and position >= self.cut:
            await workflow.wait_condition(lambda: self.cut is None)

    @property
    def drained(self) -> bool:
        """Every position before the cut has its outcome or is unsettled: the run can continue as new now."""
        if self.cut is None:
            return False
        return all(p in self.recorded or p in self.unsettled for p in range(self.base, self.cut))

    def continuation(self, args: RawValue, decisions: dict[str, Decision]) -> tuple[list[RawValue], float] | None:
        """The next Temporal run's input and the perdure run's start time, or None if the input would not
        fit ``max_carry_bytes`` (then the cut is lifted and the run stays in this Temporal run for good)."""
        assert self.cut is not None
        journal = self.carried.extended([self.recorded.get(p) or self.unsettled[p] for p in range(self.base, self.cut)])
        consumed = self.approvals | self.carried.approval_ids()
        created = first_start(self.state, workflow.info().workflow_start_time.timestamp())
        state = replace(
            self.state,
            generation=self.state.generation + 1,
            created_at=created,
            decisions={k: d.model_dump(mode="json") for k, d in decisions.items() if k not in consumed},
        )
        payloads, size = continued_input(args, state, journal)
        if size <= self.state.max_carry_bytes:
            return payloads, created
        workflow.logger.warning(
            "perdure: run %s cannot continue as new: its journal of %d positions needs %d bytes, over the "
            "%d-byte limit (max_carry_bytes); it goes on in one Temporal history, whose limits now apply",
            workflow.info().workflow_id, self.cut, size, self.state.max_carry_bytes,
        )
        self.stay, self.cut = True, None
        return None

    # --- the primitives -------------------------------------------------------------------------------
    # Each returns the outcome carried from an earlier Temporal run, or issues the operation. One that ends
    # without an outcome -- its task cancelled by the workflow, or an exception raised before it was
    # issued -- is *unsettled*: it must not hold up the cut (nothing will ever record it).
    async def _operation(self, position: int, name: str, kind: StepKind, issue: Callable[[], Awaitable[str]]) -> str:
        if position < self.base and self.carried.unsettled(position) is None:
            return self.carried.envelope(position)
        try:
            return await issue()
        except BaseException as exc:
            self._unsettled(position, name, kind, exc)
            if isinstance(exc, ActivityError) and is_cancelled_exception(exc):
                # The workflow cancelled the task awaiting this step: the task ends cancelled, as on every
                # engine (Temporal reports the cancelled activity as an ActivityError).
                raise asyncio.CancelledError() from exc
            raise

    async def step(self, call: StepCall) -> str:
        return await self._operation(call.position, call.name, call.kind, lambda: self._step(call))

    async def approval(self, request: ApprovalRequest) -> str:
        return await self._operation(request.position, request.name, StepKind.APPROVAL,
                                     lambda: self._approval(request))

    async def sleep(self, position: int, seconds: float) -> str:
        return await self._operation(position, "perdure.sleep", StepKind.SLEEP, lambda: self._sleep(position, seconds))

    async def _step(self, call: StepCall) -> str:
        position = call.position
        await self._admit(position, call.name, call.kind)
        opts = self.options
        if opts.local or call.name in ALWAYS_LOCAL:
            # No UI summary here: it would be encoded into every marker, and local steps are the cheap
            # path (measured: +3% per local step with it). The marker's activity id is the position.
            result = await workflow.execute_local_activity(
                STEP_ACTIVITY,
                encode_call(call),
                activity_id=str(position),
                start_to_close_timeout=opts.start_to_close,
                retry_policy=opts.retry,
                result_type=RawValue,
            )
        else:
            if self.report_step is not None:
                self.report_step(workflow.info().workflow_id, position, call.kind.value, call.name)
            result = await workflow.execute_activity(
                STEP_ACTIVITY,
                encode_call(call),
                activity_id=str(position),
                start_to_close_timeout=opts.start_to_close,
                heartbeat_timeout=opts.heartbeat,
                retry_policy=opts.retry,
                result_type=RawValue,
                summary=f"{call.kind.value} {call.name} @{position}",  # what the Temporal UI shows
            )
        envelope = self.recorded[position] = text_of(result)
        return envelope

    async def _approval(self, request: ApprovalRequest) -> str:
        await self._admit(request.position, request.name, StepKind.APPROVAL)
        deadline = None if request.timeout is None else workflow.now().timestamp() + request.timeout
        pending = request.pending(deadline).model_dump(mode="json")
        pending["position"] = request.position
        key = pending_key(request.approval_id)
        workflow.upsert_memo({key: pending})
        decisions = self.instance.decisions
        try:
            await workflow.wait_condition(
                lambda: request.approval_id in decisions,
                timeout=request.timeout,
                timeout_summary=f"perdure.approval {request.approval_id} timeout",
            )
            envelope = decision_envelope(request, decisions[request.approval_id])
        except TimeoutError:
            envelope = timeout_envelope(request)
        except asyncio.CancelledError:  # nobody can decide it any more: no longer shown as pending
            if self._settles():
                workflow.upsert_memo({key: None})
            raise
        # (MEMO_PENDING_LEGACY: a run started by an earlier perdure, whose pending approval is under that key)
        workflow.upsert_memo({key: None, MEMO_PENDING_LEGACY: None, MEMO_RECORD: record_json(request.position, envelope)})
        self.approvals.add(request.approval_id)
        self.recorded[request.position] = envelope
        return envelope

    async def _sleep(self, position: int, seconds: float) -> str:
        await self._admit(position, "perdure.sleep", StepKind.SLEEP)
        if seconds > 0:  # Temporal has no zero-length timer; a zero sleep only records its outcome
            await workflow.sleep(seconds, summary=f"{SLEEP_SUMMARY}{position}")
        envelope = sleep_envelope(seconds)
        workflow.upsert_memo({MEMO_RECORD: record_json(position, envelope)})
        self.recorded[position] = envelope
        return envelope

    # --- unsettled operations -------------------------------------------------------------------------
    def _settles(self) -> bool:
        """Whether unsettled operations are let through the cut in this Temporal run: Temporal's versioning,
        so that a history in which a run waited at its cut for one (earlier perdure) replays as it ran."""
        if self.settles is None:
            self.settles = workflow.patched(UNSETTLED_PATCH)
        return self.settles

    def _unsettled(self, position: int, name: str, kind: StepKind, exc: BaseException) -> None:
        """The operation at ``position`` ended with ``exc`` and no outcome: note it, for the cut."""
        if position < self.base or position in self.recorded:
            return
        if is_cancelled_exception(exc):  # (a cancelled activity is an ActivityError caused by a cancel)
            how = "cancelled"
        elif isinstance(exc, Exception):
            how = "raised"
        else:
            return
        if self._settles():
            self.unsettled[position] = unsettled_entry(name, kind.value, how)

    async def _carried_unsettled(self, position: int, name: str, kind: StepKind) -> None:
        """A carried position without an outcome (see ``continuation.unsettled_entry``): a cancelled one
        waits until the workflow cancels it again, as it did; a raised one returns, to run (and raise)
        again. Names and kinds are checked here, as ``RunContext`` checks recorded outcomes."""
        entry = self.carried.entries[position]
        if (entry["name"], entry["kind"]) != (name, kind.value):
            raise NonDeterminismError(position, f"{entry['kind']} {entry['name']!r}", f"{kind.value} {name!r}")
        if self.carried.unsettled(position) == "cancelled":
            await asyncio.get_running_loop().create_future()


def _application_error(exc: BaseException) -> ApplicationError:
    """``exc`` as the failure of the run: the original class name and message, never retried."""
    if isinstance(exc, workflow.NondeterminismError):
        return ApplicationError(str(exc), type=NonDeterminismError.__name__, non_retryable=True)
    return ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True)


@workflow.defn(dynamic=True, sandboxed=False)
class PerdureWorkflow:
    """Runs any perdure workflow: the Temporal workflow type is the perdure workflow name."""

    def __init__(self) -> None:
        self.decisions: dict[str, Decision] = {}

    @workflow.run
    async def run(self, args: Sequence[RawValue]) -> RawValue:
        args_raw = args[0] if args else raw("{}")
        state = RunState.of(args[1] if len(args) > 1 else None, LEGACY_CONTINUE_AS_NEW_AFTER)
        carried = CarriedJournal(args[JOURNAL_PAYLOAD].payload.data if len(args) > JOURNAL_PAYLOAD else b"[]")
        for approval_id, decision in state.decisions.items():  # received by an earlier Temporal run
            self.decisions.setdefault(approval_id, Decision.model_validate(decision))
        journal = TemporalJournal(self, state, carried, can=workflow.patched(CONTINUE_AS_NEW_PATCH))
        # The workflow function runs as a task, so that continuing as new happens here, outside user code:
        # the task stays parked at the cut and is dropped with this Temporal run (no exception of
        # Temporal's passes through user code, which might catch it or run durable code in `finally`).
        task = asyncio.create_task(self._execute(journal, text_of(args_raw)))
        while True:
            await workflow.wait_condition(lambda: task.done() or journal.drained)
            if task.done():
                return await task
            continued = journal.continuation(args_raw, self.decisions)
            if continued is not None:
                payloads, created = continued
                workflow.continue_as_new(
                    args=payloads, memo={MEMO_RUN: {"created_at": created, "generation": journal.state.generation + 1}}
                )

    async def _execute(self, journal: TemporalJournal, args_json: str) -> RawValue:
        info = workflow.info()
        try:
            output = await run_workflow(journal, info.workflow_id, info.workflow_type, args_json)
        except ApplicationError:
            raise
        except NonDeterminismError as exc:
            if workflow.unsafe.is_replaying():
                # Failing now would be a command the history does not hold at this point, which Temporal
                # reports as its own nondeterminism (with its own message). So this workflow task fails
                # instead, and the worker ends the run FAILED with perdure's error (see worker.py).
                report = _context().report_failure
                if report is not None:
                    report(info.workflow_id, ErrorInfo.of(exc))
                raise
            raise _application_error(exc) from None
        except Exception as exc:  # asyncio.CancelledError and Temporal's eviction are BaseExceptions: they pass
            raise _application_error(exc) from None
        return raw(output)

    @workflow.signal(name=WAKE_SIGNAL)
    def wake(self) -> None:
        """Nothing to do: the signal only makes a worker replay the run (see ``worker.TemporalWorker.replay_check``)."""

    @workflow.signal(name=DECISION_SIGNAL)
    def decide(self, approval_id: str, decision: RawValue) -> None:
        # The first decision wins: the gate workflow delivers the same decision the client already sent.
        if approval_id not in self.decisions:
            self.decisions[approval_id] = Decision.model_validate(pydantic_core.from_json(text_of(decision)))


@workflow.defn(name=GATE_WORKFLOW, sandboxed=False)
class DecisionGate:
    """The decision on one approval, kept by Temporal.

    Its workflow id ``perdure.decision/<run_id>/<approval_id>`` is started with REJECT_DUPLICATE, so the
    server refuses a second decision atomically; its input is the decision, so it survives a client that
    dies before signalling the run; running it signals the run (again), which keeps only the first.
    """

    @workflow.run
    async def run(self, run_id: str, approval_id: str, decision: RawValue) -> str:
        try:
            await workflow.get_external_workflow_handle(run_id).signal(DECISION_SIGNAL, args=[approval_id, decision])
        except Exception as exc:  # the run ended (cancelled, timed out) before the decision arrived
            return f"not delivered: {type(exc).__name__}: {exc}"
        return "delivered"

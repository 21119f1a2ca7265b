"""The Temporal side of a perdure run: ONE generic workflow class and the :class:`Journal` it runs on.

SEMANTICS.md onto Temporal:

* a perdure run is a Temporal workflow execution whose *workflow id* is the run id and whose *type* is the
  perdure workflow name; :class:`PerdureWorkflow` (dynamic: it accepts every type) runs
  ``perdure.core.runtime.run_workflow`` with a :class:`TemporalJournal`;
* a step or tool is an activity (``perdure.step``, activity id = position) whose result is perdure's
  envelope JSON -- or a local activity when the URL says ``steps=local``; recorded ``perdure.now()`` is
  always a local activity (a clock read needs neither heartbeats nor another worker);
* an approval is ``workflow.wait_condition`` on the ``perdure.decide`` signal, with Temporal's timer as
  the timeout; while waiting, the pending approval is in the run's memo so ``describe()`` shows it with no
  worker alive; a decision sent while no worker runs is a signal in the history, delivered on replay;
* a durable sleep is a Temporal timer; sleep and approval outcomes are written to the memo key
  ``perdure.record`` so the history alone rebuilds ``steps()``;
* any exception escaping user workflow code fails the run with the original type name (an
  ``ApplicationError``), as on the memory engine -- except perdure's ``NonDeterminismError`` found while
  Temporal *replays*: the worker ends that run FAILED itself, with perdure's message (``worker.py``).
  Temporal's own ``NondeterminismError`` fails the run too (the worker's
  ``workflow_failure_exception_types``) instead of retrying the workflow task forever.

Workflow code runs with Temporal's deterministic event loop but without its import sandbox (see
``worker.worker_options``): perdure already routes time, randomness and I/O through recorded steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import pydantic_core
from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ApplicationError

from ...core.errors import NonDeterminismError
from ...core.runtime import Journal, decision_envelope, run_workflow, sleep_envelope, timeout_envelope
from ...core.types import ApprovalRequest, Decision, ErrorInfo, StepCall
from .payloads import (
    DECISION_SIGNAL,
    GATE_WORKFLOW,
    MEMO_PENDING,
    MEMO_RECORD,
    SLEEP_SUMMARY,
    STEP_ACTIVITY,
    WAKE_SIGNAL,
    encode_call,
    raw,
    record_json,
    text_of,
)
from .settings import PROFILES, TemporalSettings

# Steps that are always local activities: a clock read is microseconds of work with no side effect.
ALWAYS_LOCAL = frozenset({"perdure.now"})


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
            start_to_close=timedelta(seconds=p.step_timeout),
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


@dataclass(frozen=True)
class WorkerContext:
    """What a worker tells the runs it executes: step options and where to report a failed replay."""

    steps: StepOptions
    report_failure: FailureReporter | None = None


# task queue -> context, set by the worker before it polls (workflow instances look theirs up).
_CONTEXTS: dict[str, WorkerContext] = {}


def register_worker(
    task_queue: str, settings: TemporalSettings, report_failure: FailureReporter | None = None
) -> None:
    _CONTEXTS[task_queue] = WorkerContext(StepOptions.of(settings), report_failure)


def _context() -> WorkerContext:
    found = _CONTEXTS.get(workflow.info().task_queue)
    if found is None:  # a worker built without TemporalBackend.serve (e.g. a user's Replayer): production
        found = WorkerContext(StepOptions.of(TemporalSettings("", "", "", PROFILES["production"])))
    return found


class TemporalJournal(Journal):
    """perdure's three durable primitives as Temporal commands.

    Temporal replays workflow code against the history itself, so unlike the memory engine this journal
    never looks anything up: on replay each command is matched to its recorded event and returns the
    recorded result (the envelope), and ``RunContext`` checks names and kinds.
    """

    def __init__(self, instance: PerdureWorkflow) -> None:
        self.instance = instance
        self.options = _context().steps

    async def step(self, call: StepCall) -> str:
        opts = self.options
        if opts.local or call.name in ALWAYS_LOCAL:
            # No UI summary here: it would be encoded into every marker, and local steps are the cheap
            # path (measured: +3% per local step with it). The marker's activity id is the position.
            result = await workflow.execute_local_activity(
                STEP_ACTIVITY,
                encode_call(call),
                activity_id=str(call.position),
                start_to_close_timeout=opts.start_to_close,
                retry_policy=opts.retry,
                result_type=RawValue,
            )
        else:
            result = await workflow.execute_activity(
                STEP_ACTIVITY,
                encode_call(call),
                activity_id=str(call.position),
                start_to_close_timeout=opts.start_to_close,
                heartbeat_timeout=opts.heartbeat,
                retry_policy=opts.retry,
                result_type=RawValue,
                summary=f"{call.kind.value} {call.name} @{call.position}",  # what the Temporal UI shows
            )
        return text_of(result)

    async def approval(self, request: ApprovalRequest) -> str:
        deadline = None if request.timeout is None else workflow.now().timestamp() + request.timeout
        pending = request.pending(deadline).model_dump(mode="json")
        pending["position"] = request.position
        workflow.upsert_memo({MEMO_PENDING: pending})
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
        workflow.upsert_memo({MEMO_PENDING: None, MEMO_RECORD: record_json(request.position, envelope)})
        return envelope

    async def sleep(self, position: int, seconds: float) -> str:
        if seconds > 0:  # Temporal has no zero-length timer; a zero sleep only records its outcome
            await workflow.sleep(seconds, summary=f"{SLEEP_SUMMARY}{position}")
        envelope = sleep_envelope(seconds)
        workflow.upsert_memo({MEMO_RECORD: record_json(position, envelope)})
        return envelope


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
        info = workflow.info()
        args_json = text_of(args[0]) if args else "{}"
        try:
            output = await run_workflow(TemporalJournal(self), info.workflow_id, info.workflow_type, args_json)
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

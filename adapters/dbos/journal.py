"""perdure's :class:`~perdure.core.runtime.Journal` on DBOS: one generic DBOS workflow, DBOS steps as the journal.

How SEMANTICS.md maps onto DBOS:

* **Run** -- one execution of the DBOS workflow ``perdure.run`` (:func:`perdure_run`) whose workflow ID is
  the run id. It calls :func:`~perdure.core.runtime.run_workflow` with the perdure workflow's name and
  arguments, so its own source never changes with user code: together with the pinned application
  version (database.py) a code change never orphans a run, it replays under the new code.
* **Step / tool** -- one DBOS step named ``"step:<name>"`` / ``"tool:<name>"`` whose output is the perdure
  envelope (JSON). perdure's retry loop runs inside it (:func:`~perdure.core.runtime.execute_step`), so a
  failure is recorded as a failed envelope the workflow can catch. A step killed in flight has no record
  and runs again on recovery; a recorded one is returned by DBOS without running. A step with a sync
  body is a sync DBOS step (:func:`~perdure.core.runtime.execute_step_sync`): DBOS runs its record check,
  the body and the record in one executor thread, as it does its own sync steps.
* **Nondeterminism** -- DBOS checks the recorded step name at each step ID; a mismatch
  (``DBOSUnexpectedStepError``) becomes perdure's :class:`NonDeterminismError` with the same message as on
  every engine.
* **Approval** -- ``"approval.begin:<name>"`` records the deadline once; ``DBOS.set_event`` publishes the
  pending approval (readable by clients while no worker runs); ``DBOS.recv`` waits for the decision with
  an explicit timeout (never DBOS's 60 s default; DBOS records the timeout durably); on timeout
  ``"approval.expire:<name>"`` claims the outcome in ``perdure_decisions`` (a decision that won the race
  still counts); ``"approval:<name>"`` records the envelope; the event is cleared.
* **Sleep** -- ``"sleep.begin:perdure.sleep"`` records the wake-up time once; ``"sleep:perdure.sleep"``
  records the envelope after waking.
* **Replay** -- when a run's first operation turns out to be recorded (a recovery), the rest of its
  record is read in one query and recorded positions are answered from it at the step IDs DBOS draws
  (replay.py), instead of one DBOS transaction per replayed step; the first new operation goes through
  DBOS again.

``steps()`` reads these operations back (records.py); positions are counted from them.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pydantic_core
import sqlalchemy as sa
from dbos import DBOS, DBOSClient
from dbos._core import StepOptions
from dbos._error import DBOSUnexpectedStepError

from ...core.errors import NonDeterminismError
from ...core.registry import get_step
from ...core.runtime import (
    Journal,
    decision_envelope,
    execute_step,
    execute_step_sync,
    run_workflow,
    sleep_envelope,
    timeout_envelope,
)
from ...core.types import ApprovalRequest, Decision, StepCall
from . import cancellation, internals
from .database import APP_NAME, DBOS_WORKFLOW, PENDING_EVENT, claim_timeout
from .replay import NOT_ANSWERED, RecordedRun
from .serializer import SERIALIZER, RawJSON

SLEEP = "perdure.sleep"
# recv needs a finite timeout; an approval without one waits this long (ten years), i.e. forever.
FOREVER = 10 * 365 * 24 * 3600.0
# Operations that begin or complete a journal position. Anything else (DBOS.setEvent, DBOS.recv,
# DBOS.sleep, approval.expire) belongs to the position in progress.
BEGIN_KINDS = ("approval.begin", "sleep.begin")

log = logging.getLogger("perdure.dbos")


def op_name(kind: str, name: str) -> str:
    """The DBOS step name of a journal operation: ``"<kind>:<perdure name>"``."""
    return f"{kind}:{name}"


def parse_op(function_name: str) -> tuple[str, str] | None:
    """``(kind, name)`` of a DBOS operation written by this journal, or None for DBOS's own operations."""
    kind, sep, name = function_name.partition(":")
    if not sep or kind not in ("step", "tool", "approval", "sleep", "approval.begin", "sleep.begin", "approval.expire"):
        return None
    return kind, name


def describe_op(function_name: str) -> str:
    """How a recorded operation reads in a :class:`NonDeterminismError` (same words on every engine)."""
    parsed = parse_op(function_name)
    if parsed is None:
        return f"DBOS operation {function_name!r}"
    kind, name = parsed
    return f"{kind.split('.')[0]} {name!r}"


_engine: sa.Engine | None = None


def configure(engine: sa.Engine | None) -> None:
    """Give the journal the worker's database engine (approval timeouts, cancellation checks)."""
    global _engine
    _engine = engine
    cancellation.configure(None if engine is None else DBOSClient(
        system_database_engine=engine, serializer=SERIALIZER, application_name=APP_NAME
    ))


_options: dict[tuple[str, str], StepOptions] = {}
_call_options: dict[str, StepOptions] = {}


def step_options(kind: str, name: str) -> StepOptions:
    """The DBOS step options of an operation, made once per (kind, name): DBOS copies them on every call."""
    options = _options.get((kind, name))
    if options is None:
        options = _options[kind, name] = {"name": op_name(kind, name)}
    return options


def call_options(call: StepCall) -> StepOptions:
    """:func:`step_options` of a step or tool call, by its name alone (a name is one step or one tool)."""
    options = _call_options.get(call.name)
    if options is None:
        options = _call_options[call.name] = step_options(call.kind.value, call.name)
    return options


async def _execute(call: StepCall) -> RawJSON:
    """The body of a step's DBOS step: perdure's retry loop around the user's function."""
    return RawJSON(await execute_step(call))


def _execute_sync(call: StepCall) -> RawJSON:
    """The same for a sync body, as a sync DBOS step: one hand-off to a DBOS thread for the check, the body
    and the record, where an async DBOS step running the body in a thread of its own takes four."""
    return RawJSON(execute_step_sync(call))


def _body(call: StepCall) -> Callable[[StepCall], Any]:
    return _execute if get_step(call.name).is_async else _execute_sync


def _nondeterminism(position: int, recorded: str, kind: str, name: str) -> NonDeterminismError:
    return NonDeterminismError(position, describe_op(recorded), f"{kind.split('.')[0]} {name!r}")


FIRST = RecordedRun([])  # sentinel: the run's first operation has not been reached yet


class DBOSJournal(Journal):
    """The journal of the run executing in the current DBOS workflow.

    ``recorded`` says how operations reach DBOS: ``None`` -- each through DBOS (a run executing for the
    first time, or past its recorded operations); a :class:`RecordedRun` -- recorded positions are
    answered from it (see replay.py); :data:`FIRST` -- the first operation tells which of the two.
    """

    __slots__ = ("run_id", "recorded")

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.recorded: RecordedRun | None = FIRST

    async def _op(self, position: int, kind: str, name: str, fn: Callable[..., Any],
                  *args: Any, options: StepOptions | None = None) -> Any:
        """Run ``fn(*args)`` as the DBOS step of this operation (or return its recorded output on replay)."""
        if options is None:
            options = step_options(kind, name)
        try:
            recorded = self.recorded
            if recorded is None:
                return await DBOS.run_step_async(options, fn, *args)
            if recorded is FIRST:
                return await self._first(options, fn, args)
            return await self._replay(recorded, position, kind, name, options, fn, args)
        except DBOSUnexpectedStepError as exc:
            raise _nondeterminism(position, exc.inputs[3], kind, name) from None

    async def _first(self, options: StepOptions, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """The run's first operation, through DBOS. If DBOS answers it from its record without running it,
        this execution is a recovery: read the rest of the run's record at once for the next ones."""
        self.recorded = None  # operations started while this one runs go through DBOS
        ran = False

        async def probe() -> Any:
            nonlocal ran
            ran = True
            return await fn(*args)

        def probe_sync() -> Any:  # a sync operation stays a sync DBOS step
            nonlocal ran
            ran = True
            return fn(*args)

        output = await DBOS.run_step_async(options, probe if inspect.iscoroutinefunction(fn) else probe_sync)
        if not ran:
            try:
                self.recorded = RecordedRun(await asyncio.to_thread(internals.recorded_operations, self.run_id))
            except Exception:  # the replay is only slower without it: DBOS answers each operation itself
                log.warning("reading the record of run %s at once failed; DBOS replays it step by step",
                            self.run_id, exc_info=True)
        return output

    async def _replay(self, recorded: RecordedRun, position: int, kind: str, name: str, options: StepOptions,
                      fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """An operation of a recovered run: answered from its record, or run by DBOS at its step ID."""
        reservation = DBOS.reserve_step()  # the step ID DBOS would give this operation
        function_id = reservation.step_id
        if function_id >= recorded.last:
            self.recorded = None  # nothing is recorded past this ID: the next operations are new
        recorded_name = recorded.name_at(function_id)
        if recorded_name is not None:
            if recorded_name != options["name"]:
                raise _nondeterminism(position, recorded_name, kind, name)
            output = recorded.answer(function_id)
            if output is not NOT_ANSWERED:
                return output
        return await reservation.run_async(options, fn, *args)

    async def _dbos(self, position: int, kind: str, name: str, operation: Awaitable[Any]) -> Any:
        """A DBOS primitive (event, recv) inside an operation, with the same nondeterminism mapping."""
        try:
            return await operation
        except DBOSUnexpectedStepError as exc:
            raise _nondeterminism(position, exc.inputs[3], kind, name) from None

    async def step(self, call: StepCall) -> str:
        options = call_options(call)
        if self.recorded is None:  # the common path: one DBOS step, nothing else
            try:
                output = await DBOS.run_step_async(options, _body(call), call)
            except DBOSUnexpectedStepError as exc:
                raise _nondeterminism(call.position, exc.inputs[3], call.kind.value, call.name) from None
        else:
            output = await self._op(call.position, call.kind.value, call.name, _body(call), call, options=options)
        return output if type(output) is RawJSON else envelope_text(output)

    async def approval(self, request: ApprovalRequest) -> str:
        pos, name = request.position, request.name

        async def begin() -> dict[str, Any]:
            return {"deadline": None if request.timeout is None else time.time() + request.timeout}

        deadline: float | None = (await self._op(pos, "approval.begin", name, begin))["deadline"]
        pending = request.pending(deadline).model_dump(mode="json")
        await self._dbos(pos, "approval", name, DBOS.set_event_async(PENDING_EVENT, {**pending, "position": pos}))
        wait = FOREVER if deadline is None else max(0.0, deadline - time.time())
        receive = DBOS.recv_async(request.approval_id, timeout_seconds=wait)
        message = await self._dbos(pos, "approval", name, cancellation.unless_cancelled(self.run_id, receive))
        if message is None:  # the deadline passed: claim the outcome against a decision sent meanwhile

            async def expire() -> Any:
                assert _engine is not None, "the DBOS journal runs only in a perdure worker"
                return await asyncio.to_thread(claim_timeout, _engine, self.run_id, request.approval_id)

            message = await self._op(pos, "approval.expire", name, expire, options={
                "name": op_name("approval.expire", name), "retries_allowed": True, "max_attempts": 10,
                "interval_seconds": 0.2,
            })
        envelope = timeout_envelope(request) if message is None else decision_envelope(
            request, Decision.model_validate(message)
        )

        async def record() -> RawJSON:
            return RawJSON(envelope)

        text = envelope_text(await self._op(pos, "approval", name, record))
        await self._dbos(pos, "approval", name, DBOS.set_event_async(PENDING_EVENT, None))
        return text

    async def sleep(self, position: int, seconds: float) -> str:
        async def begin() -> dict[str, Any]:
            return {"wake_at": time.time() + seconds}

        wake_at: float = (await self._op(position, "sleep.begin", SLEEP, begin))["wake_at"]
        if (left := wake_at - time.time()) > 0:
            await cancellation.unless_cancelled(self.run_id, asyncio.sleep(left))

        async def record() -> RawJSON:
            return RawJSON(sleep_envelope(seconds))

        return envelope_text(await self._op(position, "sleep", SLEEP, record))


def envelope_text(output: Any) -> str:
    """The envelope JSON text of a step output: as returned the first time, or as read back on replay."""
    return output if isinstance(output, RawJSON) else pydantic_core.to_json(output).decode()


@DBOS.workflow(name=DBOS_WORKFLOW)
async def perdure_run(workflow: str, args: Any) -> RawJSON:
    """The one DBOS workflow: executes (or replays) the perdure workflow ``workflow`` for this run."""
    run_id = DBOS.workflow_id
    assert run_id is not None
    output = await run_workflow(DBOSJournal(run_id), run_id, workflow, pydantic_core.to_json(args).decode())
    return RawJSON(output)

"""The durable operations a workflow calls, and the context variables that route them to the running engine."""

from __future__ import annotations

import datetime as _dt
import uuid as _uuid
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import NotInStepError, NotInWorkflowError
from .types import Decision

if TYPE_CHECKING:
    from .runtime import RunContext
    from .types import StepCall

_run: ContextVar[RunContext | None] = ContextVar("perdure_run", default=None)
# The step call being executed and its attempt; a StepInfo is made from it only when asked for (a body
# rarely asks, and every step sets this).
_step: ContextVar[tuple[StepCall, int] | None] = ContextVar("perdure_step", default=None)


@dataclass(frozen=True, slots=True)
class StepInfo:
    """What a step or tool body can know about itself (``perdure.current_step()``)."""

    run_id: str
    position: int
    name: str
    idempotency_key: str
    attempt: int


def current_run(what: str, name: str | None = None) -> RunContext:
    """The run executing in this task. ``what`` (and ``name``) describe the caller in the error raised
    outside a run; the message is only built when there is an error (this is on every step's path)."""
    run = _run.get()
    if run is not None and _step.get() is None:
        return run
    if name is not None:
        what = f"{what} {name!r}"
    if _step.get() is not None:
        raise NotInWorkflowError(
            f"{what} was called inside a step; steps cannot call durable operations. Call it from the "
            "workflow, or call the plain function (`.fn`) inside the step."
        )
    raise NotInWorkflowError(
        f"{what} can only be awaited inside a running @perdure.workflow; start the workflow with "
        "client.start(...) and let a worker run it"
    )


async def approval(name: str, payload: Any = None, *, timeout: float | _dt.timedelta | None = None) -> Decision:
    """Wait, durably, for a human decision on ``payload``.

    The run shows as WAITING with the pending approval's id (``"<name>-<position>"``) and payload until
    ``client.approve``/``client.reject`` decides it. A decision made while no worker runs is kept. With a
    ``timeout``, :class:`ApprovalTimeoutError` is raised in the workflow when nobody decided in time.
    """
    seconds = timeout.total_seconds() if isinstance(timeout, _dt.timedelta) else timeout
    return await current_run(f"perdure.approval({name!r})").approval(name, payload, seconds)


async def sleep(seconds: float | _dt.timedelta) -> None:
    """Sleep durably: the wake-up time is recorded, and a worker restarted later sleeps only what is left."""
    value = seconds.total_seconds() if isinstance(seconds, _dt.timedelta) else float(seconds)
    await current_run("perdure.sleep()").sleep(value)


async def now() -> _dt.datetime:
    """The current UTC time, recorded on first execution and returned unchanged on replay."""
    return await current_run("perdure.now()").now()


def uuid4() -> _uuid.UUID:
    """A random UUID that is the same on every replay of this run (seeded from the run id)."""
    return current_run("perdure.uuid4()").uuid4()


def random() -> float:
    """A random float in [0, 1) that is the same on every replay of this run (seeded from the run id)."""
    return current_run("perdure.random()").random()


def run_id() -> str:
    """The id of the run executing this workflow (or step)."""
    executing = _step.get()
    if executing is not None:
        return executing[0].run_id
    return current_run("perdure.run_id()").run_id


def current_step() -> StepInfo:
    """Information on the step or tool being executed (position, attempt, idempotency key)."""
    executing = _step.get()
    if executing is None:
        raise NotInStepError("perdure.current_step() can only be called inside a @perdure.step or @perdure.tool")
    call, attempt = executing
    return StepInfo(call.run_id, call.position, call.name, call.idempotency_key, attempt)


def idempotency_key() -> str:
    """The idempotency key of the tool call being executed.

    Stable across every retry and every recovery of this call, different for every other call. Hand it to
    the external system (payment API, ticket tracker, ledger) so a re-executed call has one effect.
    """
    executing = _step.get()
    if executing is None:
        raise NotInStepError("perdure.idempotency_key() can only be called inside a @perdure.tool or @perdure.step")
    return executing[0].idempotency_key

"""perdure's :class:`Journal` on a Restate workflow context: steps are ``ctx.run``, sleeps are ``ctx.sleep``,
approvals are durable promises raced with a durable timer.

Every command is named after its position (see :mod:`.entries`), so Restate's own replay check refuses a
workflow that asks another operation at a recorded position. Restate reports that as a journal mismatch
(error 570) raised by the SDK call; this journal turns it into perdure's :class:`NonDeterminismError`,
naming what the journal recorded there -- the same error, with the same message, as every other engine.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any, TypeVar

from restate import RunOptions, WorkflowContext

# The SDK's core error type, raised by every ctx call on a journal mismatch. Not public: an SDK that moves
# it fails this import (and tests/test_restate_units.py), rather than every error passing for one.
from restate._internal import VMException
from restate.serde import BytesSerde

from ...core.context import current_run
from ...core.errors import NonDeterminismError, NotInWorkflowError
from ...core.registry import get_step
from ...core.runtime import Journal, decision_envelope, execute_attempt, sleep_envelope, timeout_envelope
from ...core.types import ApprovalRequest, Decision, StepCall, StepKind
from .entries import PENDING_KEY, RETRY_KEY, command_name
from .progress import Progress

T = TypeVar("T")
PENDING_STATE_PREFIX = "perdure.pending."  # + position: the approvals a run waits for, readable via SQL
_BYTES = BytesSerde()
_RUN_BYTES: RunOptions[bytes] = RunOptions(serde=_BYTES)
_RETRY_PREFIX = b'{"' + RETRY_KEY.encode() + b'":'


def is_journal_mismatch(exc: BaseException) -> bool:
    """Whether an SDK error is Restate's journal mismatch (code 570)."""
    return isinstance(exc, VMException) and str(exc).startswith("(570)")


class RestateJournal(Journal):
    """The journal of one run, inside the Restate invocation of the perdure workflow keyed by its run id.

    ``recorded_at(position)`` reads, through the admin API, what the journal holds at a position (used
    only to word a :class:`NonDeterminismError`); ``decision_sent(approval_id)`` reads whether Restate
    accepted a decision for an approval (used when its timer fired first: see :meth:`approval`).
    """

    def __init__(
        self, ctx: WorkflowContext, recorded_at: Callable[[int], Awaitable[str]],
        decision_sent: Callable[[str], Awaitable[bool]], step_timeout: float | None = None,
    ) -> None:
        self.ctx = ctx
        self.step_timeout = step_timeout  # bounds each attempt (settings.py: ``step_timeout``)
        self._recorded_at = recorded_at
        self._decision_sent = decision_sent
        self.diverged: NonDeterminismError | None = None
        self.progress = Progress(ctx)  # every wait on a Restate future goes through it (see progress.py)

    async def _settled(self, future: Any) -> Any:
        """The value of a Restate future of this run, waited for through :attr:`progress`."""
        await self.progress.wait(future)
        return await future

    async def _call(self, position: int, kind: StepKind, name: str, make: Callable[[], T]) -> T:
        """Issue one SDK command; a journal mismatch becomes :class:`NonDeterminismError`."""
        if self.diverged is not None:
            raise self.diverged  # the SDK refuses every command after a mismatch
        try:
            return make()
        except Exception as exc:
            if not is_journal_mismatch(exc):
                raise
            raise await self._nondeterminism(position, kind, name) from None

    async def _nondeterminism(self, position: int, kind: StepKind, name: str) -> NonDeterminismError:
        """Restate refused the command: word the error after what its journal holds at ``position``."""
        recorded = await self._recorded_at(position)
        self.diverged = NonDeterminismError(position, recorded, f"{kind.value} {name!r}")
        return self.diverged

    async def _run(
        self, position: int, kind: StepKind, name: str, tag: str | None, action: Callable[[], Coroutine[Any, Any, bytes]]
    ) -> bytes:
        # The hot path of every step: no helper coroutine between the workflow and ctx.run.
        if self.diverged is not None:
            raise self.diverged
        try:
            future = self.ctx.run_typed(command_name(position, kind, name, tag), action, _RUN_BYTES)
        except Exception as exc:
            if not is_journal_mismatch(exc):
                raise
            raise await self._nondeterminism(position, kind, name) from None
        value: bytes = await self._settled(future)
        return value

    async def _timer(self, position: int, kind: StepKind, name: str, tag: str | None, seconds: float) -> Any:
        cmd = command_name(position, kind, name, tag)
        return await self._call(
            position, kind, name, lambda: self.ctx.sleep(timedelta(seconds=max(0.0, seconds)), name=cmd)
        )

    # --- the three primitives ----------------------------------------------------------------------
    async def step(self, call: StepCall) -> str:
        """One ``ctx.run`` per attempt. A failed attempt that may be retried is recorded as such and
        followed by a durable backoff timer, so attempt counts and delays survive a kill."""
        attempt = 1
        while True:
            raw = await self._run(
                call.position, call.kind, call.name, None if attempt == 1 else f"a{attempt}",
                _attempt_action(call, attempt, self.step_timeout),
            )
            if not raw.startswith(_RETRY_PREFIX):
                return raw.decode()
            delay = get_step(call.name).retry.delay(attempt)
            await self._settled(await self._timer(call.position, call.kind, call.name, f"b{attempt}", delay))
            attempt += 1

    async def sleep(self, position: int, seconds: float) -> str:
        """A Restate durable timer: its wake-up time is fixed by Restate when first reached."""
        name = "perdure.sleep"
        await self._settled(await self._timer(position, StepKind.SLEEP, name, None, seconds))
        envelope = sleep_envelope(seconds).encode()
        return (await self._run(position, StepKind.SLEEP, name, "done", _constant(envelope))).decode()

    async def approval(self, request: ApprovalRequest) -> str:
        """A durable promise named by the approval id, raced with a durable timer for the deadline.

        The deadline is recorded (``ctx.run``) when the approval is first reached; the pending approval is
        kept in the workflow's state so the client sees it through SQL even while no worker runs.
        """
        p, name, kind = request.position, request.name, StepKind.APPROVAL

        async def mark() -> bytes:
            deadline = None if request.timeout is None else time.time() + request.timeout
            return json.dumps({PENDING_KEY: request.pending(deadline).model_dump(mode="json")}).encode()

        marker = await self._run(p, kind, name, None, mark)
        deadline = json.loads(marker)[PENDING_KEY]["deadline"]
        state_key = f"{PENDING_STATE_PREFIX}{p}"
        await self._call(p, kind, name, lambda: self.ctx.set(state_key, marker, serde=_BYTES))
        promise = await self._call(
            p, kind, name, lambda: self.ctx.promise(request.approval_id, serde=_BYTES).value()
        )
        decision: bytes | None
        if deadline is None:
            decision = await self._settled(promise)
        else:
            timer = await self._timer(p, kind, name, "timeout", deadline - time.time())
            await self.progress.wait(promise, timer)
            if promise.is_completed() or await self._decision_sent(request.approval_id):  # type: ignore[attr-defined]
                # Either the decision is in, or the timer fired first -- maybe while no worker ran -- and a
                # decision was accepted since, before anyone recorded the timeout: every engine gives the
                # run that decision (the client was told it was taken), so wait for the decide handler to
                # resolve the promise. Not a journaled read, but it only chooses the "done" record below,
                # which a replay returns as recorded, whatever the read says then.
                decision = await self._settled(promise)
            else:
                decision = None
        if decision is None:
            envelope = timeout_envelope(request)
        else:
            envelope = decision_envelope(request, Decision.model_validate_json(decision))
        await self._call(p, kind, name, lambda: self.ctx.clear(state_key))
        return (await self._run(p, kind, name, "done", _constant(envelope.encode()))).decode()


def restate_context() -> WorkflowContext:
    """The Restate context of the run executing this workflow (an escape hatch to Restate's own API).

    Commands issued through it are journaled by Restate but are not perdure operations: they take no
    position, and ``client.steps()`` does not show them.
    """
    journal = current_run("perdure.adapters.restate.restate_context()").journal
    if not isinstance(journal, RestateJournal):
        raise NotInWorkflowError("restate_context() needs a workflow running on a restate:// worker")
    return journal.ctx


def _attempt_action(call: StepCall, attempt: int, timeout: float | None) -> Callable[[], Coroutine[Any, Any, bytes]]:
    async def action() -> bytes:
        outcome = await execute_attempt(call, attempt, timeout)
        text = outcome.envelope.encode()
        return _RETRY_PREFIX + text + b"}" if outcome.retry else text

    return action


def _constant(value: bytes) -> Callable[[], Coroutine[Any, Any, bytes]]:
    async def action() -> bytes:
        return value

    return action

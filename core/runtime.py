"""Workflow execution, shared by every engine.

The split is the one of anyio's ``_core``/backends and httpx's transports:

* :class:`Journal` is the *only* thing an engine implements for execution: three durable primitives
  (record a step, wait for an approval, sleep), each keyed by the operation's position in the run.
* :class:`RunContext` is everything else and is the same code on every engine: positions, the codec,
  idempotency keys, nondeterminism checks, error mapping, recorded time and seeded randomness.
* :func:`execute_step` / :func:`execute_attempt` run a step body (with perdure's retry loop, or one attempt
  at a time for engines that retry natively); engines call them where their step primitive runs code.
  :func:`execute_step_sync` is the same loop for a sync body, in the thread an engine gives its sync
  steps (DBOS runs a sync step's check, body and record in one executor thread).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import hashlib
import math
import random as _random
import re
import time
import uuid as _uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

from .codec import NOT_DECODED, digest, encode
from .context import _run, _step
from .errors import (
    ApprovalMismatchError,
    ApprovalTimeoutError,
    InvalidArgumentError,
    NonDeterminismError,
    PayloadTooLargeError,
    SerializationError,
    StepFailedError,
    StepTimeoutError,
    error_class,
)
from .registry import Step, get_step, get_workflow, step
from .retry import NO_RETRY
from .types import ApprovalRequest, Decision, Envelope, ErrorInfo, StepCall, StepKind

_APPROVAL_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")


class Journal(ABC):
    """One run's durable record as an engine keeps it: the engine's half of the execution contract.

    Every method is called with the operation's *position* (0, 1, 2, ... in the order the workflow asks).
    If the engine already recorded an outcome at that position, it returns it without doing anything;
    otherwise it performs the operation and records its outcome exactly once. Outcomes are
    :class:`Envelope` JSON text; :class:`RunContext` checks that the recorded name and kind match, so an
    engine only has to raise :class:`NonDeterminismError` itself when its *own* history cannot hold the
    operation at that position (e.g. a timer recorded where an activity is now asked for).
    """

    @abstractmethod
    async def step(self, call: StepCall) -> str:
        """Run the step once (``execute_step(call)`` or the engine's own retries around
        ``execute_attempt``) and record the envelope; on replay return the recorded envelope."""

    @abstractmethod
    async def approval(self, request: ApprovalRequest) -> str:
        """Show ``request`` as the run's pending approval and wait, durably, for a decision or the timeout.

        Returns an envelope: ``ok`` with the :class:`Decision` as output, or not ``ok`` with an
        ``ApprovalTimeoutError``. The deadline is fixed when the approval is first reached and survives
        restarts. A decision that arrived while no worker ran must be found here.
        """

    @abstractmethod
    async def sleep(self, position: int, seconds: float) -> str:
        """Sleep until ``seconds`` after this position was first reached (a restart sleeps what is left)."""


def sleep_envelope(seconds: float) -> str:
    """The envelope every engine records (or reports) for a finished durable sleep."""
    return Envelope(name="perdure.sleep", kind=StepKind.SLEEP, ok=True, output={"seconds": seconds}).to_json()


def decision_envelope(request: ApprovalRequest, decision: Decision) -> str:
    return Envelope(
        name=request.name, kind=StepKind.APPROVAL, ok=True, output=decision.model_dump(mode="json")
    ).to_json()


def timeout_envelope(request: ApprovalRequest) -> str:
    return Envelope(
        name=request.name,
        kind=StepKind.APPROVAL,
        ok=False,
        error=ErrorInfo(
            type="ApprovalTimeoutError",
            message=f"approval {request.approval_id!r} was not decided within {request.timeout} s",
        ),
    ).to_json()


class Attempt(NamedTuple):
    """The outcome of one attempt of a step body: the envelope JSON to record, and for a failure its
    error and whether perdure's retry policy allows another attempt."""

    envelope: str
    error: ErrorInfo | None
    retry: bool


async def execute_attempt(call: StepCall, attempt: int, timeout: float | None = None) -> Attempt:
    """Run one attempt of a step body.

    ``timeout`` (seconds) bounds the attempt, for engines that bound every attempt themselves (Temporal's
    start-to-close, Restate's abort timeout): past it the body is cancelled -- a sync body's thread is
    left to finish on its own -- and the attempt fails with :class:`StepTimeoutError` under the step's
    retry policy, rather than being cut off by the engine and run again from the start, indefinitely.
    """
    s = get_step(call.name)
    token = _step.set((call, attempt))
    try:
        args, kwargs = _arguments(s, call)
        body = s.fn(*args, **kwargs) if s.is_async else s.invoke(args, kwargs)
        value = await (body if timeout is None else _bounded(s, body, timeout))
        output = s.codec.encode_result(value)
    except Exception as exc:  # CancelledError and other BaseExceptions propagate: they are not failures
        return _failed(s, attempt, exc)
    finally:
        _step.reset(token)
    return _succeeded(s, call, attempt, value, output)


async def _bounded(s: Step[Any, Any], body: Awaitable[Any], timeout: float) -> Any:
    """Step ``s``'s ``body`` under ``timeout`` (measured: ~5 us per attempt); a TimeoutError the body raises
    itself stays its own."""
    limit = asyncio.timeout(timeout)
    try:
        async with limit:
            return await body
    except TimeoutError:
        if not limit.expired():
            raise
        raise StepTimeoutError(
            f"{s.kind_value} {s.name!r}: the attempt ran past the step timeout of {timeout:g} s and was "
            "cancelled (a backend setting: step_timeout= in the backend URL)"
        ) from None


def execute_attempt_sync(call: StepCall, attempt: int) -> Attempt:
    """:func:`execute_attempt` for a step with a sync body, run in the calling thread: for engines that
    run a sync step's record check, body and record together in one worker thread (DBOS)."""
    s = get_step(call.name)
    if s.is_async:
        raise TypeError(f"execute_attempt_sync runs sync bodies; {s.kind_value} {s.name!r} is async")
    token = _step.set((call, attempt))
    try:
        args, kwargs = _arguments(s, call)
        value = s.fn(*args, **kwargs)
        output = s.codec.encode_result(value)
    except Exception as exc:
        return _failed(s, attempt, exc)
    finally:
        _step.reset(token)
    return _succeeded(s, call, attempt, value, output)


def _arguments(s: Step[Any, Any], call: StepCall) -> tuple[Sequence[Any], dict[str, Any]]:
    if call.local is None:
        return s.codec.decode_args(call.args_json)
    return call.local  # in-process arguments (see RunContext.call_step), handed over as they are


def _failed(s: Step[Any, Any], attempt: int, exc: Exception) -> Attempt:
    error = ErrorInfo.of(exc)
    env = Envelope(name=s.name, kind=s.kind, ok=False, error=error, attempts=attempt)
    return Attempt(env.to_json(), error, s.retry.is_retryable(exc) and attempt < s.retry.max_attempts)


def _succeeded(s: Step[Any, Any], call: StepCall, attempt: int, value: Any, output: str) -> Attempt:
    # An output that does not fit the step's return annotation fails the attempt (a SerializationError:
    # permanent), so the journal never records a success the workflow cannot read back.
    try:
        decoded = s.codec.returned(value, output, decoded=call.in_process)
    except SerializationError as exc:
        return _failed(s, attempt, exc)
    # The envelope of a success, assembled around the already-encoded output: this runs on every step, and
    # parsing the output only to serialize it again cost more than the rest of the attempt. It is the
    # same JSON as Envelope(..., ok=True, output=...).to_json().
    envelope = f'{s.ok_envelope_prefix}{output},"error":null,"attempts":{attempt}}}'
    if call.in_process:
        # The workflow that made this call runs in this process and reads this output as soon as the engine
        # has recorded it (see call_step): hand it the value decoded here, from the same text. Here is
        # cheaper: on engines that hand the step to other threads (DBOS) the workflow resumes with cold
        # caches, while the output's types were just used to build and encode it.
        call.ran = (envelope, decoded)
    return Attempt(envelope, None, False)


async def execute_step(call: StepCall, *, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> str:
    """Run a step body with perdure's retry loop; returns the envelope JSON to record."""
    attempt = 1
    while True:
        outcome = await execute_attempt(call, attempt)
        if not outcome.retry:
            return outcome.envelope
        await sleep(get_step(call.name).retry.delay(attempt))
        attempt += 1


def execute_step_sync(call: StepCall) -> str:
    """:func:`execute_step` for a sync body, in the calling thread (the retry delays sleep that thread)."""
    attempt = 1
    while True:
        outcome = execute_attempt_sync(call, attempt)
        if not outcome.retry:
            return outcome.envelope
        time.sleep(get_step(call.name).retry.delay(attempt))
        attempt += 1


@step(name="perdure.now", retry=NO_RETRY)
async def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


class RunContext:
    """The engine-neutral side of one run's execution (see the module docstring)."""

    def __init__(self, run_id: str, journal: Journal) -> None:
        self.run_id = run_id
        self.journal = journal
        self._position = 0
        self._rng: _random.Random | None = None  # made on first use: most runs never ask
        self._keys: dict[str, int] | None = None  # unique_key's counts, made on first use

    @property
    def rng(self) -> _random.Random:
        """The run's random generator, seeded from the run id, so replays draw the same values."""
        if self._rng is None:
            self._rng = _random.Random(int.from_bytes(hashlib.sha256(self.run_id.encode()).digest()[:8], "big"))
        return self._rng

    def unique_key(self, key: str) -> str:
        """``key`` the first time in this run, then ``key#2``, ``key#3``...: for integrations keying tool calls
        by a framework's call id, which a provider (or a second agent or graph in the same run) may reuse.
        Counted per execution of the workflow, in call order, so a replay gives every call the same key."""
        if self._keys is None:
            self._keys = {}
        n = self._keys.get(key, 0) + 1
        self._keys[key] = n
        return key if n == 1 else f"{key}#{n}"

    def _next(self) -> int:
        pos = self._position
        self._position += 1
        return pos

    @staticmethod
    def _check(position: int, env: Envelope, name: str, kind: StepKind) -> None:
        if env.name != name or env.kind != kind:
            raise NonDeterminismError(position, f"{env.kind.value} {env.name!r}", f"{kind.value} {name!r}")

    async def call_step(
        self,
        s: Step[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        key: str | None = None,
        *,
        portable: Callable[[], tuple[tuple[Any, ...], dict[str, Any]]] | None = None,
    ) -> Any:
        """Record one call of step/tool ``s``. ``key`` replaces the position in the idempotency key
        (integrations pass the framework's own call id, e.g. an LLM tool_call_id).

        With ``portable``, ``args``/``kwargs`` are handed to the body as they are -- no JSON round trip --
        when the engine runs it in this process (memory, DBOS, Restate), and ``portable()`` gives the
        arguments to encode only if the engine sends the call to another process (a Temporal
        activity); the body must accept both forms. For integrations whose arguments are large and only
        needed to execute the call (an LLM request): perdure reads back a step's outcome, never its arguments.

        Arguments the round trip would give back unchanged (small JSON scalars, ``CallCodec.passes_unchanged``)
        take the same path; so does an output that decodes to itself (``StepCall.ran``). The round trips
        are skipped only where their result is known: what a body receives and a step returns is the same
        value, of the same type, as decoding would give -- on the first execution and on every replay.
        """
        if portable is None and s.codec.passes_unchanged(args, kwargs):
            portable = lambda: (args, kwargs)  # noqa: E731  # they are their own portable form
        if portable is not None:
            args_json: str | Callable[[], str] = lambda: s.codec.encode_args(*portable())  # noqa: E731
            local = (args, kwargs)
        else:
            args_json = s.codec.encode_args(args, kwargs)
            local = None
        pos = self._position
        self._position = pos + 1
        # "<run id>:<position>": the same on every retry and recovery of this call, unique in the run.
        idem = f"{self.run_id}:{key}" if key is not None else f"{self.run_id}:{pos}"
        call = StepCall(self.run_id, pos, s.name, s.kind, args_json, idem, local, in_process=True)
        text = await self.journal.step(call)
        ran = call.ran
        if ran is not None and text == ran[0]:  # the envelope this process just made: its output is known
            return ran[1]
        output = s.codec.decode_ok_envelope(text, s.name, s.kind_value)
        if output is not NOT_DECODED:  # the common case, without building an Envelope
            return output
        env = Envelope.from_json(text)
        self._check(pos, env, s.name, s.kind)
        if env.ok:  # this step's success, whose output does not decode: raises the SerializationError
            return s.codec.decode_result_value(env.output)
        assert env.error is not None
        cls = error_class(env.error.type)
        if cls is not None and issubclass(cls, SerializationError | PayloadTooLargeError):
            raise cls(env.error.message)
        raise StepFailedError(s.name, env.error.type, env.error.message, env.attempts)

    async def approval(self, name: str, payload: Any, timeout: float | None) -> Decision:
        if not isinstance(name, str) or not _APPROVAL_NAME.match(name):
            raise InvalidArgumentError(
                f"approval name must be 1-100 characters of letters, digits, '_', '-' or '.', got {name!r}"
            )
        if timeout is not None and not 0 < timeout < math.inf:
            raise InvalidArgumentError(
                f"approval timeout must be a finite number of seconds > 0, or None to wait forever; got {timeout!r}"
            )
        payload_json = encode(payload, where=f"payload of approval {name!r}")
        pos = self._next()
        request = ApprovalRequest(
            run_id=self.run_id,
            position=pos,
            approval_id=f"{name}-{pos}",
            name=name,
            payload_json=payload_json,
            digest=digest(payload_json),
            timeout=timeout,
        )
        env = Envelope.from_json(await self.journal.approval(request))
        self._check(pos, env, name, StepKind.APPROVAL)
        if not env.ok:
            raise ApprovalTimeoutError(env.error.message if env.error else "approval timed out")
        decision = Decision.model_validate(env.output)
        if decision.digest is not None and decision.digest != request.digest:
            raise ApprovalMismatchError(
                f"the decision on {request.approval_id!r} was made for another payload than the one this "
                "run asks approval for"
            )
        return decision

    async def sleep(self, seconds: float) -> None:
        if not 0 <= seconds < math.inf:
            raise InvalidArgumentError(f"perdure.sleep needs a finite number of seconds >= 0, got {seconds!r}")
        pos = self._next()
        env = Envelope.from_json(await self.journal.sleep(pos, seconds))
        self._check(pos, env, "perdure.sleep", StepKind.SLEEP)

    async def now(self) -> _dt.datetime:
        result: _dt.datetime = await self.call_step(_now, (), {})
        return result

    def uuid4(self) -> _uuid.UUID:
        return _uuid.UUID(int=self.rng.getrandbits(128), version=4)

    def random(self) -> float:
        return self.rng.random()


async def run_workflow(journal: Journal, run_id: str, workflow: str, args_json: str) -> str:
    """Execute (or replay) a run's workflow on ``journal``; returns the encoded output.

    Exceptions propagate: the engine records the run as FAILED with ``ErrorInfo.of(exc)``.
    """
    wf = get_workflow(workflow)
    args, kwargs = wf.codec.decode_args(args_json)
    token = _run.set(RunContext(run_id, journal))
    try:
        result = await wf.fn(*args, **kwargs)
    finally:
        _run.reset(token)
    output = wf.codec.encode_result(result)
    wf.codec.returned(result, output, decoded=False)  # a result that does not fit its annotation fails the run
    return output

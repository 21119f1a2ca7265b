"""The data perdure shows users and moves between client, worker and engine -- the same on every engine."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pydantic_core
from pydantic import BaseModel, ConfigDict

from .errors import SerializationError


class RunStatus(str, enum.Enum):
    """Where a run is. Terminal: SUCCEEDED, FAILED, CANCELLED."""

    PENDING = "PENDING"  # accepted, no worker has picked it up yet
    RUNNING = "RUNNING"
    WAITING = "WAITING"  # blocked on an approval
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


class StepKind(str, enum.Enum):
    STEP = "step"
    TOOL = "tool"
    APPROVAL = "approval"
    SLEEP = "sleep"


class StepStatus(str, enum.Enum):
    RUNNING = "RUNNING"  # in flight; engines that only journal completions do not show it
    WAITING = "WAITING"  # an approval nobody has decided yet, or a sleep not yet over
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, use_enum_values=False)


class ErrorInfo(_Model):
    """An error as it crosses the engine boundary: the original class name and message."""

    type: str
    message: str

    @classmethod
    def of(cls, exc: BaseException) -> ErrorInfo:
        return cls(type=type(exc).__name__, message=str(exc))


class StepRecord(_Model):
    """One entry of ``client.steps(run_id)``: the same shape on every engine."""

    position: int
    name: str
    kind: StepKind
    status: StepStatus
    attempts: int = 1
    output: Any = None
    error: ErrorInfo | None = None


class PendingApproval(_Model):
    """The approval a WAITING run waits for. Decide it with ``client.approve/reject(run_id, approval_id)``."""

    approval_id: str
    name: str
    payload: Any = None
    digest: str
    deadline: float | None = None  # epoch seconds; None waits forever


class RunInfo(_Model):
    """What ``client.status(run_id)`` returns."""

    run_id: str
    workflow: str
    status: RunStatus
    output: Any = None
    error: ErrorInfo | None = None
    pending_approval: PendingApproval | None = None
    created_at: float | None = None


class Decision(_Model):
    """A human's answer to an approval. ``digest`` binds it to the payload it answers (set by the client)."""

    approved: bool
    by: str | None = None
    comment: str | None = None
    data: Any = None
    digest: str | None = None


class StepCall:
    """Everything needed to execute one step anywhere (in the workflow's process or a remote activity).

    ``args_json`` is the arguments as JSON. A call made with ``local`` arguments (an integration's large,
    in-process-only values, see :meth:`perdure.core.runtime.RunContext.call_step`) carries a function in
    its place that encodes portable arguments only when ``args_json`` is first read: an engine that sends
    the call to another process (a Temporal activity) reads it, one that runs the body in the process
    that made the call never does, and the body gets ``local`` as it is.

    ``in_process`` says the call was made by :meth:`~perdure.core.runtime.RunContext.call_step` in this
    process (a call rebuilt elsewhere, e.g. in a Temporal activity, has it False). When such a call's body
    succeeds here, :func:`~perdure.core.runtime.execute_attempt` sets ``ran`` to ``(envelope, output)``:
    the output decoded from the envelope it just made (or the value itself, when it decodes to itself).
    The caller returns ``output`` instead of decoding the journal's envelope when that envelope is the
    same text -- the same value, of the same types, as its own decode would give.
    """

    # A plain class, not a frozen dataclass: ``args_json`` is a property that caches what it encodes.
    __slots__ = ("run_id", "position", "name", "kind", "idempotency_key", "local", "_args_json", "ran",
                 "in_process")

    def __init__(
        self,
        run_id: str,
        position: int,
        name: str,
        kind: StepKind,
        args_json: str | Callable[[], str],
        idempotency_key: str,
        local: tuple[tuple[Any, ...], dict[str, Any]] | None = None,
        *,
        in_process: bool = False,
    ) -> None:
        self.run_id = run_id
        self.position = position
        self.name = name
        self.kind = kind
        self.idempotency_key = idempotency_key
        self.local = local
        self._args_json = args_json
        self.ran: tuple[str, Any] | None = None
        self.in_process = in_process

    @property
    def args_json(self) -> str:
        text = self._args_json
        if not isinstance(text, str):
            text = self._args_json = text()
        return text

    def _key(self) -> tuple[Any, ...]:
        return (self.run_id, self.position, self.name, self.kind, self.args_json, self.idempotency_key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StepCall) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash((self.run_id, self.position, self.name, self.idempotency_key))

    def __repr__(self) -> str:
        return (f"StepCall(run_id={self.run_id!r}, position={self.position!r}, name={self.name!r}, "
                f"kind={self.kind!r}, args_json={self._args_json!r}, idempotency_key={self.idempotency_key!r})")


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """An approval the workflow asks for. ``approval_id`` is ``"<name>-<position>"``: stable on replay."""

    run_id: str
    position: int
    approval_id: str
    name: str
    payload_json: str
    digest: str
    timeout: float | None

    def pending(self, deadline: float | None) -> PendingApproval:
        return PendingApproval(
            approval_id=self.approval_id,
            name=self.name,
            payload=pydantic_core.from_json(self.payload_json),
            digest=self.digest,
            deadline=deadline,
        )


@dataclass(frozen=True, slots=True)
class Envelope:
    """What the engine records for one position of a run: the operation's name and kind, and its outcome.

    Engines store the envelope as JSON text (their own step result). Because the name and kind travel
    with the result, a replay that asks for another operation at that position is detected on every
    engine the same way (:class:`NonDeterminismError`), whatever the engine itself checks.
    """

    name: str
    kind: StepKind
    ok: bool
    output: Any = None  # plain JSON data
    error: ErrorInfo | None = None
    attempts: int = 1

    def to_json(self) -> str:
        return pydantic_core.to_json(
            {
                "name": self.name,
                "kind": self.kind.value,
                "ok": self.ok,
                "output": self.output,
                "error": None if self.error is None else {"type": self.error.type, "message": self.error.message},
                "attempts": self.attempts,
            }
        ).decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> Envelope:
        try:
            raw = pydantic_core.from_json(text)
            error = raw.get("error")
            return cls(
                name=raw["name"],
                kind=StepKind(raw["kind"]),
                ok=bool(raw["ok"]),
                output=raw.get("output"),
                error=None if error is None else ErrorInfo(type=error["type"], message=error["message"]),
                attempts=int(raw.get("attempts", 1)),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SerializationError(f"corrupt journal entry {text!r:.200}: {exc}") from None

    def record(self, position: int, status: StepStatus | None = None) -> StepRecord:
        """The inspection record of this envelope at ``position``."""
        if status is None:
            status = StepStatus.COMPLETED if self.ok else StepStatus.FAILED
        return StepRecord(
            position=position,
            name=self.name,
            kind=self.kind,
            status=status,
            attempts=self.attempts,
            output=self.output,
            error=self.error,
        )

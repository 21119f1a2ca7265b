"""Continue-as-new: how one perdure run spans several Temporal runs, each with a short history.

Why. Temporal replays a run by feeding its whole history back through the workflow code, one SDK
activation per recorded step (~0.7-1.4 ms each here), whenever a worker has not cached the run: after a
crash, a deploy, a cache eviction. A history also has hard limits (51,200 events, 50 MB). A perdure run
with thousands of steps would therefore resume slower and slower, and past a few thousand steps its
replay would outlast the workflow task timeout and never finish.

How (the Temporal idiom, with perdure's journal as the state). After ``continue_as_new_after``
operations in one Temporal run -- or sooner when Temporal itself suggests it
(``workflow.info().is_continue_as_new_suggested()``) -- the workflow stops at the next new operation,
waits until every operation before it has its outcome recorded, and continues as new with the same
workflow id (= perdure run id). The new Temporal run's input carries:

* the run's arguments, unchanged (payload 0);
* :class:`RunState` (payload 1): the continue-as-new policy, the run's original start time, its
  generation, and decisions received for approvals not reached yet;
* the carried journal (payload 2): a JSON array whose item ``p`` is the envelope perdure recorded at
  position ``p``, for every position before the cut -- or, for an operation that ended without an
  outcome (cancelled by the workflow, or raising before it was issued), a marker saying so
  (:func:`unsettled_entry`): such an operation does not hold up the cut, since nothing will record it.

The new run runs the perdure workflow function from the top again. Positions in the carried journal
return their recorded envelope at once -- no Temporal command, no activity event to replay -- and
``RunContext`` checks names and kinds against them as on any replay, so a changed workflow still fails
with ``NonDeterminismError``. The first position past the carried journal is new work. A resumed run
therefore replays at most ``continue_as_new_after`` operations' events plus a scan of its carried
journal (microseconds per position), whatever its length.

Every input is replay-safe: the policy travels in the run's own input (the client that starts a run fixes
it; workers never apply their own configuration to a run, so a worker with other settings cannot make a
replay diverge), the operation count is the workflow's own, and Temporal's suggestion is part of the
history.

The size limit. Temporal refuses payloads over its blob size limit (2 MiB by default, on the dev server
too: the SDK worker checks it before it uploads -- ``TMPRL1103`` -- and fails the workflow *task*, which
would then be retried forever). The carried input must stay under ``max_carry_bytes`` (default
2,000,000 bytes). Before continuing, the workflow measures the exact input; if it does not fit, the run
does not continue as new -- now or ever, since a journal only grows -- and goes on in its current
Temporal run, as a run did before continue-as-new existed: its replays grow with it, and Temporal's
history limits apply; a run Temporal terminates for its history size reads FAILED with
``HistoryLimitError`` (see ``history.outcome``). A step's output is at most 1 MiB
(``PERDURE_MAX_PAYLOAD_BYTES``), so one large output can be enough to stop continuing. (Over 512 KiB
the SDK also logs a ``TMPRL1103`` warning for each continued input: Temporal's warning threshold.)
Measured on the dev server: a run of 300 steps of 10 KB outputs continued as new 9 times, up to a
1.8 MB carried input, then stayed in its 10th Temporal run and completed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pydantic_core
from temporalio.api.common.v1 import Payload
from temporalio.common import RawValue

from ...core.types import Envelope, StepKind, StepRecord, StepStatus
from .payloads import raw

DEFAULT_MAX_CARRY_BYTES = 2_000_000  # Temporal's default blob size limit is 2 MiB (2,097,152 bytes)
JOURNAL_PAYLOAD = 2  # index of the carried journal in a continued run's input
UNSETTLED = "unsettled"  # key of a carried entry with no outcome (see unsettled_entry)


@dataclass
class RunState:
    """What a Temporal run of a perdure run knows beyond its arguments (payload 1 of its input)."""

    continue_as_new_after: int  # operations per Temporal run; 0: only when Temporal suggests it
    max_carry_bytes: int = DEFAULT_MAX_CARRY_BYTES
    generation: int = 0  # how many times this perdure run continued as new
    created_at: float | None = None  # start of the first Temporal run (None in the first run itself)
    decisions: dict[str, Any] = field(default_factory=dict)  # approval id -> Decision JSON, not yet consumed

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "continue_as_new_after": self.continue_as_new_after,
            "max_carry_bytes": self.max_carry_bytes,
        }
        if self.generation:
            data.update(generation=self.generation, created_at=self.created_at, decisions=self.decisions)
        return pydantic_core.to_json(data).decode()

    @classmethod
    def of(cls, payload: RawValue | Payload | None, default_after: int) -> RunState:
        """The state in ``payload``; runs started without one get ``default_after`` (a fixed constant)."""
        if payload is None:
            return cls(default_after)
        p = payload.payload if isinstance(payload, RawValue) else payload
        data = pydantic_core.from_json(p.data)
        return cls(
            continue_as_new_after=int(data["continue_as_new_after"]),
            max_carry_bytes=int(data.get("max_carry_bytes", DEFAULT_MAX_CARRY_BYTES)),
            generation=int(data.get("generation", 0)),
            created_at=data.get("created_at"),
            decisions=dict(data.get("decisions") or {}),
        )


class CarriedJournal:
    """The envelopes recorded before this Temporal run began (payload 2 of its input), by position."""

    def __init__(self, text: bytes = b"[]") -> None:
        self.text = text
        self.entries: list[Any] = pydantic_core.from_json(text) if text != b"[]" else []

    def __len__(self) -> int:
        return len(self.entries)

    def envelope(self, position: int) -> str:
        """The envelope JSON recorded at ``position`` (< ``len(self)``)."""
        return pydantic_core.to_json(self.entries[position]).decode()

    def unsettled(self, position: int) -> str | None:
        """How the operation at ``position`` ended without an outcome (``cancelled`` / ``raised``), or None
        for an outcome (see :func:`unsettled_entry`)."""
        entry = self.entries[position]
        return entry.get(UNSETTLED) if isinstance(entry, dict) else None

    def approval_ids(self) -> set[str]:
        """Ids of the approvals it holds: their decisions need not be carried again."""
        return {f"{e['name']}-{p}" for p, e in enumerate(self.entries) if e.get("kind") == "approval"}

    def extended(self, envelopes: list[str]) -> bytes:
        """This journal followed by ``envelopes`` (the next positions), as one JSON array; the carried
        part is copied as text, never parsed and re-encoded."""
        if not envelopes:
            return self.text
        added = ",".join(envelopes).encode()
        if not self.entries:
            return b"[" + added + b"]"
        return self.text[:-1] + b"," + added + b"]"


def unsettled_entry(name: str, kind: str, how: str) -> str:
    """The carried entry of a position whose operation ended *without* an outcome: its task was
    ``cancelled`` by the workflow (e.g. the loser of a race), or it ``raised`` into the workflow before it
    was issued (e.g. arguments that cannot be encoded). Such a position does not hold up continuing as new;
    in the next Temporal run a cancelled one waits until the workflow cancels it again, a raised one runs
    again (and raises again)."""
    return pydantic_core.to_json({"name": name, "kind": kind, UNSETTLED: how}).decode()


def continued_input(args: RawValue, state: RunState, journal: bytes) -> tuple[list[RawValue], int]:
    """The next Temporal run's input, and its size in bytes (what Temporal's blob limit counts, less the
    few bytes of payload metadata)."""
    state_text = state.to_json().encode()
    size = len(args.payload.data) + len(state_text) + len(journal)
    return [args, raw(state_text), raw(journal)], size


def carried_records(input_payloads: Any) -> list[StepRecord]:
    """``steps()`` records of the positions carried into a run, from its started event's input. A cancelled
    operation shows as it did in its own Temporal run, still in flight (attempts 0); one that raised before
    it was issued shows nothing, as there."""
    if len(input_payloads) <= JOURNAL_PAYLOAD:
        return []
    records = []
    for p, e in enumerate(pydantic_core.from_json(input_payloads[JOURNAL_PAYLOAD].data)):
        how = e.get(UNSETTLED)
        if how is None:
            records.append(Envelope.from_json(pydantic_core.to_json(e)).record(p))
        elif how == "cancelled":
            kind = StepKind(e["kind"])
            status = StepStatus.RUNNING if kind in (StepKind.STEP, StepKind.TOOL) else StepStatus.WAITING
            records.append(StepRecord(position=p, name=e["name"], kind=kind, status=status, attempts=0))
    return records


def perdure_input(input_payloads: Any) -> bool:
    """Whether a Temporal run's input is one perdure starts runs with: the arguments as a JSON object,
    then (from clients that know continue-as-new) a :class:`RunState`, then (in a continued run) the
    carried journal -- all ``json/plain``. Tells perdure runs from other workflows of the namespace."""
    if not 1 <= len(input_payloads) <= JOURNAL_PAYLOAD + 1:
        return False
    if any(p.metadata.get("encoding") != b"json/plain" for p in input_payloads):
        return False
    try:
        if not isinstance(pydantic_core.from_json(input_payloads[0].data), dict):
            return False
        if len(input_payloads) > 1:
            state = pydantic_core.from_json(input_payloads[1].data)
            if not isinstance(state, dict) or "continue_as_new_after" not in state:
                return False
    except ValueError:
        return False
    return len(input_payloads) <= JOURNAL_PAYLOAD or input_payloads[JOURNAL_PAYLOAD].data.startswith(b"[")


def first_start(state: RunState, this_run_started: float) -> float:
    """When the perdure run started: its first Temporal run's start."""
    return state.created_at if state.created_at is not None else this_run_started

"""A recovered run's recorded operations, read in one query, so its replay costs no query per step.

DBOS replays a workflow by checking every step ID with a transaction of its own (the workflow's status,
then the operation's row): ~1 ms per recorded step on SQLite and ~1.5-3 ms on Postgres, 10-30 s to
resume a run of 10,000 steps. The journal (journal.py) instead reads all of a run's recorded operations
at once when its first operation turns out to be recorded, and answers the recorded positions from that:

* the step ID is still DBOS's: each answered operation draws its ID with ``DBOS.reserve_step()``, so the
  IDs stay exactly those DBOS would have used, and the first new operation runs at the next ID through
  DBOS (``StepReservation.run_async``), with DBOS's own check of that ID;
* the name recorded at the ID is checked as DBOS checks it; a different one is a NonDeterminismError
  with the same words as DBOS's own mismatch gives;
* only rows written by perdure's serializer with an output (no error) are answered: the step envelopes
  verbatim (the very text DBOS stored), other outputs through the same ``deserialize`` DBOS would call.
  Anything else is left to DBOS at the reserved ID, exactly as without this read.

DBOS's per-step check also looks for a cancellation; answered positions skip it, so a run cancelled while
it is being recovered stops at its first new operation, where DBOS checks again, having run nothing.
"""

from __future__ import annotations

from typing import Any

from .internals import RecordedOp
from .serializer import SERIALIZER, RawJSON

# Operations whose output is a perdure envelope (JSON text the journal returns as is).
ENVELOPE_KINDS = frozenset(("step", "tool", "approval", "sleep"))
NOT_ANSWERED: Any = object()  # the operation at this ID is DBOS's to replay (or to run)


class RecordedRun:
    """The operations DBOS recorded for one run, by step ID."""

    __slots__ = ("ops", "last")

    def __init__(self, ops: list[RecordedOp]) -> None:
        self.ops = {op.function_id: op for op in ops}
        self.last = max(self.ops, default=0)  # no operation is recorded past this step ID

    def name_at(self, function_id: int) -> str | None:
        """The operation name recorded at ``function_id``, or None if nothing is recorded there."""
        op = self.ops.get(function_id)
        return None if op is None else op.function_name

    def answer(self, function_id: int) -> Any:
        """The value DBOS would return for the operation recorded at ``function_id`` (call ``name_at``
        first), or :data:`NOT_ANSWERED`."""
        op = self.ops.get(function_id)
        if op is None or op.error is not None or op.output is None or op.serialization != SERIALIZER.name():
            return NOT_ANSWERED
        if op.function_name.partition(":")[0] in ENVELOPE_KINDS:
            return RawJSON(op.output)
        return SERIALIZER.deserialize(op.output)

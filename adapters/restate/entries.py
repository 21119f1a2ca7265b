"""How a perdure run is laid out in a Restate journal, and how it is read back as :class:`StepRecord` s.

Every Restate command perdure writes is *named* ``"<head> <kind> <name>"``, where ``head`` is the
operation's position, optionally with a tag (``"3"``, ``"3.a2"``, ``"3.done"``). Restate compares command
names on replay, so a workflow that asks another operation at a recorded position is stopped by Restate
itself; perdure reads the recorded name back to raise the same :class:`NonDeterminismError` as every engine.

Layout per position ``p`` (only ``Run`` and ``Sleep`` commands matter for inspection):

* step / tool: ``Run "p kind name"`` (attempt 1); while an attempt asks for a retry, a backoff
  ``Sleep "p.bN ..."`` and ``Run "p.aN+1 ..."``. A retried attempt's value is ``{"retry": envelope}``.
* sleep: ``Sleep "p sleep perdure.sleep"``, then ``Run "p.done ..."`` recording ``sleep_envelope``.
* approval: ``Run "p approval name"`` recording ``{"pending": ...}`` (the deadline is fixed there), the
  pending approval in state, a durable promise raced with ``Sleep "p.timeout ..."``, then
  ``Run "p.done ..."`` recording the decision or timeout envelope.

The record of a position is its last ``Run`` when that holds an envelope; otherwise the position is in
flight (RUNNING for steps, WAITING for sleeps and approvals), exactly as the memory engine shows it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ...core.types import Envelope, StepKind, StepRecord, StepStatus

RETRY_KEY = "retry"
PENDING_KEY = "pending"
_NAME = re.compile(r"^(\d+)(?:\.(\w+))? (step|tool|approval|sleep) (.*)$", re.DOTALL)


def command_name(position: int, kind: StepKind, name: str, tag: str | None = None) -> str:
    """The Restate command name of one perdure operation (``tag`` marks a position's later commands)."""
    head = str(position) if tag is None else f"{position}.{tag}"
    return f"{head} {kind.value} {name}"


@dataclass
class JournalOp:
    """One named perdure command found in a Restate journal."""

    position: int
    tag: str | None
    kind: StepKind
    name: str
    command: str  # "Run" or "Sleep" (other commands carry no outcome)
    completion_id: int | None
    value: bytes | None = None  # the Run's recorded value, once completed
    completed: bool = False

    def describe(self) -> str:
        """How :class:`NonDeterminismError` names the operation (``step 'shop.charge'``)."""
        return f"{self.kind.value} {self.name!r}"


def _success(result: Any) -> bytes | None:
    """A completion's ``result`` as Restate's ``entry_json`` shows it -> the success value, if any."""
    if isinstance(result, dict) and isinstance(result.get("Success"), list):
        return bytes(result["Success"])
    return None


def parse_journal(rows: list[dict[str, Any]]) -> list[JournalOp]:
    """Rows of ``SELECT index, entry_type, name, entry_json FROM sys_journal`` -> the perdure commands."""
    ops: list[JournalOp] = []
    by_completion: dict[int, JournalOp] = {}
    for row in sorted(rows, key=lambda r: r["index"]):
        entry_type = row.get("entry_type") or ""
        raw = row.get("entry_json")
        try:
            entry = json.loads(raw) if isinstance(raw, str) else (raw or {})
        except ValueError:
            continue
        if entry_type in ("Command: Run", "Command: Sleep"):
            m = _NAME.match(row.get("name") or "")
            if m is None:
                continue
            body: dict[str, Any] = next(iter(entry.get("Command", {}).values()), {}) or {}
            op = JournalOp(
                position=int(m.group(1)),
                tag=m.group(2),
                kind=StepKind(m.group(3)),
                name=m.group(4),
                command=entry_type.removeprefix("Command: "),
                completion_id=body.get("completion_id"),
            )
            ops.append(op)
            if op.completion_id is not None:
                by_completion[op.completion_id] = op
        elif entry_type in ("Notification: Run", "Notification: Sleep"):
            completion = entry.get("Notification", {}).get("Completion", {})
            result: dict[str, Any] = next(iter(completion.values()), {}) or {}
            target = by_completion.get(result.get("completion_id", -1))
            if target is not None:
                target.completed, target.value = True, _success(result.get("result"))
    return ops


def records(ops: list[JournalOp], *, recorded_only: bool = False) -> list[StepRecord]:
    """The :class:`StepRecord` of every position, in order. ``recorded_only`` drops positions without a
    recorded outcome (what a cancelled run shows on every engine)."""
    last: dict[int, JournalOp] = {}
    for op in ops:
        last[op.position] = op
    out = []
    for position in sorted(last):
        op = last[position]
        record = _recorded(op)
        if record is None:
            if recorded_only:
                continue
            busy = op.kind in (StepKind.STEP, StepKind.TOOL)
            record = StepRecord(
                position=position,
                name=op.name,
                kind=op.kind,
                status=StepStatus.RUNNING if busy else StepStatus.WAITING,
                attempts=0,
            )
        out.append(record)
    return out


def _recorded(op: JournalOp) -> StepRecord | None:
    if op.command != "Run" or not op.completed or op.value is None:
        return None
    try:
        value = json.loads(op.value)
    except ValueError:
        return None
    if not isinstance(value, dict) or RETRY_KEY in value or PENDING_KEY in value:
        return None
    return Envelope.from_json(op.value).record(op.position)


def first_op_from(ops: list[JournalOp], position: int) -> JournalOp | None:
    """The first recorded command of ``position`` (or of the first later position that has one)."""
    candidates = [op for op in ops if op.position >= position]
    if not candidates:
        return None
    first = min(op.position for op in candidates)
    return next(op for op in candidates if op.position == first)

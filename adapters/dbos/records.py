"""Reading runs back from DBOS: workflow status -> :class:`RunInfo`, recorded operations -> :class:`StepRecord`.

Status mapping (DBOS -> perdure):

==========================================  ===========================================================
ENQUEUED / DELAYED, never dequeued          PENDING (no worker has picked it up yet)
ENQUEUED after a dequeue (recovery)         RUNNING (a dead worker's run, waiting for the next worker)
PENDING                                     RUNNING
PENDING or ENQUEUED with a pending event    WAITING (the approval is readable without a live worker)
SUCCESS                                     SUCCEEDED
ERROR / MAX_RECOVERY_ATTEMPTS_EXCEEDED      FAILED
CANCELLED                                   CANCELLED
==========================================  ===========================================================
"""

from __future__ import annotations

from typing import Any

from dbos._sys_db import StepInfo, WorkflowStatus

from ...core.types import (
    Envelope,
    ErrorInfo,
    PendingApproval,
    RunInfo,
    RunStatus,
    StepKind,
    StepRecord,
    StepStatus,
)
from .journal import BEGIN_KINDS, SLEEP, parse_op
from .serializer import RecordedError

TERMINAL = {
    "SUCCESS": RunStatus.SUCCEEDED,
    "ERROR": RunStatus.FAILED,
    "MAX_RECOVERY_ATTEMPTS_EXCEEDED": RunStatus.FAILED,
    "CANCELLED": RunStatus.CANCELLED,
}


def perdure_workflow(status: WorkflowStatus) -> str:
    """The perdure workflow name a DBOS run executes (its first argument)."""
    inputs: Any = status.input or {}
    args = inputs.get("args") or []
    if args:
        return str(args[0])
    return str((inputs.get("kwargs") or {}).get("workflow", "?"))


def needs_pending_event(status: WorkflowStatus) -> bool:
    """Whether the run may be waiting for an approval (worth reading its pending-approval event)."""
    return status.status in ("PENDING", "ENQUEUED")


def run_info(status: WorkflowStatus, pending: dict[str, Any] | None) -> RunInfo:
    """The :class:`RunInfo` of a DBOS workflow status and its pending-approval event value."""
    state = TERMINAL.get(status.status)
    approval = None
    if state is None:
        if pending:
            state = RunStatus.WAITING
            approval = PendingApproval(
                approval_id=pending["approval_id"],
                name=pending["name"],
                payload=pending.get("payload"),
                digest=pending["digest"],
                deadline=pending.get("deadline"),
            )
        elif status.status == "PENDING" or status.dequeued_at is not None:
            state = RunStatus.RUNNING
        else:
            state = RunStatus.PENDING
    error = None
    if state is RunStatus.FAILED:
        exc = status.error
        if isinstance(exc, RecordedError):
            error = ErrorInfo(type=exc.type_name, message=exc.message)
        elif isinstance(exc, BaseException):
            error = ErrorInfo.of(exc)
        else:
            error = ErrorInfo(type="MaxRecoveryAttemptsExceeded" if exc is None else "Error", message=str(exc or status.status))
    return RunInfo(
        run_id=status.workflow_id,
        workflow=perdure_workflow(status),
        status=state,
        output=status.output if state is RunStatus.SUCCEEDED else None,
        error=error,
        pending_approval=approval,
        created_at=None if status.created_at is None else status.created_at / 1000,
    )


def _envelope(output: Any) -> Envelope:
    error = output.get("error")
    return Envelope(
        name=output["name"],
        kind=StepKind(output["kind"]),
        ok=bool(output["ok"]),
        output=output.get("output"),
        error=None if error is None else ErrorInfo(type=error["type"], message=error["message"]),
        attempts=int(output.get("attempts", 1)),
    )


def step_records(operations: list[StepInfo], run_status: str) -> list[StepRecord]:
    """The run's journal as :class:`StepRecord` s, counted from its recorded DBOS operations.

    Each position starts with a step/tool envelope or a ``*.begin`` operation; an approval or sleep is
    WAITING (attempts 0) until its envelope is recorded. A cancelled run keeps only recorded outcomes,
    as on the reference engine.
    """
    records: list[StepRecord] = []
    open_index: int | None = None
    for op in sorted(operations, key=lambda o: o["function_id"]):
        parsed = parse_op(op["function_name"])
        if parsed is None:
            continue
        kind, name = parsed
        if kind in BEGIN_KINDS:
            base = StepKind.APPROVAL if kind == "approval.begin" else StepKind.SLEEP
            open_index = len(records)
            records.append(
                StepRecord(position=open_index, name=name if base is StepKind.APPROVAL else SLEEP, kind=base,
                           status=StepStatus.WAITING, attempts=0)
            )
        elif kind in ("approval", "sleep") and open_index is not None:
            records[open_index] = _envelope(op["output"]).record(open_index)
            open_index = None
        elif kind in ("step", "tool"):
            records.append(_envelope(op["output"]).record(len(records)))
    if run_status == "CANCELLED" and open_index is not None:
        del records[open_index]  # never finished, never will: not part of the journal
    return records

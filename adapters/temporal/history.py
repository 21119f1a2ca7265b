"""Reading a run back from its Temporal history: ``steps()`` records and the run's outcome.

No worker is needed: every recorded outcome is in the history as perdure's own envelope JSON --
activity results and local-activity markers for steps and tools (position = activity id), memo upserts
(``perdure.record``) for sleeps and approvals, and, in a run continued as new, the journal carried in
its started event's input (every position before the Temporal run began, see :mod:`.continuation`). Operations still in flight show as the memory engine shows
them: a scheduled activity is RUNNING, a started ``perdure.sleep@N`` timer or a pending approval memo
(``perdure.pending/<approval id>``; ``perdure.pending`` in runs of earlier perdure versions) is WAITING,
all with ``attempts=0`` (and so does an operation the workflow cancelled, as on the memory engine);
a closed run keeps only recorded outcomes. (A local activity leaves
nothing in the history until it completes, so ``steps=local`` shows no RUNNING step, like engines that
journal only completions.)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pydantic_core
from temporalio.api.common.v1 import Payload
from temporalio.api.history.v1 import HistoryEvent

from ...core.errors import NonDeterminismError, PayloadTooLargeError
from ...core.types import Envelope, ErrorInfo, RunStatus, StepKind, StepRecord, StepStatus
from .continuation import carried_records
from .payloads import (
    CANCEL_REASON,
    FAILED_REASON,
    MEMO_PENDING_LEGACY,
    MEMO_PENDING_PREFIX,
    MEMO_RECORD,
    SLEEP_SUMMARY,
    STEP_ACTIVITY,
    decode_call,
)

_LOCAL_ACTIVITY_MARKER = "core_local_activity"
_TEMPORAL_NONDETERMINISM = "[TMPRL1100]"  # how Temporal's core SDK starts a nondeterminism failure
_SERVER = "history-service"  # the identity of terminations the Temporal server makes itself
HISTORY_LIMIT_ERROR = "HistoryLimitError"  # error type of a run Temporal ended for its history size/count
TERMINATED_ERROR = "TerminatedError"  # error type of a run terminated in Temporal, not by perdure (Temporal's name)


def _json(payload: Payload) -> Any:
    return pydantic_core.from_json(payload.data) if payload.data else None


def _output(payload: Payload) -> Any:
    """A run's output: perdure's JSON text. Anything else (a workflow perdure did not write, e.g. a null
    or binary payload) is not parsed as perdure's: no output, rather than a crash."""
    if payload.metadata.get("encoding") != b"json/plain" or not payload.data:
        return None
    try:
        return pydantic_core.from_json(payload.data)
    except ValueError:
        return None


def _in_flight(position: int, name: str, kind: StepKind) -> StepRecord:
    status = StepStatus.RUNNING if kind in (StepKind.STEP, StepKind.TOOL) else StepStatus.WAITING
    return StepRecord(position=position, name=name, kind=kind, status=status, attempts=0)


def step_records(events: Iterable[HistoryEvent], *, closed: bool) -> list[StepRecord]:
    """The run's journal as ``StepRecord`` s, in position order (see the module docstring)."""
    records: dict[int, StepRecord] = {}
    done: set[int] = set()
    scheduled: dict[int, int] = {}  # activity scheduled event id -> position

    def recorded(position: int, envelope_text: str | bytes) -> None:
        records[position] = Envelope.from_json(envelope_text).record(position)
        done.add(position)

    def in_flight(position: int, name: str, kind: StepKind) -> None:
        if position not in done:
            records[position] = _in_flight(position, name, kind)

    for ev in events:
        kind = ev.WhichOneof("attributes")
        if kind == "workflow_execution_started_event_attributes":
            for rec in carried_records(ev.workflow_execution_started_event_attributes.input.payloads):
                records[rec.position] = rec
                if rec.status not in (StepStatus.RUNNING, StepStatus.WAITING):  # (a cancelled operation)
                    done.add(rec.position)
        elif kind == "activity_task_scheduled_event_attributes":
            a = ev.activity_task_scheduled_event_attributes
            if a.activity_type.name != STEP_ACTIVITY:  # Temporal code of the user's own, not a perdure step
                continue
            call = decode_call(a.input.payloads[0])
            scheduled[ev.event_id] = call.position
            in_flight(call.position, call.name, call.kind)
        elif kind == "activity_task_completed_event_attributes":
            c = ev.activity_task_completed_event_attributes
            position = scheduled.get(c.scheduled_event_id)
            if position is not None and c.result.payloads:
                recorded(position, c.result.payloads[0].data)
        elif kind == "marker_recorded_event_attributes":
            m = ev.marker_recorded_event_attributes
            if m.marker_name == _LOCAL_ACTIVITY_MARKER and "result" in m.details and "data" in m.details:
                data = _json(m.details["data"].payloads[0])
                result = m.details["result"].payloads
                if result and data.get("activity_type") == STEP_ACTIVITY:
                    recorded(int(data["activity_id"]), result[0].data)
        elif kind == "workflow_properties_modified_event_attributes":
            fields = ev.workflow_properties_modified_event_attributes.upserted_memo.fields
            for key in fields:
                if key.startswith(MEMO_PENDING_PREFIX) or key == MEMO_PENDING_LEGACY:
                    pending = _json(fields[key])
                    if isinstance(pending, dict):  # (None: decided, its outcome is the MEMO_RECORD)
                        in_flight(int(pending["position"]), pending["name"], StepKind.APPROVAL)
            if MEMO_RECORD in fields:
                rec = _json(fields[MEMO_RECORD])
                recorded(int(rec["position"]), pydantic_core.to_json(rec["envelope"]))
        elif kind == "timer_started_event_attributes" and ev.HasField("user_metadata"):
            summary = _json(ev.user_metadata.summary) if ev.user_metadata.HasField("summary") else None
            if isinstance(summary, str) and summary.startswith(SLEEP_SUMMARY):
                in_flight(int(summary[len(SLEEP_SUMMARY):]), "perdure.sleep", StepKind.SLEEP)
    if closed:  # as the memory engine does on cancel: only recorded outcomes remain
        records = {p: r for p, r in records.items() if p in done}
    return [records[p] for p in sorted(records)]


_ACTIVITY_CLOSED = (
    "activity_task_completed_event_attributes", "activity_task_failed_event_attributes",
    "activity_task_timed_out_event_attributes", "activity_task_canceled_event_attributes",
)


def steps_in_flight(events: Iterable[HistoryEvent]) -> dict[int, tuple[str, str]]:
    """position -> (kind, name) of the perdure steps scheduled as activities and not closed yet. Only their
    inputs are decoded: this runs over every open run a starting worker replays (worker.py)."""
    open_: dict[int, HistoryEvent] = {}
    for ev in events:
        kind = ev.WhichOneof("attributes")
        if kind == "activity_task_scheduled_event_attributes":
            if ev.activity_task_scheduled_event_attributes.activity_type.name == STEP_ACTIVITY:
                open_[ev.event_id] = ev
        elif kind in _ACTIVITY_CLOSED:
            open_.pop(getattr(ev, kind).scheduled_event_id, None)
    calls = (decode_call(ev.activity_task_scheduled_event_attributes.input.payloads[0]) for ev in open_.values())
    return {call.position: (call.kind.value, call.name) for call in calls}


def failure_info(failure: Any) -> ErrorInfo:
    """A Temporal ``Failure`` as perdure's ``ErrorInfo`` (the original type name and message)."""
    if failure.HasField("application_failure_info"):
        type_name = failure.application_failure_info.type or "ApplicationError"
    elif failure.HasField("timeout_failure_info"):
        type_name = "TimeoutError"
    elif failure.HasField("canceled_failure_info"):
        type_name = "RunCancelledError"
    else:
        type_name = "WorkflowError"
    if type_name == "NondeterminismError" or failure.message.startswith(_TEMPORAL_NONDETERMINISM):
        type_name = NonDeterminismError.__name__  # Temporal's own detection; perdure reports one type
    return ErrorInfo(type=type_name, message=failure.message)


def termination_error(reason: str, identity: str) -> ErrorInfo:
    """The error of a run terminated by anything but perdure (its cancel, its replay check): the server
    (the run's history outgrew Temporal's limits, a workflow task was too large to send) or an operator's
    ``terminate``. Such a run is FAILED, never CANCELLED: only perdure's own cancel is a cancel."""
    by = "the Temporal server" if identity == _SERVER else (f"{identity!r}" if identity else "someone")
    said = reason or "no reason given"
    if identity == _SERVER and "exceeds limit" in reason:
        # Temporal ended a run whose history outgrew its limits (a run whose journal is too large to
        # continue as new gets here; see continuation.py)
        return ErrorInfo(type=HISTORY_LIMIT_ERROR, message=f"Temporal: {reason} The run's journal was too large "
                         "to continue as new (max_carry_bytes) and its history reached Temporal's limit.")
    if identity == _SERVER and "TooLarge" in reason:
        # e.g. GrpcMessageTooLarge: the commands of one workflow task (the arguments of steps started
        # together, local steps' outputs, ...) exceeded the server's gRPC message limit (4 MiB by default)
        return ErrorInfo(type=PayloadTooLargeError.__name__, message=(
            f"Temporal terminated the run: {said}. What one workflow task sent the server (the arguments of "
            "the steps it started together, its local steps' outputs, the run's output) exceeded the "
            "server's gRPC message limit (4 MiB by default); perdure's own limit "
            "(PERDURE_MAX_PAYLOAD_BYTES) is per value. Start fewer large steps at once, or pass references "
            "to stored data instead of the data."
        ))
    return ErrorInfo(type=TERMINATED_ERROR, message=f"the run was terminated in Temporal by {by}: {said}")


def outcome(close: HistoryEvent) -> tuple[RunStatus, Any, ErrorInfo | None]:
    """Status, output and error of a run from its close event."""
    kind = close.WhichOneof("attributes")
    if kind == "workflow_execution_completed_event_attributes":
        result = close.workflow_execution_completed_event_attributes.result.payloads
        return RunStatus.SUCCEEDED, (_output(result[0]) if result else None), None
    if kind == "workflow_execution_failed_event_attributes":
        return RunStatus.FAILED, None, failure_info(close.workflow_execution_failed_event_attributes.failure)
    if kind == "workflow_execution_timed_out_event_attributes":
        return RunStatus.FAILED, None, ErrorInfo(type="TimeoutError", message="the Temporal workflow timed out")
    if kind == "workflow_execution_terminated_event_attributes":
        term = close.workflow_execution_terminated_event_attributes
        if term.reason == CANCEL_REASON:  # perdure's own cancel: the only termination that reads CANCELLED
            return RunStatus.CANCELLED, None, None
        if term.reason.startswith(FAILED_REASON):  # perdure failed the run itself (a replay found changed code)
            return RunStatus.FAILED, None, ErrorInfo.model_validate_json(term.reason[len(FAILED_REASON):])
        return RunStatus.FAILED, None, termination_error(term.reason, term.identity)
    if kind == "workflow_execution_canceled_event_attributes":
        return RunStatus.CANCELLED, None, None
    # continued-as-new: perdure never continues runs as new; report what Temporal did
    return RunStatus.FAILED, None, ErrorInfo(type="WorkflowError", message=f"unexpected close event {kind}")

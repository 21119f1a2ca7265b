"""The Temporal adapter's own logic, without a server: URL and profiles, payloads, attempt counting,
reading outcomes from history events, the exit guard."""

from __future__ import annotations

import asyncio
import atexit
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pydantic_core
import pytest

pytest.importorskip("temporalio")

from temporalio.api.failure.v1 import ApplicationFailureInfo, Failure  # noqa: E402
from temporalio.api.history.v1 import (  # noqa: E402
    HistoryEvent,
    WorkflowExecutionCompletedEventAttributes,
    WorkflowExecutionFailedEventAttributes,
    WorkflowExecutionTerminatedEventAttributes,
)

from perdure.adapters.temporal import (  # noqa: E402
    PROFILES,
    TemporalBackend,
    TemporalDevServer,
    hard_exit,
    temporal_binary,
)
from perdure.adapters.temporal.activities import _attempt  # noqa: E402
from perdure.adapters.temporal.continuation import (  # noqa: E402
    DEFAULT_MAX_CARRY_BYTES,
    CarriedJournal,
    RunState,
    carried_records,
    continued_input,
    perdure_input,
    unsettled_entry,
)
from perdure.adapters.temporal.devserver import PORT_ENV  # noqa: E402
from perdure.adapters.temporal.history import outcome  # noqa: E402
from perdure.adapters.temporal.payloads import (  # noqa: E402
    CANCEL_REASON,
    FAILED_REASON,
    MEMO_PENDING_LEGACY,
    decode_call,
    encode_call,
    gate_id,
    pending_approvals,
    pending_key,
    raw,
    record_json,
    text_of,
)
from perdure.adapters.temporal.settings import PROFILE_ENV  # noqa: E402
from perdure.adapters.temporal.workflow import StepOptions  # noqa: E402
from perdure.core.backend import STEP_TIMEOUT_GRACE  # noqa: E402
from perdure.core.config import backend_class  # noqa: E402
from perdure.core.errors import ConfigurationError, InvalidBackendURLError  # noqa: E402
from perdure.core.types import ErrorInfo, RunStatus, StepCall, StepKind, StepStatus  # noqa: E402


# --- URL and profiles --------------------------------------------------------------------------------
def test_url_defaults_and_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    s = TemporalBackend("temporal://").settings
    assert (s.address, s.namespace, s.task_queue, s.profile.name, s.steps) == (
        "127.0.0.1:7233", "default", "perdure", "production", "activity"
    )
    s = TemporalBackend("temporal://temporal.internal:7000/agents?task_queue=q1&profile=test&steps=local").settings
    assert (s.address, s.namespace, s.task_queue, s.profile, s.steps) == (
        "temporal.internal:7000", "agents", "q1", PROFILES["test"], "local"
    )


def test_profile_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PROFILE_ENV, "test")
    assert TemporalBackend("temporal://127.0.0.1:7233").settings.profile.name == "test"
    assert TemporalBackend("temporal://127.0.0.1:7233?profile=production").settings.profile.name == "production"


def test_step_timeout_bounds_each_attempt_and_temporal_s_own_timeout_comes_later(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    s = TemporalBackend("temporal://").settings
    assert s.attempt_timeout == PROFILES["production"].step_timeout == 3600.0
    s = TemporalBackend("temporal://h:1/ns?profile=test&step_timeout=7200.5").settings
    assert s.attempt_timeout == 7200.5
    assert StepOptions.of(s).start_to_close == timedelta(seconds=7200.5 + STEP_TIMEOUT_GRACE)


def test_continue_as_new_options_travel_with_the_runs_a_client_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    assert TemporalBackend("temporal://").settings.run_state() == RunState(
        PROFILES["production"].continue_as_new_after, DEFAULT_MAX_CARRY_BYTES
    )
    s = TemporalBackend("temporal://h:1/ns?continue_as_new_after=0&max_carry_bytes=5000").settings
    assert s.run_state() == RunState(0, 5000)


@pytest.mark.parametrize(
    "url",
    [
        "temporal://h:1/ns?continue_as_new_after=-1",
        "temporal://h:1/ns?max_carry_bytes=lots",
        "temporal://h:1/ns?bogus=1",
        "temporal://h:1/ns?steps=remote",
        "temporal://h:1/ns?profile=fast",
        "temporal://h:1/a/b",
        "temporal://h:1/ns?task_queue=",
        "temporal://h:1/ns?task_queue=it's",
        "temporal://h:1/ns?step_timeout=0",
        "temporal://h:1/ns?step_timeout=-5",
        "temporal://h:1/ns?step_timeout=inf",
        "temporal://h:1/ns?step_timeout=1h",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidBackendURLError):
        TemporalBackend(url)


def test_test_profile_only_shortens_waits() -> None:
    prod, test = PROFILES["production"], PROFILES["test"]
    assert test.heartbeat_timeout < prod.heartbeat_timeout
    assert test.crash_retry_interval < prod.crash_retry_interval
    assert test.workflow_task_timeout <= prod.workflow_task_timeout
    assert test.sticky_timeout < prod.sticky_timeout
    assert test.max_cached_workflows == prod.max_cached_workflows  # the cache is not a wait
    # a resumed run's replay must fit in the shorter workflow task timeout: shorter Temporal runs
    assert 0 < test.continue_as_new_after <= prod.continue_as_new_after


def test_backend_is_found_by_scheme_and_has_a_dev_server(tmp_path: Path) -> None:
    cls = backend_class("temporal")
    assert cls is TemporalBackend
    server = cls.dev_server("temporal", tmp_path)
    assert isinstance(server, TemporalDevServer)
    assert server.worker_env() == {PROFILE_ENV: "test"}
    assert Path(temporal_binary()).is_file()


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port some other server listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_dev_server_refuses_a_busy_port_from_the_environment(
    tmp_path: Path, busy_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``PERDURE_TEMPORAL_PORT`` on a port in use: an error, not "running" against the other server."""
    monkeypatch.setenv(PORT_ENV, str(busy_port))
    ds = TemporalDevServer(tmp_path)
    try:
        with pytest.raises(ConfigurationError, match=f"port {busy_port} \\({PORT_ENV}\\) on 127.0.0.1 is already in use"):
            ds.start()
        assert ds.process is None
    finally:
        ds.stop()
    monkeypatch.setenv(PORT_ENV, "seventy")
    with pytest.raises(ConfigurationError, match=PORT_ENV):
        TemporalDevServer(tmp_path).start()


def test_dev_server_is_ready_only_while_its_process_lives(
    tmp_path: Path, busy_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The port answers, but by then the server process is gone (it lost the port to another): not ready."""
    from perdure.adapters.temporal import devserver

    ds = TemporalDevServer(tmp_path, port=busy_port)
    ds.process = server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])

    def probe(port: int) -> bool:  # the other server answers while ours dies of "address already in use"
        server.kill()
        server.wait()
        return port == busy_port

    monkeypatch.setattr(devserver, "_port_open", probe)
    with pytest.raises(ConfigurationError, match="exited at start-up"):
        ds._wait_ready()
    assert ds.process is None


# --- payloads ----------------------------------------------------------------------------------------
def test_step_call_round_trip_keeps_arguments_readable() -> None:
    call = StepCall("run/1", 3, "pkg.fetch", StepKind.TOOL, '{"url":"https://x","n":[1,2.5,null]}', "run/1:3")
    payload = encode_call(call)
    assert pydantic_core.from_json(text_of(payload))["args"] == {"url": "https://x", "n": [1, 2.5, None]}
    back = decode_call(payload)
    assert back == StepCall(call.run_id, 3, "pkg.fetch", StepKind.TOOL, back.args_json, "run/1:3")
    assert pydantic_core.from_json(back.args_json) == pydantic_core.from_json(call.args_json)


def test_raw_payloads_hold_the_exact_json_text() -> None:
    text = '{"name":"a","kind":"step","ok":true,"output":[1],"error":null,"attempts":1}'
    assert text_of(raw(text)) == text
    assert raw(text).payload.metadata["encoding"] == b"json/plain"
    assert pydantic_core.from_json(text_of(record_json(4, text))) == {"position": 4, "envelope": pydantic_core.from_json(text)}
    assert gate_id("r", "publish-2") == "perdure.decision/r/publish-2"


# --- continue-as-new -----------------------------------------------------------------------------------
ENV = '{{"name":"s","kind":"step","ok":true,"output":{i},"error":null,"attempts":1}}'


def test_run_state_round_trip_and_legacy_runs() -> None:
    first = RunState(3, 1000)
    assert RunState.of(raw(first.to_json()), 99) == first
    later = RunState(3, 1000, generation=2, created_at=12.5, decisions={"ship-4": {"approved": True}})
    assert RunState.of(raw(later.to_json()), 99) == later
    assert RunState.of(None, 7) == RunState(7)  # a run started before continue-as-new existed


def test_carried_journal_grows_by_text_and_reads_back_by_position() -> None:
    empty = CarriedJournal()
    assert len(empty) == 0 and empty.approval_ids() == set()
    one = CarriedJournal(empty.extended([ENV.format(i=0), ENV.format(i=1)]))
    two = CarriedJournal(one.extended([ENV.format(i=2), '{"name":"ship","kind":"approval","ok":true,"output":{}}']))
    assert two.text.startswith(one.text[:-1])  # the carried part is copied, not re-encoded
    assert len(two) == 4 and pydantic_core.from_json(two.envelope(2)) == pydantic_core.from_json(ENV.format(i=2))
    assert two.approval_ids() == {"ship-3"}
    assert one.extended([]) is one.text


def test_continued_input_size_and_carried_records() -> None:
    journal = CarriedJournal().extended([ENV.format(i=i) for i in range(3)])
    state = RunState(3, generation=1, created_at=1.0)
    payloads, size = continued_input(raw('{"n":3}'), state, journal)
    assert size == sum(len(p.payload.data) for p in payloads)
    records = carried_records([p.payload for p in payloads])
    assert [(r.position, r.name, r.output) for r in records] == [(0, "s", 0), (1, "s", 1), (2, "s", 2)]
    assert carried_records([p.payload for p in payloads[:2]]) == []  # a first run carries nothing


def test_operations_without_an_outcome_are_carried_as_such() -> None:
    """A cancelled operation is carried (and shown while the run is open) as still in flight; one that
    raised before it was issued shows nothing, as in its own Temporal run."""
    journal = CarriedJournal(CarriedJournal().extended([
        unsettled_entry("perdure.sleep", "sleep", "cancelled"), ENV.format(i=1),
        unsettled_entry("tt.a", "step", "cancelled"), unsettled_entry("tt.b", "step", "raised"),
    ]))
    assert [journal.unsettled(p) for p in range(4)] == ["cancelled", None, "cancelled", "raised"]
    payloads, _ = continued_input(raw("{}"), RunState(2, generation=1, created_at=1.0), journal.text)
    records = carried_records([p.payload for p in payloads])
    assert [(r.position, r.name, r.status, r.attempts) for r in records] == [
        (0, "perdure.sleep", StepStatus.WAITING, 0), (1, "s", StepStatus.COMPLETED, 1), (2, "tt.a", StepStatus.RUNNING, 0)
    ]


def test_perdure_input_tells_perdure_runs_from_other_workflows() -> None:
    from temporalio.converter import DataConverter

    state = raw(RunState(3).to_json())
    first = [raw('{"x":1}'), state]
    continued = [*first, raw(CarriedJournal().extended([ENV.format(i=0)]))]
    for payloads in (first, continued, first[:1]):  # first[:1]: a run started before continue-as-new
        assert perdure_input([p.payload for p in payloads])
    plain = DataConverter.default.payload_converter.to_payloads
    for args in ([], [None], ["text"], [{"x": 1}, {"other": "state"}], [{"x": 1}, {"a": 1}, {"b": 2}, {"c": 3}]):
        assert not perdure_input(plain(args)), args
    assert not perdure_input([raw("not json").payload])


def test_the_output_of_a_workflow_perdure_did_not_write_is_not_parsed() -> None:
    from temporalio.converter import DataConverter

    done = HistoryEvent(workflow_execution_completed_event_attributes=WorkflowExecutionCompletedEventAttributes())
    done.workflow_execution_completed_event_attributes.result.payloads.extend(
        DataConverter.default.payload_converter.to_payloads([None]))
    assert outcome(done) == (RunStatus.SUCCEEDED, None, None)


# --- attempts ----------------------------------------------------------------------------------------
def _info(attempt: int, details: list[object], local: bool = False) -> object:
    return SimpleNamespace(attempt=attempt, heartbeat_details=details, is_local=local)


def test_attempts_count_failures_and_restart_after_a_crash() -> None:
    assert _attempt(_info(1, [])) == 1  # type: ignore[arg-type]
    assert _attempt(_info(2, [{"phase": "failed", "attempt": 1}])) == 2  # type: ignore[arg-type]
    # the previous attempt was still running when its worker died: as on the memory engine, start over
    assert _attempt(_info(3, [{"phase": "running", "attempt": 2}])) == 1  # type: ignore[arg-type]
    assert _attempt(_info(4, [], local=True)) == 4  # type: ignore[arg-type]


# --- outcomes ----------------------------------------------------------------------------------------
def test_outcomes_from_close_events() -> None:
    done = HistoryEvent(workflow_execution_completed_event_attributes=WorkflowExecutionCompletedEventAttributes())
    done.workflow_execution_completed_event_attributes.result.payloads.append(raw('{"a":1}').payload)
    assert outcome(done) == (RunStatus.SUCCEEDED, {"a": 1}, None)

    failed = HistoryEvent(workflow_execution_failed_event_attributes=WorkflowExecutionFailedEventAttributes(
        failure=Failure(message="boom", application_failure_info=ApplicationFailureInfo(type="ValueError"))))
    assert outcome(failed) == (RunStatus.FAILED, None, ErrorInfo(type="ValueError", message="boom"))

    temporal_nd = HistoryEvent(workflow_execution_failed_event_attributes=WorkflowExecutionFailedEventAttributes(
        failure=Failure(message="[TMPRL1100] Nondeterminism error: ...", application_failure_info=ApplicationFailureInfo())))
    assert outcome(temporal_nd)[2] == ErrorInfo(type="NonDeterminismError", message="[TMPRL1100] Nondeterminism error: ...")

    error = ErrorInfo(type="NonDeterminismError", message="position 0 changed")
    by_perdure = HistoryEvent(workflow_execution_terminated_event_attributes=WorkflowExecutionTerminatedEventAttributes(
        reason=FAILED_REASON + error.model_dump_json()))
    assert outcome(by_perdure) == (RunStatus.FAILED, None, error)

    cancelled = HistoryEvent(workflow_execution_terminated_event_attributes=WorkflowExecutionTerminatedEventAttributes(
        reason="perdure: cancelled"))
    assert outcome(cancelled) == (RunStatus.CANCELLED, None, None)

    too_long = HistoryEvent(workflow_execution_terminated_event_attributes=WorkflowExecutionTerminatedEventAttributes(
        reason="Workflow history count exceeds limit.", identity="history-service"))
    status, _, err = outcome(too_long)
    assert status is RunStatus.FAILED and err is not None and err.type == "HistoryLimitError"


def _terminated(reason: str, identity: str = "") -> HistoryEvent:
    return HistoryEvent(workflow_execution_terminated_event_attributes=WorkflowExecutionTerminatedEventAttributes(
        reason=reason, identity=identity))


def test_only_perdures_own_cancel_reads_cancelled() -> None:
    """Any other termination -- by the server, or an operator -- is a FAILED run with a typed error that
    carries the reason (the server terminates a run whose workflow task is too large to send as
    ``GrpcMessageTooLarge``, identity ``history-service``)."""
    assert outcome(_terminated(CANCEL_REASON, "4242@laptop")) == (RunStatus.CANCELLED, None, None)

    status, output, err = outcome(_terminated("GrpcMessageTooLarge", "history-service"))
    assert (status, output) == (RunStatus.FAILED, None)
    assert err is not None and err.type == "PayloadTooLargeError" and "GrpcMessageTooLarge" in err.message

    for reason, identity in [("stuck, giving up", "ops@bastion"), ("", ""), ("WorkflowTaskTimedOut", "history-service"),
                             ("perdure: cancelled later", "")]:
        status, _, err = outcome(_terminated(reason, identity))
        assert status is RunStatus.FAILED, (reason, identity)
        assert err is not None and err.type == "TerminatedError" and reason in err.message
        assert (identity or "someone") in err.message or identity == "history-service"


# --- approvals ----------------------------------------------------------------------------------------
def test_every_pending_approval_has_its_own_memo_key() -> None:
    """Concurrent approvals: each stays readable until decided (the last requested is the one shown, as on
    the memory engine); the single key of runs started by an earlier perdure is still read."""
    a, b = ({"approval_id": f"{n}-{i}", "name": n, "payload": i, "digest": "0" * 64, "deadline": None, "position": i}
            for i, n in enumerate("ab"))
    assert pending_key("a-0") == "perdure.pending/a-0"
    memo = {pending_key("b-1"): b, pending_key("a-0"): a, "perdure.record": {"position": 9}}
    assert pending_approvals(memo) == [a, b]
    assert pending_approvals({MEMO_PENDING_LEGACY: a}) == [a]
    assert pending_approvals({MEMO_PENDING_LEGACY: None}) == []
    assert pending_approvals({MEMO_PENDING_LEGACY: a, pending_key("a-0"): a}) == [a]


# Events 1-13 of a ``tt.approval`` run written by the perdure before per-approval memo keys (its pending
# approval under the one memo key ``perdure.pending``): waiting (events 1-7), decided by alice (8-12), step b
# scheduled (13). Captured from a dev server, stripped of identities and ids.
LEGACY_HISTORY = (
    '{"events":[{"eventId":"1","eventTime":"2026-12-03T12:05:22.724430284Z","eventType":"EVENT_TYPE_WORKFLOW_EXECUT'
    'ION_STARTED","workflowExecutionStartedEventAttributes":{"workflowType":{"name":"tt.approval"},"taskQueue":{"na'
    'me":"legacyq","kind":"TASK_QUEUE_KIND_NORMAL"},"input":{"payloads":[{"metadata":{"encoding":"anNvbi9wbGFpbg=="'
    '},"data":"e30="},{"metadata":{"encoding":"anNvbi9wbGFpbg=="},"data":"eyJjb250aW51ZV9hc19uZXdfYWZ0ZXIiOjEwMCwib'
    'WF4X2NhcnJ5X2J5dGVzIjoyMDAwMDAwfQ=="}]},"workflowTaskTimeout":"0.500s","attempt":1,"workflowId":"legacy-approv'
    'al"}},{"eventId":"2","eventTime":"2026-12-03T12:05:22.724569861Z","eventType":"EVENT_TYPE_WORKFLOW_TASK_SCHEDU'
    'LED","workflowTaskScheduledEventAttributes":{"taskQueue":{"name":"legacyq","kind":"TASK_QUEUE_KIND_NORMAL"},"s'
    'tartToCloseTimeout":"0.500s","attempt":1}},{"eventId":"3","eventTime":"2026-12-03T12:05:22.741822552Z","eventT'
    'ype":"EVENT_TYPE_WORKFLOW_TASK_STARTED","workflowTaskStartedEventAttributes":{"scheduledEventId":"2"}},{"event'
    'Id":"4","eventTime":"2026-12-03T12:05:22.763611074Z","eventType":"EVENT_TYPE_WORKFLOW_TASK_COMPLETED","workflo'
    'wTaskCompletedEventAttributes":{"scheduledEventId":"2","startedEventId":"3","sdkMetadata":{"coreUsedFlags":[2,'
    '3,1,4],"sdkName":"temporal-python","sdkVersion":"1.35.0"}}},{"eventId":"5","eventTime":"2026-12-03T12:05:22.76'
    '3671373Z","eventType":"EVENT_TYPE_MARKER_RECORDED","markerRecordedEventAttributes":{"markerName":"core_patch",'
    '"details":{"patch-data":{"payloads":[{"metadata":{"encoding":"anNvbi9wbGFpbg=="},"data":"eyJpZCI6InBlcmR1cmUuY'
    '29udGludWUtYXMtbmV3IiwiZGVwcmVjYXRlZCI6ZmFsc2V9"}]}}}},{"eventId":"6","eventTime":"2026-12-03T12:05:22.7745474'
    '17Z","eventType":"EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES","upsertWorkflowSearchAttributesEventAttributes'
    '":{"searchAttributes":{"indexedFields":{"TemporalChangeVersion":{"metadata":{"encoding":"anNvbi9wbGFpbg==","ty'
    'pe":"S2V5d29yZExpc3Q="},"data":"WyJwZXJkdXJlLmNvbnRpbnVlLWFzLW5ldyJd"}}}}},{"eventId":"7","eventTime":"2026-12'
    '-03T12:05:22.774602209Z","eventType":"EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED","workflowPropertiesModifiedEven'
    'tAttributes":{"upsertedMemo":{"fields":{"perdure.pending":{"metadata":{"encoding":"anNvbi9wbGFpbg=="},"data":"'
    'eyJhcHByb3ZhbF9pZCI6InNoaXAtMCIsImRlYWRsaW5lIjpudWxsLCJkaWdlc3QiOiIyYmZkMTRmNDNkMTdmYzdjZWEyNGUwOTE3YTg4NzliNG'
    'IyZjg4MGI4YmFlZWMxYjlkOTBmYmFhZDY1NWU3MWJkIiwibmFtZSI6InNoaXAiLCJwYXlsb2FkIjp7Im4iOjF9LCJwb3NpdGlvbiI6MH0="}}}'
    '}},{"eventId":"8","eventTime":"2026-12-03T12:05:22.847008777Z","eventType":"EVENT_TYPE_WORKFLOW_EXECUTION_SIGN'
    'ALED","workflowExecutionSignaledEventAttributes":{"signalName":"perdure.decide","input":{"payloads":[{"metadat'
    'a":{"encoding":"anNvbi9wbGFpbg=="},"data":"InNoaXAtMCI="},{"metadata":{"encoding":"anNvbi9wbGFpbg=="},"data":"'
    'eyJhcHByb3ZlZCI6dHJ1ZSwiYnkiOiJhbGljZSIsImNvbW1lbnQiOm51bGwsImRhdGEiOm51bGwsImRpZ2VzdCI6IjJiZmQxNGY0M2QxN2ZjN2'
    'NlYTI0ZTA5MTdhODg3OWI0YjJmODgwYjhiYWVlYzFiOWQ5MGZiYWFkNjU1ZTcxYmQifQ=="}]}}},{"eventId":"9","eventTime":"2026-'
    '12-03T12:05:22.847019022Z","eventType":"EVENT_TYPE_WORKFLOW_TASK_SCHEDULED","workflowTaskScheduledEventAttribu'
    'tes":{"taskQueue":{"name":"17117@vm-98057714f4034f69b79a78dc93a974e1","kind":"TASK_QUEUE_KIND_STICKY","normalN'
    'ame":"legacyq"},"startToCloseTimeout":"0.500s","attempt":1}},{"eventId":"10","eventTime":"2026-12-03T12:05:22.'
    '856928684Z","eventType":"EVENT_TYPE_WORKFLOW_TASK_STARTED","workflowTaskStartedEventAttributes":{"scheduledEve'
    'ntId":"9"}},{"eventId":"11","eventTime":"2026-12-03T12:05:22.887582535Z","eventType":"EVENT_TYPE_WORKFLOW_TASK'
    '_COMPLETED","workflowTaskCompletedEventAttributes":{"scheduledEventId":"9","startedEventId":"10","sdkMetadata"'
    ':{}}},{"eventId":"12","eventTime":"2026-12-03T12:05:22.887674572Z","eventType":"EVENT_TYPE_WORKFLOW_PROPERTIES'
    '_MODIFIED","workflowPropertiesModifiedEventAttributes":{"upsertedMemo":{"fields":{"perdure.pending":{"metadata'
    '":{"encoding":"YmluYXJ5L251bGw="}},"perdure.record":{"metadata":{"encoding":"anNvbi9wbGFpbg=="},"data":"eyJwb3'
    'NpdGlvbiI6MCwiZW52ZWxvcGUiOnsibmFtZSI6InNoaXAiLCJraW5kIjoiYXBwcm92YWwiLCJvayI6dHJ1ZSwib3V0cHV0Ijp7ImFwcHJvdmVk'
    'Ijp0cnVlLCJieSI6ImFsaWNlIiwiY29tbWVudCI6bnVsbCwiZGF0YSI6bnVsbCwiZGlnZXN0IjoiMmJmZDE0ZjQzZDE3ZmM3Y2VhMjRlMDkxN2'
    'E4ODc5YjRiMmY4ODBiOGJhZWVjMWI5ZDkwZmJhYWQ2NTVlNzFiZCJ9LCJlcnJvciI6bnVsbCwiYXR0ZW1wdHMiOjF9fQ=="}}}}},{"eventId'
    '":"13","eventTime":"2026-12-03T12:05:22.887828319Z","eventType":"EVENT_TYPE_ACTIVITY_TASK_SCHEDULED","activity'
    'TaskScheduledEventAttributes":{"activityId":"1","activityType":{"name":"perdure.step"},"taskQueue":{"name":"le'
    'gacyq","kind":"TASK_QUEUE_KIND_NORMAL"},"input":{"payloads":[{"metadata":{"encoding":"anNvbi9wbGFpbg=="},"data'
    '":"eyJydW5faWQiOiJsZWdhY3ktYXBwcm92YWwiLCJwb3NpdGlvbiI6MSwibmFtZSI6InR0LmIiLCJraW5kIjoic3RlcCIsImlkZW1wb3RlbmN'
    '5X2tleSI6ImxlZ2FjeS1hcHByb3ZhbDoxIiwiYXJncyI6eyJ4IjoiYWZ0ZXItZGVjaXNpb24ifX0="}]},"scheduleToCloseTimeout":"0s'
    '","scheduleToStartTimeout":"0s","startToCloseTimeout":"300s","heartbeatTimeout":"0.400s","retryPolicy":{"initi'
    'alInterval":"0.020s","backoffCoefficient":2.0,"maximumInterval":"0.500s"},"useWorkflowBuildId":true}}]}'
)


@pytest.fixture(scope="module")
def sdk_exit_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that ran the SDK's Rust core (the Replayer): leave the process with os._exit (exitguard.py)."""
    yield
    session = request.session
    atexit.register(lambda: hard_exit(int(getattr(session, "exitstatus", 0) or 0)))


def test_runs_started_before_per_approval_memo_keys_read_and_replay(sdk_exit_guard: None) -> None:
    """A run whose history holds the single ``perdure.pending`` memo key: ``steps()`` reads it, waiting
    and decided, and today's workflow code replays it with no nondeterminism (Temporal matches a memo
    upsert by its command type, not its keys) -- so such runs go on under a new worker."""
    from temporalio.client import WorkflowHistory
    from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

    from perdure.adapters.temporal.history import step_records
    from perdure.adapters.temporal.workflow import DecisionGate, PerdureWorkflow

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import temporal_app  # noqa: F401  (registers tt.approval)

    events = list(WorkflowHistory.from_json("legacy-approval", json.loads(LEGACY_HISTORY)).events)
    waiting = step_records(events[:7], closed=False)
    assert [(r.position, r.name, r.status) for r in waiting] == [(0, "ship", StepStatus.WAITING)]
    decided = step_records(events, closed=False)
    assert [(r.position, r.name, r.status) for r in decided] == [
        (0, "ship", StepStatus.COMPLETED), (1, "tt.b", StepStatus.RUNNING)
    ]
    assert decided[0].output is not None and decided[0].output["by"] == "alice"

    replayer = Replayer(workflows=[PerdureWorkflow, DecisionGate], workflow_runner=UnsandboxedWorkflowRunner())
    for part in (events[:7], events):
        result = asyncio.run(replayer.replay_workflow(WorkflowHistory("legacy-approval", part),
                                                      raise_on_replay_failure=False))
        assert result.replay_failure is None, result.replay_failure


# --- the exit guard ----------------------------------------------------------------------------------
def test_hard_exit_flushes_and_keeps_the_exit_code() -> None:
    code = "import sys; from perdure.adapters.temporal import hard_exit; print('done', end=''); hard_exit(3)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (3, b"done")

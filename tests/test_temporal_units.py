"""The Temporal adapter's own logic, without a server: URL and profiles, payloads, attempt counting,
reading outcomes from history events, the exit guard."""

from __future__ import annotations

import subprocess
import sys
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

from perdure.adapters.temporal import PROFILES, TemporalBackend, TemporalDevServer, temporal_binary  # noqa: E402
from perdure.adapters.temporal.activities import _attempt  # noqa: E402
from perdure.adapters.temporal.continuation import (  # noqa: E402
    DEFAULT_MAX_CARRY_BYTES,
    CarriedJournal,
    RunState,
    carried_records,
    continued_input,
)
from perdure.adapters.temporal.history import outcome  # noqa: E402
from perdure.adapters.temporal.payloads import (  # noqa: E402
    FAILED_REASON,
    decode_call,
    encode_call,
    gate_id,
    raw,
    record_json,
    text_of,
)
from perdure.adapters.temporal.settings import PROFILE_ENV  # noqa: E402
from perdure.core.config import backend_class  # noqa: E402
from perdure.core.errors import InvalidBackendURLError  # noqa: E402
from perdure.core.types import ErrorInfo, RunStatus, StepCall, StepKind  # noqa: E402


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


# --- the exit guard ----------------------------------------------------------------------------------
def test_hard_exit_flushes_and_keeps_the_exit_code() -> None:
    code = "import sys; from perdure.adapters.temporal import hard_exit; print('done', end=''); hard_exit(3)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (3, b"done")

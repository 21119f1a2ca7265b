"""restate:// pieces that need no server: the URL, the journal layout and its reading, error mapping.

The journal rows below have the exact shape Restate 1.7's ``sys_journal`` returns (captured from a run).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("restate")

from perdure.adapters.restate import RestateBackend  # noqa: E402
from perdure.adapters.restate.backend import _failure, _Run  # noqa: E402
from perdure.adapters.restate.devserver import RestateDevServer, cache_dir, ensure_restate_server  # noqa: E402
from perdure.adapters.restate.entries import command_name, first_op_from, parse_journal, records  # noqa: E402
from perdure.adapters.restate.http import sql_literal  # noqa: E402
from perdure.adapters.restate.service import declared_options, invocation_retry_policy  # noqa: E402
from perdure.adapters.restate.settings import RETRY_PROFILE_ENV, RestateSettings  # noqa: E402
from perdure.adapters.restate.worker import _options_in  # noqa: E402
from perdure.core.config import open_backend  # noqa: E402
from perdure.core.errors import ConfigurationError, InvalidBackendURLError  # noqa: E402
from perdure.core.runtime import sleep_envelope  # noqa: E402
from perdure.core.types import Envelope, ErrorInfo, RunStatus, StepKind, StepRecord, StepStatus  # noqa: E402


# --- the URL ---------------------------------------------------------------------------------------
def test_url_defaults() -> None:
    s = RestateSettings.from_url("restate://10.0.0.5")
    assert (s.ingress, s.admin, s.deployment, s.service, s.step_timeout, s.retention) == (
        "http://10.0.0.5:8080", "http://10.0.0.5:9070", "http://127.0.0.1:9080", "perdure", 3600.0, None)


def test_url_with_every_part() -> None:
    s = RestateSettings.from_url(
        "restate://127.0.0.1:18080?admin=http://127.0.0.1:19070&deployment=127.0.0.1:19081&service=agents"
        "&step_timeout=7200&retention=2592000"
    )
    assert (s.ingress, s.admin, s.deployment, s.service, s.step_timeout, s.retention) == (
        "http://127.0.0.1:18080", "http://127.0.0.1:19070", "http://127.0.0.1:19081", "agents", 7200.0, 2592000.0)
    assert s.deployment_address == ("127.0.0.1", 19081)


@pytest.mark.parametrize(
    "url",
    ["restate://", "restate://host:8080/path", "restate://host?color=blue", "restate://host?service=no-dash",
     "restate://host?admin=ftp://x:1", "restate://host:notaport", "restate://host?step_timeout=0",
     "restate://host?step_timeout=nan", "restate://host?step_timeout=", "restate://host?retention=0",
     "restate://host?retention=30d", "restate://host?retention=-1"],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidBackendURLError):
        RestateBackend(url)


def test_the_scheme_opens_the_restate_backend() -> None:
    assert isinstance(open_backend("restate://127.0.0.1:18080"), RestateBackend)


# --- journal layout --------------------------------------------------------------------------------
def _run(index: int, completion: int, name: str) -> dict[str, object]:
    return {"index": index, "entry_type": "Command: Run", "name": name,
            "entry_json": json.dumps({"Command": {"Run": {"completion_id": completion, "name": name}}})}


def _sleep(index: int, completion: int, name: str) -> dict[str, object]:
    return {"index": index, "entry_type": "Command: Sleep", "name": name,
            "entry_json": json.dumps({"Command": {"Sleep": {"wake_up_time": 1, "completion_id": completion, "name": name}}})}


def _done(index: int, completion: int, value: bytes | None, kind: str = "Run") -> dict[str, object]:
    body: dict[str, object] = {"completion_id": completion}
    if value is not None:
        body["result"] = {"Success": list(value)}
    return {"index": index, "entry_type": f"Notification: {kind}", "name": None,
            "entry_json": json.dumps({"Notification": {"Completion": {kind: body}}})}


def _env(name: str, ok: bool = True, output: object = None, attempts: int = 1, kind: StepKind = StepKind.STEP) -> bytes:
    error = None if ok else ErrorInfo(type="ConnectionError", message="down")
    return Envelope(name, kind, ok, output, error, attempts).to_json().encode()


def test_command_names_carry_position_kind_and_name() -> None:
    assert command_name(3, StepKind.TOOL, "shop.charge") == "3 tool shop.charge"
    assert command_name(3, StepKind.TOOL, "shop charge #2", "a2") == "3.a2 tool shop charge #2"


def test_records_of_a_journal() -> None:
    pending = json.dumps({"pending": {"approval_id": "ok-3", "name": "ok", "payload": 1, "digest": "d",
                                      "deadline": None}}).encode()
    rows = [
        {"index": 0, "entry_type": "Command: Input", "name": "", "entry_json": "{}"},
        _run(1, 1, "0 step app.a"), _done(2, 1, _env("app.a", output="x")),
        _run(3, 2, "1 tool app.pay"), _done(4, 2, b'{"retry":' + _env("app.pay", ok=False) + b"}"),
        _sleep(5, 3, "1.b1 tool app.pay"), _done(6, 3, None, "Sleep"),
        _run(7, 4, "1.a2 tool app.pay"), _done(8, 4, _env("app.pay", output=5, attempts=2, kind=StepKind.TOOL)),
        _sleep(9, 5, "2 sleep perdure.sleep"), _done(10, 5, None, "Sleep"),
        _run(11, 6, "2.done sleep perdure.sleep"), _done(12, 6, sleep_envelope(0.5).encode()),
        _run(13, 7, "3 approval ok"), _done(14, 7, pending),
        _sleep(15, 8, "3.timeout approval ok"),
    ]
    got = records(parse_journal(rows))
    assert [(r.position, r.name, r.kind, r.status, r.attempts) for r in got] == [
        (0, "app.a", StepKind.STEP, StepStatus.COMPLETED, 1),
        (1, "app.pay", StepKind.TOOL, StepStatus.COMPLETED, 2),
        (2, "perdure.sleep", StepKind.SLEEP, StepStatus.COMPLETED, 1),
        (3, "ok", StepKind.APPROVAL, StepStatus.WAITING, 0),
    ]
    assert got[1].output == 5 and got[2].output == {"seconds": 0.5}
    # a cancelled run shows only what was recorded
    assert [r.position for r in records(parse_journal(rows), recorded_only=True)] == [0, 1, 2]


def test_in_flight_and_retrying_steps_show_as_running() -> None:
    rows = [
        _run(1, 1, "0 step app.a"),  # no completion: in flight
    ]
    assert records(parse_journal(rows)) == [
        StepRecord(position=0, name="app.a", kind=StepKind.STEP, status=StepStatus.RUNNING, attempts=0)]
    rows = [_run(1, 1, "0 step app.a"), _done(2, 1, b'{"retry":' + _env("app.a", ok=False) + b"}"),
            _sleep(3, 2, "0.b1 step app.a")]
    assert records(parse_journal(rows))[0].status is StepStatus.RUNNING
    rows = [_sleep(1, 1, "0 sleep perdure.sleep"), _done(2, 1, None, "Sleep")]  # timer fired, not recorded
    assert records(parse_journal(rows))[0].status is StepStatus.WAITING


def test_first_op_names_what_the_journal_recorded() -> None:
    ops = parse_journal([_run(1, 1, "0 step app.a"), _done(2, 1, _env("app.a")), _run(3, 2, "1 step app.b")])
    first = first_op_from(ops, 1)
    assert first is not None and first.describe() == "step 'app.b'"
    assert first_op_from(ops, 2) is None


# --- reading runs ----------------------------------------------------------------------------------
def test_failures_map_to_status_and_error() -> None:
    assert _failure("[500] ValueError: bad input") == (RunStatus.FAILED, ErrorInfo(type="ValueError", message="bad input"))
    assert _failure("[500] KeyError: ") == (RunStatus.FAILED, ErrorInfo(type="KeyError", message=""))
    assert _failure("[500] KeyError:") == (RunStatus.FAILED, ErrorInfo(type="KeyError", message=""))
    assert _failure("[500] two\nlines: x")[1] == ErrorInfo(type="TerminalError", message="two\nlines: x")
    assert _failure("[409] killed") == (RunStatus.CANCELLED, None)
    assert _failure("[409] cancelled") == (RunStatus.CANCELLED, None)
    assert _failure("[500] something else went wrong")[1] == ErrorInfo(type="TerminalError", message="something else went wrong")


def test_run_reads_its_input_and_output() -> None:
    run = _Run({"id": "inv_1", "target_service_key": "r1", "status": "completed", "completion_result": "success",
                "created_at": "2026-11-23T06:38:35.958Z", "pinned_deployment_id": "dp_1"})
    request = json.dumps({"workflow": "app.flow", "args_json": "{}"}).encode()
    run.add_entry("Command: Input", json.dumps({"Command": {"Input": {"headers": [], "payload": list(request)}}}))
    run.add_entry("Command: Output", json.dumps({"Command": {"Output": {"result": {"Success": list(b'"done"')}}}}))
    info = RestateBackend._info(run, {})
    assert (info.workflow, info.status, info.output) == ("app.flow", RunStatus.SUCCEEDED, "done")
    assert info.created_at == pytest.approx(1795415915.958)


def test_out_of_band_outcome_wins() -> None:
    run = _Run({"id": "inv_1", "target_service_key": "r1", "status": "completed", "completion_result": "failure",
                "completion_failure": "[409] killed"})
    outcome = {"ok": False, "output": None, "error": {"type": "NonDeterminismError", "message": "at 0"}}
    info = RestateBackend._info(run, {"perdure.outcome": json.dumps(outcome)})
    assert (info.status, info.error) == (RunStatus.FAILED, ErrorInfo(type="NonDeterminismError", message="at 0"))


def test_sql_literals_are_escaped() -> None:
    assert sql_literal("it's") == "'it''s'"


# --- profile and dev server ------------------------------------------------------------------------
def test_retry_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RETRY_PROFILE_ENV, raising=False)
    assert invocation_retry_policy() is None
    monkeypatch.setenv(RETRY_PROFILE_ENV, "test")
    policy = invocation_retry_policy()
    assert policy is not None and policy.max_interval is not None and policy.max_interval.total_seconds() <= 0.1


def test_declared_options_change_with_every_option_a_worker_declares(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a restarted worker compares with the options in force: equal for the same URL and retry
    profile, different when any declared option differs, and not fooled by the URL's other parts."""
    monkeypatch.delenv(RETRY_PROFILE_ENV, raising=False)
    base = "restate://127.0.0.1:8080"
    plain = declared_options(RestateSettings.from_url(base))
    assert declared_options(RestateSettings.from_url(base + "?admin=127.0.0.1:9070&service=perdure")) == plain
    others = {declared_options(RestateSettings.from_url(base + q)) for q in ("?retention=2", "?step_timeout=60")}
    monkeypatch.setenv(RETRY_PROFILE_ENV, "test")
    others.add(declared_options(RestateSettings.from_url(base)))
    assert len(others) == 3 and plain not in others
    service = {"name": "perdure", "metadata": {"perdure.options": plain}}
    assert _options_in([{"name": "other"}, service], "perdure") == plain
    assert _options_in([{"name": "perdure", "metadata": {}}], "perdure") == ""  # an older perdure's
    assert _options_in([], "perdure") == ""


def test_dev_server_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PERDURE_CACHE_DIR", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.setenv("PERDURE_RESTATE_SERVER", str(tmp_path / "missing"))
    with pytest.raises(ConfigurationError):
        ensure_restate_server()
    server = RestateDevServer(tmp_path, ingress_port=1, admin_port=2, node_port=3, deployment_port=4)
    env = server.server_env()
    assert env["RESTATE_INGRESS__BIND_ADDRESS"] == "127.0.0.1:1"
    assert env["RESTATE_DEFAULT_RETRY_POLICY__MAX_INTERVAL"] == "100ms"
    assert server.worker_env() == {RETRY_PROFILE_ENV: "test"}
    server.stop()  # never started: a no-op


def test_dev_server_ports_are_kept_per_workdir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from perdure.adapters.restate.devserver import _choose_ports

    monkeypatch.setenv("PERDURE_RESTATE_PORTS", "11,12,13,14")
    assert _choose_ports(tmp_path, [None, None, None, None]) == [11, 12, 13, 14]
    assert _choose_ports(tmp_path, [21, None, None, None]) == [21, 12, 13, 14]
    monkeypatch.delenv("PERDURE_RESTATE_PORTS")
    (tmp_path / "ports.json").write_text("[31, 32, 33, 34]")  # what an earlier start of this workdir used
    assert _choose_ports(tmp_path, [None, None, None, None]) == [31, 32, 33, 34]
    assert len(set(_choose_ports(tmp_path / "new", [None, None, None, None]))) == 4


# --- the SDK internals perdure relies on -----------------------------------------------------------------
def test_the_restate_sdk_internals_perdure_relies_on_still_hold() -> None:
    """Fails when a restate-sdk release changes what adapters/restate uses beyond its public API: the
    progress loop and event queue (progress.py), the VM's replay flag (service.py), VMException
    (journal.py). Run it before allowing a new SDK version in pyproject.toml."""
    import inspect

    from restate._internal import VMException
    from restate.server_context import ServerDurableFuture, ServerInvocationContext
    from restate.server_types import ReceiveChannel
    from restate.vm import FirstCompletedUnresolvedFuture, SingleUnresolvedFuture, VMWrapper

    assert issubclass(VMException, Exception)
    poll = ServerInvocationContext.create_poll_or_cancel_coroutine
    assert inspect.iscoroutinefunction(poll) and list(inspect.signature(poll).parameters) == ["self", "unresolved_future"]
    assert inspect.iscoroutinefunction(ReceiveChannel.enqueue_restate_event)
    # The loop treats this event as "look again" (progress.py wakes the driver with it).
    assert '"restate.run_completed"' in inspect.getsource(poll)
    leaves: list[SingleUnresolvedFuture] = [SingleUnresolvedFuture(1)]
    combined = FirstCompletedUnresolvedFuture(leaves)
    leaves.append(SingleUnresolvedFuture(2))
    assert combined.children is leaves and SingleUnresolvedFuture(2) in combined.children  # read at every call
    assert callable(ServerDurableFuture.is_completed) and "handle" in inspect.signature(ServerDurableFuture).parameters
    assert callable(VMWrapper.is_replaying)


# --- progress.py: one driver for every wait of an invocation ------------------------------------------
class _Future:
    def __init__(self, handle: int) -> None:
        self.handle, self.done = handle, False

    def is_completed(self) -> bool:
        return self.done


class _Ctx:
    """The two SDK calls Progress makes: a poll that returns once a watched future completes (the test
    completes them through ``finish``), and the wake-up event (counted)."""

    def __init__(self) -> None:
        import asyncio

        self.polls: list[list[int]] = []
        self.changed = asyncio.Event()
        self.wakes = 0
        self.receive = self

    async def enqueue_restate_event(self, event: dict[str, object]) -> None:
        assert event["type"] == "restate.run_completed"
        self.wakes += 1
        self.changed.set()

    async def create_poll_or_cancel_coroutine(self, unresolved: object) -> None:
        leaves = unresolved.children  # type: ignore[attr-defined]
        while True:
            self.polls.append([leaf.handle for leaf in leaves])
            if any(f.done for f in self.futures if f.handle in self.polls[-1]):
                return
            self.changed.clear()
            await self.changed.wait()

    def finish(self, f: _Future) -> None:
        f.done = True
        self.changed.set()


def test_progress_wakes_every_waiter_and_leaves_nothing_behind() -> None:
    import asyncio

    from perdure.adapters.restate.progress import Progress

    async def main() -> None:
        ctx = _Ctx()
        a, b, c, promise, timer = (_Future(h) for h in (1, 2, 3, 4, 5))
        ctx.futures = [a, b, c, promise, timer]  # type: ignore[attr-defined]
        p = Progress(ctx)
        order: list[str] = []

        async def waiter(name: str, *fs: _Future) -> None:
            await p.wait(*fs)
            order.append(name)

        tasks = [asyncio.create_task(waiter("a", a)), asyncio.create_task(waiter("b", b)),
                 asyncio.create_task(waiter("c", c)), asyncio.create_task(waiter("approval", promise, timer))]
        await asyncio.sleep(0.01)
        assert sorted(ctx.polls[-1]) == [1, 2, 3, 4, 5] and ctx.wakes == 3  # one driver sees every future
        for f in (c, timer, a, b):  # completions in another order than the waits (the lost-wakeup case)
            ctx.finish(f)
            await asyncio.sleep(0.01)
        await asyncio.wait_for(asyncio.gather(*tasks), 1)
        assert order == ["c", "approval", "a", "b"]
        # The approval's promise (never completed) is not watched any more, and no driver is left polling.
        assert p._waiters == {} and p._leaves == [] and not p._driving and p._task is None

        # A lone waiter cancelled while it drives: nothing stays registered.
        d = _Future(6)
        ctx.futures.append(d)  # type: ignore[attr-defined]
        lone = asyncio.create_task(p.wait(d))
        await asyncio.sleep(0.01)
        lone.cancel()
        await asyncio.gather(lone, return_exceptions=True)
        assert p._waiters == {} and not p._driving

    asyncio.run(main())


def test_a_payload_limit_restate_cannot_carry_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """Restate refuses messages over 32 MiB and retries the invocation for ever: a perdure limit above it
    would let such a value through to that loop instead of failing it as PayloadTooLargeError."""
    import perdure

    url = "restate://127.0.0.1:1?admin=127.0.0.1:2"
    monkeypatch.setenv("PERDURE_MAX_PAYLOAD_BYTES", str(40_000_000))
    with pytest.raises(ConfigurationError, match="over what restate:// can carry"):
        perdure.Client(url)
    with pytest.raises(ConfigurationError, match="over what restate:// can carry"):
        import asyncio

        asyncio.run(perdure.serve(url))
    monkeypatch.setenv("PERDURE_MAX_PAYLOAD_BYTES", str(8_000_000))
    perdure.Client(url)  # no connection made: the limit is all that is checked


def test_a_worker_that_cannot_reach_the_admin_api_says_so(tmp_path: Path) -> None:
    """No transport traceback: a ConfigurationError naming the admin address, and the CLI's exit code 2."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        deployment = s.getsockname()[1]
    url = f"restate://127.0.0.1:{port}?admin=127.0.0.1:{port}&deployment=127.0.0.1:{deployment}"
    script = ("import asyncio, perdure.adapters.restate.worker as w\n"
              "w_is = w.registered_options\n"
              "async def quick(http, settings, patience=10.0): return await w_is(http, settings, 0.5)\n"
              "w.registered_options = quick\n"
              f"from perdure.cli.main import main; raise SystemExit(main(['worker', {url!r}]))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"127.0.0.1:{port} does not answer" in done.stderr and "Traceback" not in done.stderr, done.stderr

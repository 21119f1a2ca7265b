"""perdure on Temporal with a real Temporal server and real worker processes, SIGKILLed for real.

The server is the Temporal CLI dev server started by perdure's own ``TemporalDevServer`` (loopback, ports
17300-17319). Workers are ``python -m perdure worker URL --app temporal_app`` processes; step bodies pass
gate files (tests/temporal_app.py) so a test can hold a worker inside a step and SIGKILL it there.
Runs that span several Temporal runs (continue-as-new) are made with a small ``continue_as_new_after`` in
the client's URL. Timings are printed (``-s``), never asserted.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("temporalio")

from temporalio import workflow  # noqa: E402

import perdure  # noqa: E402
from perdure.adapters.memory import MemoryBackend  # noqa: E402
from perdure.adapters.temporal import TemporalBackend, TemporalDevServer, hard_exit  # noqa: E402
from perdure.adapters.temporal.history import steps_in_flight  # noqa: E402
from perdure.core.errors import (  # noqa: E402
    ApprovalAlreadyDecidedError,
    ConfigurationError,
    NonDeterminismError,
    RunCancelledError,
    RunConflictError,
    RunFailedError,
    RunNotFoundError,
)
from perdure.core.types import RunStatus, StepKind, StepStatus  # noqa: E402

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
import temporal_app as app  # noqa: E402

pytestmark = pytest.mark.engine("temporal")
PATIENCE = 60.0
PORTS = range(17300, 17320)


@workflow.defn(name="plain.Noop", sandboxed=False)
class PlainNoop:
    """A plain Temporal workflow, not perdure's (a neighbour in the namespace)."""

    @workflow.run
    async def run(self) -> None:
        return None


@pytest.fixture(scope="session", autouse=True)
def _exit_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    """This process used the Temporal SDK, which can crash at interpreter exit: leave with os._exit."""
    yield
    session = request.session
    atexit.register(lambda: hard_exit(int(getattr(session, "exitstatus", 0) or 0)))


@pytest.fixture(scope="module")
def server() -> Iterator[TemporalDevServer]:
    from perdure.adapters.temporal.devserver import _port_open

    port = next((p for p in PORTS if not _port_open(p)), None)
    if port is None:
        pytest.skip(f"no free port in {PORTS}")
    ds = TemporalDevServer(Path(tempfile.mkdtemp(prefix="perdure-temporal-test-")), port=port)
    ds.start()
    try:
        yield ds
    finally:
        ds.stop()
        shutil.rmtree(ds.workdir, ignore_errors=True)


class Workers:
    """Worker processes of one test, all killed at the end."""

    def __init__(self, url: str, root: Path) -> None:
        self.url, self.root = url, root
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, variant: str = "base", url: str | None = None) -> subprocess.Popen[bytes]:
        log = self.root / f"worker-{len(self.procs)}.log"
        env = {**os.environ, "PERDURE_TT_DIR": str(self.root), "PERDURE_TT_VARIANT": variant,
               "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "perdure", "worker", url or self.url, "--app", "temporal_app"],
                                    stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.procs.append(proc)
        deadline = time.monotonic() + PATIENCE
        while b"perdure worker ready" not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"worker did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.01)
        return proc

    def kill(self, pid: int) -> float:
        """SIGKILL one worker; returns the time of the kill."""
        at = time.time()
        os.kill(pid, signal.SIGKILL)
        for p in self.procs:
            if p.pid == pid:
                p.wait()
        return at

    def kill_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(self.root.glob("worker-*.log")))


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PERDURE_TT_DIR", str(tmp_path))  # gates, for the in-process memory engine too
    return tmp_path


@pytest.fixture
def workers(server: TemporalDevServer, root: Path) -> Iterator[Workers]:
    w = Workers(server.url, root)
    try:
        yield w
    finally:
        w.kill_all()


def rid(label: str) -> str:
    return f"tt-{label}-{uuid.uuid4().hex[:8]}"


async def wait_arrivals(root: Path, gate: str, count: int = 1) -> list[tuple[int, float]]:
    deadline = time.monotonic() + PATIENCE
    while len(found := app.arrivals(root, gate)) < count:
        assert time.monotonic() < deadline, f"gate {gate}: {len(found)} of {count} arrivals"
        await asyncio.sleep(0.005)
    return found


async def wait_for(client: perdure.Client, run_id: str, pred: Any) -> perdure.RunInfo:
    deadline = time.monotonic() + PATIENCE
    while not pred(info := await client.status(run_id)):
        assert time.monotonic() < deadline, f"{run_id}: still {info.status.value}"
        await asyncio.sleep(0.02)
    return info


def records(rs: list[perdure.StepRecord]) -> list[dict[str, Any]]:
    out = []
    for r in rs:
        d = r.model_dump(mode="json")
        if r.name == "perdure.now":
            d["output"] = "<time>"
        out.append(d)
    return out


# --- the contract, checked against the reference engine ---------------------------------------------
async def _every_kind(client: perdure.Client, run_id: str) -> tuple[Any, list[dict[str, Any]], perdure.RunInfo]:
    await client.start(app.every_kind, "x", run_id=run_id)
    waiting = await wait_for(client, run_id, lambda i: i.pending_approval is not None)
    assert waiting.pending_approval is not None
    await client.approve(run_id, waiting.pending_approval.approval_id, by="alice")
    return await client.result(run_id, timeout=PATIENCE), records(await client.steps(run_id)), waiting


async def _reference(run_id: str, start: Any) -> Any:
    """What the memory engine (the executable contract) does with ``start(client)``."""
    backend = MemoryBackend(f"memory://{run_id}")
    task = asyncio.create_task(backend.serve())
    try:
        async with perdure.Client(backend) as client:
            return await start(client)
    finally:
        task.cancel()


@pytest.mark.parametrize("continued", [False, True], ids=["one-history", "continued-as-new"])
def test_every_kind_of_record_matches_the_reference_engine(
    server: TemporalDevServer, workers: Workers, continued: bool
) -> None:
    """With ``continue_as_new_after=2`` the run continues as new three times, so every kind of record
    (and the tool's idempotency key, recorded time, uuid and random) is also read from a carried journal."""
    workers.start()
    run_id = rid("every")
    url = server.url + ("&continue_as_new_after=2" if continued else "")

    async def on_temporal() -> tuple[Any, list[dict[str, Any]], perdure.RunInfo]:
        async with perdure.Client(url) as client:
            return await _every_kind(client, run_id)

    ref = asyncio.run(_reference(run_id, lambda client: _every_kind(client, run_id)))
    got = asyncio.run(on_temporal())
    assert got[0] == ref[0]
    assert got[1] == ref[1]
    assert got[2].status is RunStatus.WAITING
    assert got[2].pending_approval.model_dump(exclude={"deadline"}) == ref[2].pending_approval.model_dump(exclude={"deadline"})
    kinds = [r["kind"] for r in got[1]]
    assert kinds == ["step", "tool", "step", "step", "sleep", "step", "approval"]
    assert len(asyncio.run(temporal_runs(server, run_id))) == (4 if continued else 1)


async def temporal_runs(server: TemporalDevServer, run_id: str) -> list[Any]:
    """The started events of the Temporal runs of one perdure run, oldest first: followed from the latest
    run back through ``continued_execution_run_id`` (histories are exact; visibility lags)."""
    client = await TemporalBackend(server.url).client()
    started, temporal_run = [], None
    while True:
        handle = client.get_workflow_handle(run_id, run_id=temporal_run)
        first = await anext(aiter(handle.fetch_history_events()))
        attrs = first.workflow_execution_started_event_attributes
        started.append(first)
        temporal_run = attrs.continued_execution_run_id or None
        if temporal_run is None:
            return started[::-1]


# --- crashes ---------------------------------------------------------------------------------------
def test_kill_inside_a_step_reruns_only_that_step_on_the_standby_worker(workers: Workers, root: Path) -> None:
    workers.start()
    workers.start()
    run_id = rid("kill")
    app.arm(root, f"{run_id}:b")

    async def main() -> tuple[str, float]:
        async with perdure.Client(workers.url) as client:
            await client.start(app.pipeline, "x", run_id=run_id)
            (pid, _), = await wait_arrivals(root, f"{run_id}:b")
            app.release(root, f"{run_id}:b")
            killed = workers.kill(pid)
            rerun = (await wait_arrivals(root, f"{run_id}:b", 2))[1]
            assert rerun[0] != pid
            print(f"\nrecovery: step re-ran on the standby worker {rerun[1] - killed:.2f} s after the SIGKILL")
            return await client.result(run_id, timeout=PATIENCE), rerun[1] - killed

    output, _ = asyncio.run(main())
    assert output == "x>a>b"
    assert len(app.arrivals(root, f"{run_id}:a")) == 1  # completed before the kill: never again


def test_a_step_blocking_its_event_loop_past_the_heartbeat_timeout_is_rerun_and_the_worker_says_why(
    workers: Workers, root: Path
) -> None:
    """Temporal cannot tell a blocked worker from a dead one: the step runs again although its first
    attempt was alive. The worker's log names the step and the cause."""
    workers.start()
    run_id = rid("blocks")

    async def main() -> int:
        async with perdure.Client(workers.url) as client:
            await client.start(app.blocking, 1.5, run_id=run_id)  # the test profile's timeout is 0.4 s
            return await client.result(run_id, timeout=PATIENCE)

    # The output is a later attempt's: the first one's completion was refused. (Attempts the worker took
    # while its loop was blocked time out too, so it may be the third or fourth.)
    assert asyncio.run(main()) >= 2
    log = (root / "worker-0.log").read_text()
    silent = re.search(r"step 'tt\.blocks_once': no heartbeat could be sent for ([0-9.]+) s", log)
    assert silent is not None and float(silent.group(1)) >= 1.5, log
    assert "past the heartbeat timeout (0.4 s) Temporal runs the step again" in log


def test_kill_between_steps_then_restart(workers: Workers, root: Path) -> None:
    first = workers.start()
    run_id = rid("between")
    app.arm(root, f"{run_id}:b")

    async def main() -> Any:
        async with perdure.Client(workers.url) as client:
            await client.start(app.pipeline, "x", run_id=run_id)
            await wait_arrivals(root, f"{run_id}:b")
            killed = workers.kill(first.pid)
            app.release(root, f"{run_id}:b")
            workers.start()
            rerun = (await wait_arrivals(root, f"{run_id}:b", 2))[1][1]
            print(f"\nrecovery with a fresh worker process: {rerun - killed:.2f} s from SIGKILL to the re-run")
            return await client.result(run_id, timeout=PATIENCE), await client.steps(run_id)

    output, steps = asyncio.run(main())
    assert output == "x>a>b"
    assert [(s.name, s.status) for s in steps] == [("tt.a", StepStatus.COMPLETED), ("tt.b", StepStatus.COMPLETED)]
    assert len(app.arrivals(root, f"{run_id}:a")) == 1


def test_local_steps_rerun_after_a_kill(server: TemporalDevServer, workers: Workers, root: Path) -> None:
    url = server.url + "&steps=local"
    first = workers.start(url=url)
    run_id = rid("local")
    app.arm(root, f"{run_id}:b")

    async def main() -> Any:
        async with perdure.Client(url) as client:
            await client.start(app.pipeline, "x", run_id=run_id)
            await wait_arrivals(root, f"{run_id}:b")
            workers.kill(first.pid)
            app.release(root, f"{run_id}:b")
            workers.start(url=url)
            return await client.result(run_id, timeout=PATIENCE), await client.steps(run_id)

    output, steps = asyncio.run(main())
    assert output == "x>a>b"
    assert [s.name for s in steps] == ["tt.a", "tt.b"]
    assert len(app.arrivals(root, f"{run_id}:b")) == 2


@pytest.mark.parametrize("steps", ["activity", "local"])
def test_a_step_replaced_while_in_flight_never_runs_again(server: TemporalDevServer, workers: Workers, root: Path,
                                                          steps: str) -> None:
    """Killed inside ``b``, restarted on code that calls ``d`` there. An activity is in the history once
    scheduled: the restarted worker's replay check ends the run with NonDeterminismError before the old
    step's retry can run ``b`` again. A local activity is recorded only once it completed: ``d`` runs, as
    on the memory engine. (TemporalBackend.journals_step_start says which.)"""
    url = server.url + f"&steps={steps}"
    first = workers.start(url=url)
    run_id = rid("replaced")
    app.arm(root, f"{run_id}:b")

    async def main() -> perdure.RunInfo:
        async with perdure.Client(url) as client:
            await client.start(app.pipeline, "x", run_id=run_id)
            await wait_arrivals(root, f"{run_id}:b")
            workers.kill(first.pid)
            app.release(root, f"{run_id}:b")
            handle = (await TemporalBackend(url).client()).get_workflow_handle(run_id)
            in_flight = steps_in_flight([ev async for ev in handle.fetch_history_events()])
            # what the replay check compares with the new code's step there (local steps are not in the history)
            assert in_flight == ({1: ("step", "tt.b")} if steps == "activity" else {})
            workers.start(url=url, variant="changed")
            with contextlib.suppress(RunFailedError):
                await client.result(run_id, timeout=PATIENCE)
            return await client.status(run_id)

    info = asyncio.run(main())
    assert len(app.arrivals(root, f"{run_id}:b")) == 1
    if TemporalBackend(url).journals_step_start:
        assert info.status is RunStatus.FAILED and info.error is not None
        assert (info.error.type, info.error.message) == (
            "NonDeterminismError", str(NonDeterminismError(1, "step 'tt.b'", "step 'tt.d'")))
        assert app.arrivals(root, f"{run_id}:d") == []
    else:
        assert (info.status, info.output) == (RunStatus.SUCCEEDED, "x>a>d")
        assert len(app.arrivals(root, f"{run_id}:d")) == 1


# --- continue-as-new ------------------------------------------------------------------------------
def test_kill_after_continue_as_new_reruns_only_the_step_in_flight(
    server: TemporalDevServer, workers: Workers, root: Path
) -> None:
    """7 counted steps with ``continue_as_new_after=3``: the run is in its third Temporal run when its
    worker is killed inside ``b``. A new worker replays it from the carried journal: no counted step runs
    again, ``steps()`` lists all 8 positions as the reference engine does, the status stays RUNNING."""
    url = server.url + "&continue_as_new_after=3"
    first = workers.start(url=url)
    run_id = rid("continued")
    app.arm(root, f"{run_id}:b")

    async def main() -> tuple[Any, list[dict[str, Any]], perdure.RunInfo]:
        async with perdure.Client(url) as client:
            await client.start(app.counted, 7, run_id=run_id)
            (pid, _), = await wait_arrivals(root, f"{run_id}:b")
            assert pid == first.pid
            workers.kill(pid)
            during = await client.status(run_id)  # no worker alive, third Temporal run
            app.release(root, f"{run_id}:b")
            workers.start(url=url)
            return await client.result(run_id, timeout=PATIENCE), records(await client.steps(run_id)), during

    output, steps, during = asyncio.run(main())
    assert output["seen"] == list(range(7)) and output["b"] == "end>b"
    assert [s["position"] for s in steps] == list(range(8))
    for i in range(7):  # recorded before the kill, in earlier Temporal runs: never again
        assert len(app.arrivals(root, f"{run_id}:count{i}")) == 1
    assert len(app.arrivals(root, f"{run_id}:b")) == 2  # the step in flight ran again
    ref_output, ref_steps = asyncio.run(_reference(run_id, lambda client: _counted(client, run_id)))
    assert output == ref_output  # uuid4 included: the run's random draws replay through the carried part
    assert steps == ref_steps
    runs = asyncio.run(temporal_runs(server, run_id))
    assert len(runs) == 3  # positions 0-2, 3-5, 6-7
    assert during.status is RunStatus.RUNNING
    first_start = runs[0].event_time.seconds + runs[0].event_time.nanos / 1e9
    assert abs(during.created_at - first_start) < 1e-3  # the perdure run's start, not the latest Temporal run's


async def _counted(client: perdure.Client, run_id: str) -> tuple[Any, list[dict[str, Any]]]:
    await client.start(app.counted, 7, run_id=run_id)
    return await client.result(run_id, timeout=PATIENCE), records(await client.steps(run_id))


def test_changed_code_at_a_carried_position_fails_with_nondeterminism(
    server: TemporalDevServer, workers: Workers
) -> None:
    """Step 0 is carried into the second Temporal run, which waits for an approval; a worker on code that
    calls another step at position 0 fails the run with perdure's NonDeterminismError."""
    url = server.url + "&continue_as_new_after=1"
    first = workers.start(url=url)
    run_id = rid("carried-nondet")

    async def main() -> perdure.RunInfo:
        async with perdure.Client(url) as client:
            await client.start(app.carried_then_wait, run_id=run_id)
            await wait_for(client, run_id, lambda i: i.pending_approval is not None)
            workers.kill(first.pid)
            workers.start(variant="changed", url=url)  # its replay check fails the run
            return await client.backend.wait(run_id, PATIENCE)

    info = asyncio.run(main())
    assert len(asyncio.run(temporal_runs(server, run_id))) == 2
    assert info.status is RunStatus.FAILED
    assert info.error is not None and info.error.type == "NonDeterminismError"


@pytest.mark.parametrize("loser", ["sleep", "step"])
def test_a_cancelled_operation_does_not_hold_up_continuing_as_new(
    server: TemporalDevServer, workers: Workers, root: Path, loser: str
) -> None:
    """The loser of a race is cancelled and never gets an outcome; the cut comes right after it. The run
    continues as new anyway (the cancelled position is carried as such: the next Temporal run's replay
    waits there until the workflow cancels it again) and ends as on the reference engine."""
    url = server.url + "&continue_as_new_after=2"
    workers.start(url=url)
    run_id = rid(f"race-{loser}")
    if loser == "step":
        app.arm(root, f"{run_id}:a")

    async def run(client: perdure.Client) -> Any:
        await client.start(app.race, loser, run_id=run_id)
        return await client.result(run_id, timeout=PATIENCE)

    async def main() -> tuple[Any, list[tuple[int, str]]]:
        async with perdure.Client(url) as client:
            output = await run(client)
            return output, [(s.position, s.name) for s in await client.steps(run_id)]

    try:
        output, steps = asyncio.run(main())
        assert output == asyncio.run(_reference(run_id, run))
        assert output == {"winner": "step" if loser == "sleep" else "sleep", "loser_cancelled": True, "then": "end>b"}
    finally:
        app.release(root, f"{run_id}:a")
    assert steps == [(1, "tt.a") if loser == "sleep" else (0, "perdure.sleep"), (2, "tt.b")]
    assert len(asyncio.run(temporal_runs(server, run_id))) == 2
    assert len(app.arrivals(root, f"{run_id}:a")) == 2  # once on each engine: never again in a later Temporal run


def test_a_journal_too_large_to_carry_stays_in_one_history(
    server: TemporalDevServer, workers: Workers, root: Path
) -> None:
    """``max_carry_bytes`` below any journal: the run never continues as new (it says why in the worker's
    log) and completes in one Temporal run, as a run did before continue-as-new existed."""
    url = server.url + "&continue_as_new_after=2&max_carry_bytes=1"
    workers.start(url=url)
    run_id = rid("too-large")

    async def main() -> tuple[Any, list[perdure.StepRecord]]:
        async with perdure.Client(url) as client:
            await client.start(app.counted, 5, run_id=run_id)
            return await client.result(run_id, timeout=PATIENCE), await client.steps(run_id)

    output, steps = asyncio.run(main())
    assert output["seen"] == list(range(5))
    assert [s.name for s in steps] == ["tt.count"] * 5 + ["tt.b"]
    assert len(asyncio.run(temporal_runs(server, run_id))) == 1
    assert "cannot continue as new" in workers.logs()


def test_temporal_suggestion_continues_runs_and_a_history_over_the_limit_fails_typed(root: Path) -> None:
    """On a server whose history limits are tiny (40 events: continue-as-new suggested, 60: the limit),
    a 30-step run with no step threshold continues as new when Temporal suggests it and succeeds; the same
    run unable to carry its journal (``max_carry_bytes=1``) is ended by Temporal at the limit and reads
    FAILED with ``HistoryLimitError`` -- never CANCELLED."""
    from perdure.adapters.temporal.devserver import _port_open

    port = next((p for p in PORTS if not _port_open(p)), None)
    if port is None:
        pytest.skip(f"no free port in {PORTS}")
    limits = {"limit.historyCount.suggestContinueAsNew": "40", "limit.historyCount.warn": "50",
              "limit.historyCount.error": "60"}
    ds = TemporalDevServer(root / "limited", port=port, persistent=False, dynamic_config=limits)
    ds.start()
    workers = Workers(ds.url, root)
    try:
        workers.start(url=ds.url + "&continue_as_new_after=0")

        async def main(options: str) -> tuple[perdure.RunInfo, int]:
            async with perdure.Client(ds.url + options) as client:
                run_id = await client.start(app.steps, 30)
                info = await client.backend.wait(run_id, PATIENCE)
                return info, len(await temporal_runs(ds, run_id))

        info, runs = asyncio.run(main("&continue_as_new_after=0"))
        assert (info.status, info.output) == (RunStatus.SUCCEEDED, sum(range(30)))
        assert runs > 1
        info, runs = asyncio.run(main("&continue_as_new_after=0&max_carry_bytes=1"))
        assert info.status is RunStatus.FAILED and runs == 1
        assert info.error is not None and info.error.type == "HistoryLimitError"
    finally:
        workers.kill_all()
        ds.stop()


# --- approvals -------------------------------------------------------------------------------------
def test_decision_sent_with_no_worker_is_kept_and_a_second_is_refused(workers: Workers, root: Path) -> None:
    first = workers.start()
    run_id = rid("approve")

    async def main() -> tuple[Any, perdure.RunInfo]:
        async with perdure.Client(workers.url) as client:
            await client.start(app.approval, run_id=run_id)
            info = await wait_for(client, run_id, lambda i: i.pending_approval is not None)
            workers.kill(first.pid)
            shown = await client.status(run_id)  # read from the run's memo: no worker needed
            assert shown.status is RunStatus.WAITING and shown.pending_approval == info.pending_approval
            aid = info.pending_approval.approval_id
            await client.approve(run_id, aid, by="alice")
            with pytest.raises(ApprovalAlreadyDecidedError):
                await client.reject(run_id, aid, by="mallory")
            workers.start()
            return await client.result(run_id, timeout=PATIENCE), shown

    output, shown = asyncio.run(main())
    assert output == {"approved": True, "by": "alice"}
    assert shown.pending_approval is not None and shown.pending_approval.approval_id == "ship-0"


async def _two_approvals(client: perdure.Client, run_id: str) -> tuple[list[str], Any, list[dict[str, Any]]]:
    await client.start(app.two_approvals, run_id=run_id)
    shown: list[str] = []
    for approve in (True, False):  # decide whichever is shown, then the other one
        info = await wait_for(client, run_id, lambda i: i.pending_approval is not None
                              and i.pending_approval.approval_id not in shown)
        assert info.pending_approval is not None
        shown.append(info.pending_approval.approval_id)
        await (client.approve if approve else client.reject)(run_id, shown[-1], by="alice")
    return shown, await client.result(run_id, timeout=PATIENCE), records(await client.steps(run_id))


def test_concurrent_approvals_are_each_shown_and_decided_as_on_the_reference_engine(workers: Workers) -> None:
    """Deciding one of two pending approvals leaves the other shown (its own memo key) and decidable."""
    workers.start()
    run_id = rid("two-approvals")

    async def main() -> tuple[list[str], Any, list[dict[str, Any]]]:
        async with perdure.Client(workers.url) as client:
            return await _two_approvals(client, run_id)

    got = asyncio.run(main())
    assert got == asyncio.run(_reference(run_id, lambda client: _two_approvals(client, run_id)))
    assert sorted(got[0]) == ["first-0", "second-1"]


def test_a_pending_approval_under_the_earlier_single_memo_key_is_cleared_when_decided(
    server: TemporalDevServer, workers: Workers
) -> None:
    """A run that an earlier perdure left with its pending approval under the one key ``perdure.pending``
    (made here with that memo at start): shown while pending, and no longer once decided on a worker of
    today's code."""
    from perdure.adapters.temporal.payloads import MEMO_PENDING_LEGACY, raw

    workers.start()
    run_id = rid("legacy-memo")

    async def main() -> tuple[perdure.RunInfo, perdure.RunInfo]:
        async with perdure.Client(workers.url) as client:
            backend = client.backend
            assert isinstance(backend, TemporalBackend)
            legacy = {"approval_id": "ship-0", "name": "ship", "payload": {"n": 1}, "digest": "0" * 64,
                      "deadline": None, "position": 0}
            await (await backend.client()).start_workflow(
                "tt.approval", args=[raw("{}"), raw(backend.settings.run_state().to_json())], id=run_id,
                task_queue=backend.settings.task_queue, memo={MEMO_PENDING_LEGACY: legacy})
            before = await client.status(run_id)
            waiting = await wait_for(client, run_id, lambda i: i.status is RunStatus.WAITING
                                     and i.pending_approval is not None and i.pending_approval.digest != "0" * 64)
            assert waiting.pending_approval is not None and waiting.pending_approval.approval_id == "ship-0"
            await client.approve(run_id, "ship-0", by="alice")
            await client.result(run_id, timeout=PATIENCE)
            return before, await client.status(run_id)

    before, after = asyncio.run(main())
    assert before.pending_approval is not None and before.pending_approval.approval_id == "ship-0"
    assert after.status is RunStatus.SUCCEEDED and after.pending_approval is None
    assert asyncio.run(_memo(workers.url, run_id)).get(MEMO_PENDING_LEGACY) is None


async def _memo(url: str, run_id: str) -> dict[str, Any]:
    backend = TemporalBackend(url)
    return dict(await (await (await backend.client()).get_workflow_handle(run_id).describe()).memo())


def test_a_cancelled_approval_is_no_longer_pending(workers: Workers, root: Path) -> None:
    """An approval whose task the workflow cancelled can never be decided: it leaves the memo, so once the
    next approval is decided the run is RUNNING, not WAITING for the cancelled one."""
    workers.start()
    run_id = rid("cancelled-approval")
    app.arm(root, f"{run_id}:b")

    async def main() -> tuple[list[str], perdure.RunInfo]:
        async with perdure.Client(workers.url) as client:
            await client.start(app.race_approval, run_id=run_id)
            await wait_for(client, run_id, lambda i: i.pending_approval is not None
                           and i.pending_approval.approval_id == "next-2")
            await client.approve(run_id, "next-2")
            await wait_arrivals(root, f"{run_id}:b")
            memo = await _memo(workers.url, run_id)
            return [k for k in memo if k.startswith("perdure.pending")], await client.status(run_id)

    try:
        pending, info = asyncio.run(main())
    finally:
        app.release(root, f"{run_id}:b")
    assert pending == []
    assert info.status is RunStatus.RUNNING and info.pending_approval is None


def test_approval_timeout(workers: Workers) -> None:
    workers.start()

    async def main() -> Any:
        async with perdure.Client(workers.url) as client:
            run_id = await client.start(app.approval, timeout=0.3)
            return await client.result(run_id, timeout=PATIENCE), await client.steps(run_id)

    output, steps = asyncio.run(main())
    assert output == {"timed_out": True}
    assert steps[0].kind is StepKind.APPROVAL and steps[0].status is StepStatus.FAILED
    assert steps[0].error is not None and steps[0].error.type == "ApprovalTimeoutError"


@pytest.mark.parametrize(("sync", "steps"), [(False, "activity"), (True, "activity"), (False, "local")],
                         ids=["async-body", "sync-body", "local-activity"])
def test_a_step_slower_than_the_step_timeout_fails_with_step_timeout_error_under_its_retry_policy(
    workers: Workers, root: Path, sync: bool, steps: str
) -> None:
    """The worker's ``step_timeout=1``: each attempt of a 5 s step is cancelled after 1 s and fails with
    StepTimeoutError; the step's policy (2 attempts) ends it, and the workflow catches StepFailedError.
    Before, Temporal's start-to-close cut the attempt off, the next attempt took that for a crash and
    started again from attempt 1: a step always slower than the timeout ran forever."""
    workers.start(url=workers.url + f"&step_timeout=1&steps={steps}")
    slow_id, fast_id = rid("slow"), rid("fast")

    async def main() -> tuple[Any, Any, list[perdure.StepRecord]]:
        async with perdure.Client(workers.url) as client:
            await client.start(app.slow_steps, 5.0, sync, run_id=slow_id)
            await client.start(app.slow_steps, 0.05, sync, run_id=fast_id)
            slow = await client.result(slow_id, timeout=PATIENCE)
            return slow, await client.result(fast_id, timeout=PATIENCE), await client.steps(slow_id)

    slow, fast, steps = asyncio.run(main())
    assert fast == {"ok": 0.05}
    assert slow["error_type"] == "StepTimeoutError" and slow["attempts"] == 2, slow
    assert "ran past the step timeout of 1 s" in slow["message"]
    name = "tt.slow_sync" if sync else "tt.slow"
    assert [(r.name, r.status, r.attempts) for r in steps] == [(name, StepStatus.FAILED, 2)]
    assert len(app.arrivals(root, f"{slow_id}:{name.removeprefix('tt.')}")) == 2


# --- nondeterminism, failures, cancel, start ---------------------------------------------------------
def test_sleep_replaced_by_a_step_fails_with_nondeterminism(workers: Workers, root: Path) -> None:
    """Temporal's own history check (a timer where the code now schedules an activity) -> perdure's type."""
    first = workers.start()
    run_id = rid("nondet")

    async def main() -> perdure.RunInfo:
        async with perdure.Client(workers.url) as client:
            await client.start(app.sleeper, 30.0, run_id=run_id)
            await wait_arrivals(root, f"{run_id}:a")
            deadline = time.monotonic() + PATIENCE
            while not any(r.kind is StepKind.SLEEP for r in await client.steps(run_id)):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            workers.kill(first.pid)
            workers.start(variant="changed")  # its replay check finds the run broken and wakes it
            return await client.backend.wait(run_id, PATIENCE)

    info = asyncio.run(main())
    assert info.status is RunStatus.FAILED
    assert info.error is not None and info.error.type == "NonDeterminismError"


def test_exception_in_workflow_code_fails_the_run(workers: Workers) -> None:
    workers.start()

    async def main() -> None:
        async with perdure.Client(workers.url) as client:
            run_id = await client.start(app.broken, "boom")
            with pytest.raises(RunFailedError) as err:
                await client.result(run_id, timeout=PATIENCE)
            assert (err.value.error_type, err.value.message) == ("ValueError", "boom")

    asyncio.run(main())


def test_a_workflow_task_too_large_for_the_server_fails_typed_not_cancelled(workers: Workers) -> None:
    """5 steps of 900 KB arguments started together: each value is under perdure's 1 MiB limit, their
    workflow task is over the server's 4 MiB gRPC limit, and the server terminates the run
    (``GrpcMessageTooLarge``). That is a FAILED run with ``PayloadTooLargeError``, never a cancel."""
    workers.start()

    async def main() -> perdure.RunInfo:
        async with perdure.Client(workers.url) as client:
            run_id = await client.start(app.wide, 5, 900_000)
            with pytest.raises(RunFailedError) as err:
                await client.result(run_id, timeout=PATIENCE)
            assert err.value.error_type == "PayloadTooLargeError"
            return await client.status(run_id)

    info = asyncio.run(main())
    assert info.status is RunStatus.FAILED
    assert info.error is not None and "GrpcMessageTooLarge" in info.error.message


def test_cancel_with_no_worker_alive(workers: Workers, root: Path) -> None:
    first = workers.start()
    run_id = rid("cancel")
    app.arm(root, f"{run_id}:b")

    async def main() -> None:
        async with perdure.Client(workers.url) as client:
            await client.start(app.pipeline, "x", run_id=run_id)
            await wait_arrivals(root, f"{run_id}:b")
            workers.kill(first.pid)
            await client.cancel(run_id)
            assert (await client.status(run_id)).status is RunStatus.CANCELLED  # at once, no worker needed
            app.release(root, f"{run_id}:b")
            workers.start()
            await asyncio.sleep(1.5)  # a wrongly continuing run would re-run b now
            with pytest.raises(RunCancelledError):
                await client.result(run_id)
            assert [s.name for s in await client.steps(run_id)] == ["tt.a"]
            await client.cancel(run_id)  # cancelling a finished run does nothing

    asyncio.run(main())
    assert len(app.arrivals(root, f"{run_id}:b")) == 1


def test_idempotent_start_conflict_and_listing(workers: Workers) -> None:
    workers.start()
    run_id = rid("idem")

    async def main() -> None:
        async with perdure.Client(workers.url) as client:
            assert await client.start(app.pipeline, "x", run_id=run_id) == run_id
            assert await client.start(app.pipeline, "other", run_id=run_id) == run_id
            assert await client.result(run_id, timeout=PATIENCE) == "x>a>b"
            assert await client.start(app.pipeline, "x", run_id=run_id) == run_id  # finished: same run
            with pytest.raises(RunConflictError):
                await client.start(app.broken, "y", run_id=run_id)
            listed = {r.run_id: r for r in await client.runs(limit=100)}
            assert listed[run_id].status is RunStatus.SUCCEEDED and listed[run_id].output == "x>a>b"
            assert not any(r.startswith("perdure.decision/") for r in listed)
            with pytest.raises(RunNotFoundError):
                await client.status(rid("missing"))

    asyncio.run(main())


def test_other_workflows_of_the_namespace_are_not_runs(server: TemporalDevServer, workers: Workers) -> None:
    """A plain Temporal workflow (not perdure's) in the namespace: ``runs()`` lists only this backend's task
    queue and leaves it out, ``status()`` says it is no run, a start with its id is a conflict. A perdure
    run of another task queue (another app) is not listed, and still reads as a run."""
    from temporalio.client import Client as TemporalClient
    from temporalio.worker import UnsandboxedWorkflowRunner, Worker

    workers.start()
    foreign, other_app = rid("foreign"), rid("other-app")

    async def main() -> None:
        temporal = await TemporalClient.connect(f"127.0.0.1:{server.port}")
        queue = f"foreign-{uuid.uuid4().hex[:6]}"
        async with Worker(temporal, task_queue=queue, workflows=[PlainNoop], workflow_runner=UnsandboxedWorkflowRunner()):
            await temporal.execute_workflow("plain.Noop", id=foreign, task_queue=queue)
        async with perdure.Client(server.url.replace("task_queue=perdure", "task_queue=other-app")) as other:
            await other.start(app.pipeline, "y", run_id=other_app)  # no worker polls it: stays PENDING
        async with perdure.Client(workers.url) as client:
            run_id = await client.start(app.pipeline, "x")
            assert await client.result(run_id, timeout=PATIENCE) == "x>a>b"
            listed = [r.run_id for r in await client.runs(limit=1000)]
            assert run_id in listed and foreign not in listed and other_app not in listed
            with pytest.raises(RunNotFoundError, match="perdure did not start"):
                await client.status(foreign)
            with pytest.raises(RunNotFoundError):
                await client.steps(foreign)
            with pytest.raises(RunConflictError):
                await client.start(app.pipeline, "x", run_id=foreign)
            assert (await client.status(other_app)).status is RunStatus.PENDING

    asyncio.run(main())


def test_a_namespace_that_does_not_exist_is_a_configuration_error(server: TemporalDevServer, root: Path) -> None:
    """Not "no run", not a raw RPCError, not a worker traceback: a ConfigurationError naming the namespace."""
    url = server.url.replace("/default?", "/no-such-namespace?")

    async def main() -> None:
        async with perdure.Client(url) as client:
            for call in (lambda: client.status("r1"), lambda: client.start(app.pipeline, "x", run_id="r1"),
                         lambda: client.runs()):
                with pytest.raises(ConfigurationError, match="namespace 'no-such-namespace' does not exist"):
                    await call()

    asyncio.run(main())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    worker = subprocess.run([sys.executable, "-m", "perdure", "worker", url, "--app", "temporal_app"],
                            capture_output=True, text=True, env=env, timeout=PATIENCE)
    assert worker.returncode == 2, worker.stderr
    assert "ConfigurationError" in worker.stderr and "no-such-namespace" in worker.stderr
    assert "Traceback" not in worker.stderr + worker.stdout


def test_dev_server_stops_and_frees_its_port(tmp_path: Path) -> None:
    from perdure.adapters.temporal.devserver import _port_open

    port = next(p for p in PORTS if not _port_open(p))
    ds = TemporalDevServer(tmp_path, port=port, persistent=False)
    assert ds.start() == ds.start()  # idempotent
    assert _port_open(port)
    ds.stop()
    ds.stop()
    assert not _port_open(port)

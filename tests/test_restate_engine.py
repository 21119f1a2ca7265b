"""restate:// against the real thing: a restate-server started by perdure's own dev server, perdure worker
processes (``python -m perdure worker``) that are SIGKILLed for real, and the client over HTTP.

No timed assertions: waits have generous deadlines, and measured times (recovery after a kill) are printed.
Ports: ``PERDURE_RESTATE_PORTS=ingress,admin,node,deployment`` (default 18080,19070,15122,19080).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("restate")
pytest.importorskip("hypercorn")

import perdure  # noqa: E402
from perdure import Client, RunStatus, StepKind, StepStatus  # noqa: E402
from perdure.adapters.restate import RestateBackend, RestateDevServer  # noqa: E402
from perdure.adapters.restate.service import OPTIONS_METADATA, declared_options  # noqa: E402
from perdure.adapters.restate.settings import RestateSettings  # noqa: E402
from perdure.adapters.restate.worker import registered_options  # noqa: E402
from perdure.core.errors import (  # noqa: E402
    ApprovalAlreadyDecidedError,
    RunConflictError,
    RunFailedError,
    RunNotFoundError,
)

pytestmark = pytest.mark.engine("restate")

HERE = Path(__file__).parent
PATIENCE = 60.0


CLEANUP_INTERVAL = "1s"  # how often this module's server purges runs past their retention (default 1h)


class CleanedRestateDevServer(RestateDevServer):
    """The dev server, purging expired runs every second: a retention can be seen to end in a test."""

    def server_env(self) -> dict[str, str]:
        return {**super().server_env(), "RESTATE_WORKER__CLEANUP_INTERVAL": CLEANUP_INTERVAL}


class Engine:
    """One restate-server for the module, and the worker processes of the current test."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="perdure-restate-"))
        ports = [int(p) for p in os.environ.get("PERDURE_RESTATE_PORTS", "18080,19070,15122,19080").split(",")]
        self.server = CleanedRestateDevServer(
            self.root / "engine", ingress_port=ports[0], admin_port=ports[1], node_port=ports[2],
            deployment_port=ports[3],
        )
        self.url = self.server.start()
        self.trace = self.root / "trace"
        self.trace.mkdir()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs = 0

    def start_worker(self, variant: str = "base", url: str | None = None) -> float:
        """Start a worker process (on ``url``, default the dev server's); returns when it printed that it is
        ready (a monotonic timestamp)."""
        self.logs += 1
        log_path = self.root / f"worker-{self.logs}.log"
        env = dict(os.environ, **self.server.worker_env())
        env.update(
            RESTATE_TEST_DIR=str(self.trace), RESTATE_TEST_VARIANT=variant, PYTHONUNBUFFERED="1",
            PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]),
        )
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "perdure", "worker", url or self.url, "--app", "restate_workflows"],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )
        self.procs.append(proc)
        deadline = time.monotonic() + PATIENCE
        while b"perdure worker ready" not in log_path.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"worker did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.01)
        return time.monotonic()

    def kill_workers(self) -> None:
        """SIGKILL every worker process."""
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
        for p in self.procs:
            p.wait()
        self.procs = []

    def close(self) -> None:
        self.kill_workers()
        self.server.stop()
        if not os.environ.get("PERDURE_TEST_KEEP"):  # set it to keep the server and worker logs
            shutil.rmtree(self.root, ignore_errors=True)

    # --- the trace the workflows leave (see restate_workflows.py) -----------------------------------
    def arm(self, run_id: str, label: str) -> None:
        (self.trace / f"gate-{run_id}-{label}").touch()

    def release(self, run_id: str, label: str) -> None:
        (self.trace / f"gate-{run_id}-{label}").unlink(missing_ok=True)

    def arrived(self, run_id: str, label: str) -> bool:
        path = self.trace / f"arrived-{run_id}-{label}"
        if path.exists():
            path.unlink()
            return True
        return False

    def wait_arrival(self, run_id: str, label: str) -> float:
        deadline = time.monotonic() + PATIENCE
        while not self.arrived(run_id, label):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{run_id} never reached {label}")
            time.sleep(0.002)
        return time.monotonic()

    def calls(self, run_id: str) -> list[str]:
        path = self.trace / f"calls-{run_id}"
        return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []

    def keys(self, run_id: str, label: str) -> set[str]:
        path = self.trace / f"calls-{run_id}"
        return {line.split()[1] for line in path.read_text().splitlines() if line.split()[0] == label}


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    e = Engine()
    try:
        e.start_worker()  # registers the deployment, so runs can be started while no worker runs
        e.kill_workers()
        yield e
    finally:
        e.close()


@pytest.fixture
def worker(engine: Engine) -> Iterator[Engine]:
    engine.start_worker()
    try:
        yield engine
    finally:
        engine.kill_workers()


_ids = iter(range(1_000_000))


def new_id(name: str) -> str:
    return f"{name}-{os.getpid()}-{next(_ids)}-{time.time_ns() % 10**9}"


async def until(client: Client, run_id: str, predicate: Any) -> perdure.RunInfo:
    deadline = time.monotonic() + PATIENCE
    while True:
        info = await client.status(run_id)
        if predicate(info):
            return info
        assert time.monotonic() < deadline, f"{run_id}: condition not reached, now {info}"
        await asyncio.sleep(0.01)


# --- runs ------------------------------------------------------------------------------------------
def test_happy_path_status_steps_and_listing(worker: Engine) -> None:
    async def main() -> None:
        async with Client(worker.url) as client:
            rid = new_id("happy")
            assert await client.start("rt.pipeline", run_id=rid, x="go") == rid
            assert await client.result(rid, timeout=PATIENCE) == "go>a>b>c"
            info = await client.status(rid)
            assert (info.status, info.workflow, info.output, info.error) == (RunStatus.SUCCEEDED, "rt.pipeline", "go>a>b>c", None)
            assert info.created_at is not None and abs(info.created_at - time.time()) < 600
            steps = await client.steps(rid)
            assert [(s.position, s.name, s.kind, s.status, s.attempts, s.output) for s in steps] == [
                (0, "rt.a", StepKind.STEP, StepStatus.COMPLETED, 1, "go>a"),
                (1, "rt.b", StepKind.STEP, StepStatus.COMPLETED, 1, "go>a>b"),
                (2, "rt.c", StepKind.STEP, StepStatus.COMPLETED, 1, "go>a>b>c"),
            ]
            assert rid in [r.run_id for r in await client.runs(limit=100)]
            with pytest.raises(RunNotFoundError):
                await client.status(new_id("missing"))
            with pytest.raises(RunNotFoundError):
                await client.steps(new_id("missing"))

    asyncio.run(main())


def test_idempotent_start_and_conflict(worker: Engine) -> None:
    async def main() -> None:
        async with Client(worker.url) as client:
            rid = new_id("idem")
            await client.start("rt.pipeline", run_id=rid, x="one")
            await client.start("rt.pipeline", run_id=rid, x="two")  # the same run: no second execution
            assert await client.result(rid, timeout=PATIENCE) == "one>a>b>c"
            await client.start("rt.pipeline", run_id=rid, x="three")  # finished: still the same run
            with pytest.raises(RunConflictError):
                await client.start("rt.retrying", run_id=rid, failures=0)
            assert worker.calls(rid) == ["a", "b", "c"]

    asyncio.run(main())


@pytest.mark.parametrize("message", ["no such shelf: 'B7'\nsecond line", ""])
def test_workflow_error_fails_the_run_with_the_original_type(worker: Engine, message: str) -> None:
    async def main() -> None:
        async with Client(worker.url) as client:
            rid = new_id("broken")
            await client.start("rt.broken", run_id=rid, message=message)
            with pytest.raises(RunFailedError) as err:
                await client.result(rid, timeout=PATIENCE)
            assert (err.value.error_type, err.value.message) == ("LookupError", message)

    asyncio.run(main())


def test_retries_record_every_attempt(worker: Engine) -> None:
    async def main() -> None:
        async with Client(worker.url) as client:
            ok, exhausted = new_id("transient"), new_id("exhausted")
            await client.start("rt.retrying", run_id=ok, failures=2)
            await client.start("rt.retrying", run_id=exhausted, failures=99)
            assert await client.result(ok, timeout=PATIENCE) == {"result": "ok after 3 attempt(s)"}
            assert await client.result(exhausted, timeout=PATIENCE) == {"failed": "ConnectionError", "attempts": 3}
            [record] = await client.steps(exhausted)
            assert (record.status, record.attempts, record.error and record.error.type) == (
                StepStatus.FAILED, 3, "ConnectionError")

    asyncio.run(main())


def test_a_step_slower_than_the_step_timeout_fails_with_step_timeout_error_under_its_retry_policy(
    engine: Engine,
) -> None:
    """A worker with ``step_timeout=1`` cancels each attempt of a 5 s step after 1 s: StepTimeoutError,
    and the step's policy (2 attempts) ends it. The worker declares Restate's abort timeout 10 s past the
    step timeout, so Restate never cuts a running step off first: before, it did after its inactivity and
    abort timeouts (1 min + 10 min by default), and a step always slower than that ran again forever."""
    engine.start_worker(url=engine.url + "&step_timeout=1")

    async def main() -> None:
        backend = RestateBackend(engine.url)
        async with Client(backend) as client:
            slow_id, fast_id = new_id("slow"), new_id("fast")
            await client.start("rt.slow", run_id=slow_id, seconds=5.0)
            await client.start("rt.slow", run_id=fast_id, seconds=0.05)
            slow = await client.result(slow_id, timeout=PATIENCE)
            assert await client.result(fast_id, timeout=PATIENCE) == {"ok": 0.05}
            assert slow["error_type"] == "StepTimeoutError" and slow["attempts"] == 2, slow
            assert "ran past the step timeout of 1 s" in slow["message"]
            [record] = await client.steps(slow_id)
            assert (record.name, record.status, record.attempts) == ("rt.slow", StepStatus.FAILED, 2)
            assert engine.calls(slow_id) == ["slow", "slow"]
            service = (await backend.http.client.get(f"{backend.settings.admin}/services/perdure")).json()
            assert service["abort_timeout"] == "11s"

    try:
        asyncio.run(main())
    finally:
        engine.kill_workers()


def test_a_finished_run_is_kept_for_the_retention_then_its_id_starts_a_new_run(
    engine: Engine, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``retention=2``: the worker declares 2 s as the workflow's completion and journal retention; a
    finished run reads SUCCEEDED with its steps until the server purges it (this module's server cleans
    every second, CLEANUP_INTERVAL), then is gone, and a start of its id runs the workflow again. Before
    the option a run was kept for the server's default only (1 day), with no way to say otherwise from
    perdure.

    A worker whose options differ from those in force registers them before it says it is ready. An
    older worker still serving the same address (a rolling restart) answers Restate's registration
    instead, so the new worker registers again until they are in force: here once the old one is killed.
    Before, a worker registered once, and the old worker's options stayed for good."""
    for name, value in engine.server.worker_env().items():  # declared_options() reads the retry profile
        monkeypatch.setenv(name, value)

    async def revision() -> int:
        backend = RestateBackend(engine.url)
        async with Client(backend):
            service = await backend.http.service("perdure")
            assert service is not None
            return int(service["revision"])

    async def in_force(backend: RestateBackend, retention: str) -> bool:
        service = await backend.http.service("perdure")
        assert service is not None
        retentions = (service["workflow_completion_retention"], service["journal_retention"])
        if retentions != (retention, retention):
            return False
        declared = declared_options(backend.settings)
        assert service["metadata"][OPTIONS_METADATA] == declared  # what a restarted worker compares
        assert await registered_options(backend.http, backend.settings) == declared
        return True

    async def comes_in_force(backend: RestateBackend, retention: str) -> float:
        start = time.monotonic()
        while not await in_force(backend, retention):
            assert time.monotonic() - start < PATIENCE, f"retention {retention} not in force"
            await asyncio.sleep(0.05)
        return time.monotonic() - start

    before = asyncio.run(revision())
    engine.start_worker()  # the old worker: the server's default retention
    old = engine.procs[-1]
    deadline = time.monotonic() + PATIENCE
    while asyncio.run(revision()) == before:  # it has registered (after "ready" when it is a restart)
        assert time.monotonic() < deadline
        time.sleep(0.05)
    engine.start_worker(url=engine.url + "&retention=2")
    os.kill(old.pid, signal.SIGKILL)
    old.wait()

    async def main() -> None:
        backend = RestateBackend(engine.url + "&retention=2")
        async with Client(backend) as client:
            print(f"retention=2 in force {await comes_in_force(backend, '2s'):.2f} s after the old worker's kill")
            assert await registered_options(backend.http, RestateSettings.from_url(engine.url)) != (
                declared_options(RestateSettings.from_url(engine.url)))
            rid = new_id("kept")
            await client.start("rt.pipeline", run_id=rid, x="one")
            assert await client.result(rid, timeout=PATIENCE) == "one>a>b>c"
            ended = time.monotonic()
            assert [r.name for r in await client.steps(rid)] == ["rt.a", "rt.b", "rt.c"]
            deadline = ended + PATIENCE
            while True:
                try:
                    await client.status(rid)
                except RunNotFoundError:
                    break
                assert time.monotonic() < deadline, f"{rid} still kept {PATIENCE} s after it ended"
                await asyncio.sleep(0.1)
            assert time.monotonic() - ended >= 1.5  # not before its retention
            with pytest.raises(RunNotFoundError):
                await client.steps(rid)
            await client.start("rt.pipeline", run_id=rid, x="two")  # the id is free again: a new run
            assert await client.result(rid, timeout=PATIENCE) == "two>a>b>c"
            assert engine.calls(rid) == ["a", "b", "c", "a", "b", "c"]

    async def default_retention_back() -> None:
        # A restart with other options, alone on its address: the server's default is in force when the
        # worker says it is ready (and later tests' runs are not purged after 2 s).
        backend = RestateBackend(engine.url)
        async with Client(backend):
            assert await in_force(backend, "1d")

    try:
        asyncio.run(main())
    finally:
        engine.kill_workers()
        engine.start_worker()
        try:
            asyncio.run(default_retention_back())
        finally:
            engine.kill_workers()


# --- crashes -------------------------------------------------------------------------------------
def test_sigkill_inside_a_step_reruns_only_that_step(engine: Engine) -> None:
    """The in-flight step runs again with the same idempotency key; completed steps replay. Prints the
    recovery time: new worker ready -> the step re-entered."""

    async def main() -> None:
        async with Client(engine.url) as client:
            rid = new_id("kill")
            engine.arm(rid, "b")
            await client.start("rt.pipeline", run_id=rid, x="go")
            engine.wait_arrival(rid, "b")
            running = await client.steps(rid)
            assert [(s.name, s.status) for s in running] == [("rt.a", StepStatus.COMPLETED), ("rt.b", StepStatus.RUNNING)]
            t_kill = time.monotonic()
            engine.kill_workers()
            t_ready = engine.start_worker()
            t_back = engine.wait_arrival(rid, "b")
            print(f"\nrestate recovery: kill -> step re-entered {t_back - t_kill:.3f} s "
                  f"(worker start-up {t_ready - t_kill:.3f} s, ready -> re-entered {t_back - t_ready:.3f} s)")
            engine.release(rid, "b")
            assert await client.result(rid, timeout=PATIENCE) == "go>a>b>c"
            assert engine.calls(rid) == ["a", "b", "b", "c"]
            assert len(engine.keys(rid, "b")) == 1

    engine.start_worker()
    try:
        asyncio.run(main())
    finally:
        engine.kill_workers()


def test_kill_during_retry_backoff_keeps_the_attempt_count(engine: Engine) -> None:
    async def main() -> None:
        async with Client(engine.url) as client:
            rid = new_id("retrykill")
            engine.arm(rid, "flaky-2")
            await client.start("rt.retrying", run_id=rid, failures=1)
            engine.wait_arrival(rid, "flaky-2")  # attempt 1 failed; attempt 2 is held
            engine.kill_workers()
            engine.release(rid, "flaky-2")
            engine.start_worker()
            assert await client.result(rid, timeout=PATIENCE) == {"result": "ok after 2 attempt(s)"}
            assert len(engine.keys(rid, "flaky")) == 1

    engine.start_worker()
    try:
        asyncio.run(main())
    finally:
        engine.kill_workers()


def test_durable_sleep_across_a_kill(engine: Engine) -> None:
    """The wake-up time is fixed when the sleep is first reached: a restarted worker keeps it."""

    async def wake_up_time(backend: RestateBackend, run_id: str) -> int:
        [row] = await backend.http.query(
            "SELECT j.entry_json FROM sys_journal j JOIN sys_invocation i ON i.id = j.id "
            f"WHERE i.target_service_key = '{run_id}' AND j.entry_type = 'Command: Sleep'"
        )
        value: int = json.loads(row["entry_json"])["Command"]["Sleep"]["wake_up_time"]
        return value

    async def main() -> None:
        backend = RestateBackend(engine.url)
        async with Client(backend) as client:
            rid = new_id("sleep")
            await client.start("rt.sleeper", run_id=rid, seconds=2.0)
            deadline = time.monotonic() + PATIENCE
            while not (steps := await client.steps(rid)) or steps[-1].kind is not StepKind.SLEEP:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            engine.kill_workers()
            before = await wake_up_time(backend, rid)
            assert steps[-1].status is StepStatus.WAITING
            engine.start_worker()
            elapsed = await client.result(rid, timeout=PATIENCE)
            assert elapsed >= 2.0
            assert await wake_up_time(backend, rid) == before  # not restarted by the new worker
            assert [s.status for s in await client.steps(rid)] == [StepStatus.COMPLETED] * 3

    engine.start_worker()
    try:
        asyncio.run(main())
    finally:
        engine.kill_workers()


def test_steps_awaited_together_across_a_kill(engine: Engine) -> None:
    async def main() -> None:
        async with Client(engine.url) as client:
            rid = new_id("fanout")
            engine.arm(rid, "a")
            await client.start("rt.fanout", run_id=rid, items=["x", "y", "z"])
            engine.wait_arrival(rid, "a")
            engine.kill_workers()
            engine.release(rid, "a")
            engine.start_worker()
            assert await client.result(rid, timeout=PATIENCE) == ["x>a", "y>a", "z>a"]
            assert [(s.position, s.output) for s in await client.steps(rid)] == [(0, "x>a"), (1, "y>a"), (2, "z>a")]

    engine.start_worker()
    try:
        asyncio.run(main())
    finally:
        engine.kill_workers()


def test_operations_awaited_together_never_miss_their_completion(worker: Engine) -> None:
    """Steps finishing at different moments, and a step raced with a timer: every waiter wakes.

    The SDK's progress loop, run by two awaiting coroutines at once, could hand one's completion to the
    other (adapters/restate/progress.py): such runs stayed RUNNING forever after their parallel steps."""

    async def main() -> None:
        async with Client(worker.url) as client:
            staggered = [await client.start("rt.staggered", run_id=new_id("staggered"), rounds=6) for _ in range(3)]
            for rid in staggered:
                outputs = await client.result(rid, timeout=PATIENCE)
                assert outputs == [f"{i}>s" for i in range(6) for _ in range(3)]
            rid = new_id("race")
            t0 = time.monotonic()
            assert await client.result(await client.start("rt.race", run_id=rid), timeout=PATIENCE) == "r>s|after>s"
            assert time.monotonic() - t0 < 30  # not after the 600 s timer
            assert [(s.name, s.status) for s in await client.steps(rid)] == [
                ("rt.slow_sync", StepStatus.COMPLETED), ("perdure.sleep", StepStatus.WAITING),  # as on memory://
                ("rt.slow_sync", StepStatus.COMPLETED)]

    asyncio.run(main())


def test_a_second_worker_on_the_same_address_takes_over(engine: Engine) -> None:
    """Restate pins runs to a deployment address; workers share it (SO_REUSEPORT), so when one dies the
    survivor receives its runs."""

    async def main() -> None:
        async with Client(engine.url) as client:
            rid = new_id("takeover")
            engine.arm(rid, "b")
            await client.start("rt.pipeline", run_id=rid, x="go")
            engine.wait_arrival(rid, "b")
            first = engine.procs[0]
            engine.start_worker()
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
            engine.procs.remove(first)
            engine.wait_arrival(rid, "b")  # re-entered, on the survivor
            engine.release(rid, "b")
            assert await client.result(rid, timeout=PATIENCE) == "go>a>b>c"

    engine.start_worker()
    try:
        asyncio.run(main())
    finally:
        engine.kill_workers()


# --- approvals -----------------------------------------------------------------------------------
def test_approval_decided_while_no_worker_runs_exactly_once(engine: Engine) -> None:
    async def main() -> None:
        async with Client(engine.url) as client:
            rid = new_id("approve")
            await client.start("rt.approval", run_id=rid, item="post")
            info = await until(client, rid, lambda i: i.pending_approval is not None)
            engine.kill_workers()
            down = await client.status(rid)  # readable with no worker: SQL over Restate's state
            assert down.status is RunStatus.WAITING and down.pending_approval == info.pending_approval
            assert down.pending_approval is not None
            assert (down.pending_approval.approval_id, down.pending_approval.payload) == ("publish-1", {"draft": "post>a"})
            await client.approve(rid, "publish-1", by="alice")
            with pytest.raises(ApprovalAlreadyDecidedError):
                await client.reject(rid, "publish-1", by="mallory")  # before any worker consumed the first
            engine.start_worker()
            assert await client.result(rid, timeout=PATIENCE) == {"approved": True, "by": "alice"}
            with pytest.raises(ApprovalAlreadyDecidedError):
                await client.approve(rid, "publish-1", by="mallory")
            record = (await client.steps(rid))[1]
            assert (record.kind, record.status, record.output["by"]) == (StepKind.APPROVAL, StepStatus.COMPLETED, "alice")

    engine.start_worker()
    try:
        asyncio.run(main())
    finally:
        engine.kill_workers()


def test_approval_timeout_survives_a_restart(engine: Engine) -> None:
    async def main() -> None:
        async with Client(engine.url) as client:
            rid = new_id("timeout")
            await client.start("rt.approval", run_id=rid, item="post", timeout=1.0)
            info = await until(client, rid, lambda i: i.pending_approval is not None)
            assert info.pending_approval is not None and info.pending_approval.deadline is not None
            engine.kill_workers()
            engine.start_worker()
            assert await client.result(rid, timeout=PATIENCE) == {"timed_out": True}
            record = (await client.steps(rid))[1]
            assert (record.status, record.error and record.error.type) == (StepStatus.FAILED, "ApprovalTimeoutError")

    engine.start_worker()
    try:
        asyncio.run(main())
    finally:
        engine.kill_workers()


# --- cancel and status without a worker ------------------------------------------------------------
def test_pending_then_cancel_while_no_worker_runs(engine: Engine) -> None:
    async def main() -> None:
        async with Client(engine.url) as client:
            rid = new_id("cancel")
            await client.start("rt.pipeline", run_id=rid, x="go")
            assert (await client.status(rid)).status is RunStatus.PENDING  # no worker ever picked it up
            await client.cancel(rid)
            assert (await client.status(rid)).status is RunStatus.CANCELLED
            engine.start_worker()
            await asyncio.sleep(0.5)
            assert engine.calls(rid) == [] and await client.steps(rid) == []
            with pytest.raises(perdure.RunCancelledError):
                await client.result(rid, timeout=PATIENCE)

    try:
        asyncio.run(main())
    finally:
        engine.kill_workers()


def test_a_worker_resumes_runs_restate_paused(engine: Engine) -> None:
    """After a long outage Restate pauses invocations (retry limit); a starting worker resumes them."""

    async def main() -> None:
        backend = RestateBackend(engine.url)
        async with Client(backend) as client:
            rid = new_id("paused")
            await client.start("rt.pipeline", run_id=rid, x="go")
            [row] = await backend.http.query(
                f"SELECT id FROM sys_invocation WHERE target_service_key = '{rid}' AND target_handler_name = 'run'")
            r = await backend.http.client.patch(f"{backend.settings.admin}/invocations/{row['id']}/pause")
            assert r.status_code in (200, 202), r.text
            deadline = time.monotonic() + PATIENCE
            while (await backend.http.query(f"SELECT status FROM sys_invocation WHERE id = '{row['id']}'"))[0][
                "status"] != "paused":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            engine.start_worker()
            assert await client.result(rid, timeout=PATIENCE) == "go>a>b>c"

    try:
        asyncio.run(main())
    finally:
        engine.kill_workers()


def test_cancel_during_a_step_keeps_only_recorded_steps(engine: Engine) -> None:
    async def main() -> None:
        async with Client(engine.url) as client:
            rid = new_id("cancel-live")
            engine.arm(rid, "b")
            await client.start("rt.pipeline", run_id=rid, x="go")
            engine.wait_arrival(rid, "b")
            await client.cancel(rid)
            assert (await client.status(rid)).status is RunStatus.CANCELLED
            engine.release(rid, "b")
            await asyncio.sleep(0.5)
            assert "c" not in engine.calls(rid)
            assert [s.name for s in await client.steps(rid)] == ["rt.a"]

    engine.start_worker()
    try:
        asyncio.run(main())
    finally:
        engine.kill_workers()


# --- nondeterminism ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        # the same error, with the same message, as the memory engine
        ("reordered", "position 0: the journal has step 'rt.a', the workflow now asks for step 'rt.b'"),
        ("sleep-first", "position 0: the journal has step 'rt.a', the workflow now asks for sleep 'perdure.sleep'"),
    ],
)
def test_changed_code_ends_the_run_with_nondeterminism_error(engine: Engine, variant: str, expected: str) -> None:
    async def main() -> None:
        async with Client(engine.url) as client:
            rid = new_id(f"nondet-{variant}")
            engine.arm(rid, "c")
            await client.start("rt.pipeline", run_id=rid, x="go")
            engine.wait_arrival(rid, "c")
            engine.kill_workers()
            engine.release(rid, "c")
            engine.start_worker(variant=variant)
            with pytest.raises(RunFailedError) as err:
                await client.result(rid, timeout=PATIENCE)
            assert err.value.error_type == "NonDeterminismError"
            assert expected in err.value.message
            steps = await client.steps(rid)
            assert [(s.name, s.status) for s in steps] == [
                ("rt.a", StepStatus.COMPLETED), ("rt.b", StepStatus.COMPLETED), ("rt.c", StepStatus.RUNNING)]
            # terminal in Restate too: nothing retries it
            assert (await client.status(rid)).status is RunStatus.FAILED

    engine.start_worker()
    try:
        asyncio.run(main())
    finally:
        engine.kill_workers()


def test_code_that_now_ends_earlier_finishes_like_the_memory_engine(engine: Engine) -> None:
    """Restate refuses a result while recorded entries were not replayed; perdure records it out of band."""

    async def main() -> None:
        async with Client(engine.url) as client:
            rid = new_id("shorter")
            engine.arm(rid, "c")
            await client.start("rt.pipeline", run_id=rid, x="go")
            engine.wait_arrival(rid, "c")
            engine.kill_workers()
            engine.release(rid, "c")
            engine.start_worker(variant="shorter")
            assert await client.result(rid, timeout=PATIENCE) == "go>a"
            assert (await client.status(rid)).status is RunStatus.SUCCEEDED

    engine.start_worker()
    try:
        asyncio.run(main())
    finally:
        engine.kill_workers()


def test_sigterm_stops_a_worker(engine: Engine) -> None:
    engine.start_worker()
    proc = engine.procs[-1]
    # the SDK installs its own SIGTERM handler on its first request: make one
    asyncio.run(_one_run(engine))
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=PATIENCE)
    assert code == 0, (engine.root / f"worker-{engine.logs}.log").read_text()[-3000:]
    engine.procs.remove(proc)


async def _one_run(engine: Engine) -> None:
    async with Client(engine.url) as client:
        rid = new_id("term")
        await client.start("rt.pipeline", run_id=rid, x="go")
        await client.result(rid, timeout=PATIENCE)


def test_backend_url_reaches_the_dev_server(engine: Engine) -> None:
    backend = RestateBackend(engine.url)
    assert backend.settings.admin.endswith(str(engine.server.admin_port))
    assert backend.settings.deployment.endswith(str(engine.server.deployment_port))

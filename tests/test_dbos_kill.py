"""perdure on DBOS with real worker processes, SIGKILLed for real, on SQLite and on Postgres.

Each test starts ``python -m perdure worker URL --app dbos_app`` processes, holds one inside a step (a
gate file), SIGKILLs it, and checks what the next worker does. Postgres is a private cluster started by
the DBOS dev server (the machine's Postgres binaries, 127.0.0.1, ports 54330-54339).
"""

from __future__ import annotations

import asyncio
import os
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

pytest.importorskip("dbos")

import perdure  # noqa: E402
from perdure.adapters.dbos.devserver import PostgresDevServer, postgres_bin_dir  # noqa: E402
from perdure.core.errors import (  # noqa: E402
    ApprovalAlreadyDecidedError,
    ApprovalNotFoundError,
    ConfigurationError,
    NonDeterminismError,
    RunFailedError,
)
from perdure.core.types import RunStatus, StepKind, StepStatus  # noqa: E402

pytestmark = pytest.mark.engine("dbos")
TESTS = Path(__file__).resolve().parent
PATIENCE = 60.0


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A Postgres cluster for this module; each test gets its own database in it.

    ``PERDURE_DBOS_POSTGRES_URL`` names a running one instead (e.g. started by scripts/postgres.sh in CI).
    Without Postgres binaries the Postgres cases are skipped, unless ``PERDURE_REQUIRE_POSTGRES=1``.
    """
    given = os.environ.get("PERDURE_DBOS_POSTGRES_URL")
    if given:
        yield given.rsplit("/", 1)[0]
        return
    try:
        postgres_bin_dir()
    except ConfigurationError as exc:
        if os.environ.get("PERDURE_REQUIRE_POSTGRES") == "1":
            raise
        pytest.skip(str(exc))
    workdir = Path(tempfile.mkdtemp(prefix="perdure-dbos-test-"))
    server = PostgresDevServer(workdir / "pg", ports=range(54330, 54340))
    try:
        yield server.start().rsplit("/", 1)[0]
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"dbos+sqlite:///{tmp_path / 'perdure.sqlite'}"
    base: str = request.getfixturevalue("postgres")
    return f"{base}/t_{uuid.uuid4().hex[:12]}"


class Workers:
    """Worker processes of one test: started with a code variant, SIGKILLed by PID."""

    def __init__(self, url: str, workdir: Path) -> None:
        self.url, self.dir = url, workdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, variant: str = "base") -> None:
        env = dict(os.environ, DBOS_TEST_DIR=str(self.dir), DBOS_TEST_VARIANT=variant, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
        log = self.dir / f"worker-{len(self.procs)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "perdure", "worker", self.url, "--app", "dbos_app"],
                                    stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.procs.append(proc)
        deadline = time.monotonic() + PATIENCE
        while b"perdure worker ready" not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"worker did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.02)

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()

    def calls(self, run_id: str, label: str) -> list[str]:
        """PIDs of the processes that executed step ``label`` of ``run_id``, in order."""
        path = self.dir / "calls"
        lines = path.read_text().splitlines() if path.exists() else []
        return [pid for rid, lab, pid in (line.split() for line in lines) if rid == run_id and lab == label]

    def gate(self, run_id: str, label: str) -> Path:
        path = self.dir / f"{run_id}.{label}.gate"
        path.touch()
        return path

    async def until(self, predicate: Any, what: str) -> None:
        deadline = time.monotonic() + PATIENCE
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not reached in {PATIENCE} s")
            await asyncio.sleep(0.02)


@pytest.fixture
def workers(url: str, tmp_path: Path) -> Iterator[Workers]:
    w = Workers(url, tmp_path)
    try:
        yield w
    finally:
        w.kill()


def test_kill_inside_a_tool_reruns_only_that_tool(url: str, workers: Workers) -> None:
    async def main() -> None:
        async with perdure.Client(url) as client:
            rid = f"kill-{uuid.uuid4().hex[:8]}"
            gate = workers.gate(rid, "publish")
            workers.start()
            await client.start("t.pipeline", run_id=rid, x="a")
            await workers.until(lambda: len(workers.calls(rid, "publish")) == 1, "publish entered")
            workers.kill()

            info = await client.status(rid)  # no worker alive: state comes from the database
            assert info.status is RunStatus.RUNNING
            assert [(r.name, r.status) for r in await client.steps(rid)] == [("t.fetch", StepStatus.COMPLETED)]

            workers.start()
            await workers.until(lambda: len(workers.calls(rid, "publish")) == 2, "publish re-entered")
            gate.unlink()
            assert await client.result(rid, timeout=PATIENCE) == {"published": "a>fetch", "key": f"{rid}:1"}
            assert len(workers.calls(rid, "fetch")) == 1  # recorded before the kill: not run again
            first, second = workers.calls(rid, "publish")
            assert first != second  # the in-flight tool ran again, in the new process
            steps = await client.steps(rid)
            assert [(r.position, r.name, r.kind, r.status) for r in steps] == [
                (0, "t.fetch", StepKind.STEP, StepStatus.COMPLETED),
                (1, "t.publish", StepKind.TOOL, StepStatus.COMPLETED),
            ]
            assert steps[1].output == {"published": "a>fetch", "key": f"{rid}:1"}

    asyncio.run(main())


def test_approval_decided_while_no_worker_runs(url: str, workers: Workers) -> None:
    async def main() -> None:
        async with perdure.Client(url) as client:
            workers.start()
            rid = await client.start("t.review", x="b")
            await workers.until(lambda: workers.calls(rid, "fetch"), "fetch ran")
            for _ in range(int(PATIENCE / 0.02)):
                info = await client.status(rid)
                if info.pending_approval is not None:
                    break
                await asyncio.sleep(0.02)
            # No 60 s cap: the timeout DBOS recorded for the decision's recv ends years from now.
            dbos_client = client.backend._connect()  # type: ignore[attr-defined]
            recv_timeout: list[float] = []
            await workers.until(lambda: recv_timeout.extend(
                op["output"] for op in dbos_client.list_workflow_steps(rid) if op["function_name"] == "DBOS.sleep"
            ) or recv_timeout, "recv waiting")
            assert recv_timeout[0] > time.time() + 365 * 24 * 3600
            workers.kill()

            info = await client.status(rid)  # read from the database: the pending approval survives
            assert info.status is RunStatus.WAITING
            pending = info.pending_approval
            assert pending is not None and pending.approval_id == "review-1"
            assert pending.payload == {"draft": "b>fetch"} and pending.deadline is None
            waiting = (await client.steps(rid))[1]
            assert (waiting.kind, waiting.status, waiting.attempts) == (StepKind.APPROVAL, StepStatus.WAITING, 0)

            await client.approve(rid, "review-1", by="alice", digest=pending.digest)
            with pytest.raises(ApprovalAlreadyDecidedError):
                await client.reject(rid, "review-1", by="mallory")  # refused even before any worker saw the first

            workers.start()
            assert await client.result(rid, timeout=PATIENCE) == {"approved": True, "by": "alice", "draft": "b>fetch"}
            records = await client.steps(rid)
            assert [(r.name, r.kind, r.status) for r in records] == [
                ("t.fetch", StepKind.STEP, StepStatus.COMPLETED),
                ("review", StepKind.APPROVAL, StepStatus.COMPLETED),
                ("perdure.sleep", StepKind.SLEEP, StepStatus.COMPLETED),
            ]
            assert records[1].output["by"] == "alice" and records[1].output["approved"] is True
            assert len(workers.calls(rid, "fetch")) == 1
            with pytest.raises(ApprovalAlreadyDecidedError):
                await client.approve(rid, "review-1")

    asyncio.run(main())


def test_changed_step_order_fails_with_nondeterminism_error(url: str, workers: Workers) -> None:
    async def main() -> None:
        async with perdure.Client(url) as client:
            rid = f"nd-{uuid.uuid4().hex[:8]}"
            workers.gate(rid, "publish")
            workers.start()
            await client.start("t.pipeline", run_id=rid, x="c")
            await workers.until(lambda: workers.calls(rid, "publish"), "publish entered")
            workers.kill()
            workers.start(variant="approval-first")  # a deploy put an approval where a step was recorded
            with pytest.raises(RunFailedError) as failed:
                await client.result(rid, timeout=PATIENCE)
            expected = NonDeterminismError(0, "step 't.fetch'", "approval 'inserted'")
            assert (failed.value.error_type, failed.value.message) == ("NonDeterminismError", str(expected))
            assert (await client.status(rid)).status is RunStatus.FAILED

    asyncio.run(main())


def test_compatible_code_change_resumes_the_run(url: str, workers: Workers) -> None:
    """The pinned application version: changed workflow code never orphans a run, it replays."""

    async def main() -> None:
        async with perdure.Client(url) as client:
            rid = f"cc-{uuid.uuid4().hex[:8]}"
            gate = workers.gate(rid, "publish")
            workers.start()
            await client.start("t.pipeline", run_id=rid, x="d")
            await workers.until(lambda: workers.calls(rid, "publish"), "publish entered")
            workers.kill()
            gate.unlink()
            workers.start(variant="extra-step")
            assert await client.result(rid, timeout=PATIENCE) == {"published": "d>fetch", "key": f"{rid}:1"}
            assert len(workers.calls(rid, "fetch")) == 2  # the recorded one was replayed, the new one ran
            assert [r.name for r in await client.steps(rid)] == ["t.fetch", "t.publish", "t.fetch"]

    asyncio.run(main())


def test_cancel_ends_a_waiting_run_and_the_worker_goes_on(url: str, workers: Workers) -> None:
    async def main() -> None:
        async with perdure.Client(url) as client:
            workers.start()
            rid = await client.start("t.review", x="e")
            for _ in range(int(PATIENCE / 0.02)):
                if (await client.status(rid)).pending_approval is not None:
                    break
                await asyncio.sleep(0.02)
            await client.cancel(rid)
            info = await client.status(rid)
            assert info.status is RunStatus.CANCELLED and info.pending_approval is None
            assert [r.name for r in await client.steps(rid)] == ["t.fetch"]  # the wait never finished
            with pytest.raises(ApprovalNotFoundError):
                await client.approve(rid, "review-1")
            other = await client.start("t.pipeline", x="f")  # the same worker serves the next run
            assert (await client.result(other, timeout=PATIENCE))["published"] == "f>fetch"
            assert (await client.status(rid)).status is RunStatus.CANCELLED

    asyncio.run(main())


def test_approval_deadline_survives_a_kill(url: str, workers: Workers) -> None:
    """The deadline is fixed when the approval is first reached: a worker started after it passed times
    the approval out at once, and a late decision is refused."""

    async def main() -> None:
        async with perdure.Client(url) as client:
            workers.start()
            rid = await client.start("t.review", x="g", timeout=1.0)
            for _ in range(int(PATIENCE / 0.02)):
                if (pending := (await client.status(rid)).pending_approval) is not None:
                    break
                await asyncio.sleep(0.02)
            workers.kill()
            assert pending is not None and pending.deadline is not None
            while time.time() < pending.deadline + 0.2:  # let the deadline pass while no worker runs
                await asyncio.sleep(0.05)
            workers.start()
            with pytest.raises(RunFailedError) as failed:
                await client.result(rid, timeout=PATIENCE)
            assert failed.value.error_type == "ApprovalTimeoutError"
            approval = (await client.steps(rid))[1]
            assert (approval.name, approval.status, approval.error and approval.error.type) == (
                "review", StepStatus.FAILED, "ApprovalTimeoutError"
            )
            with pytest.raises(ApprovalAlreadyDecidedError):
                await client.approve(rid, "review-1")

    asyncio.run(main())


def test_a_long_history_replays_exactly_after_a_kill(url: str, workers: Workers) -> None:
    """A recovered run's record is read at once and answered from that read (replay.py): every recorded
    step returns its recorded output without running, and the step in flight runs again."""

    async def main() -> None:
        async with perdure.Client(url) as client:
            rid = f"long-{uuid.uuid4().hex[:8]}"
            gate = workers.gate(rid, "publish")
            workers.start()
            await client.start("t.long", run_id=rid, x="h", n=30)
            await workers.until(lambda: workers.calls(rid, "publish"), "publish entered")
            before = await client.steps(rid)
            workers.kill()
            workers.start()
            await workers.until(lambda: len(workers.calls(rid, "publish")) == 2, "publish re-entered")
            gate.unlink()
            fetched = [f"h{i}>fetch" for i in range(30)]
            assert await client.result(rid, timeout=PATIENCE) == {"fetched": fetched, "published": "h", "key": f"{rid}:30"}
            assert len(workers.calls(rid, "fetch")) == 30  # each recorded step ran once, before the kill
            after = await client.steps(rid)
            assert after[:30] == before[:30] and [r.output for r in after[:30]] == fetched
            assert (after[30].position, after[30].name, after[30].status) == (30, "t.publish", StepStatus.COMPLETED)

    asyncio.run(main())


def test_a_step_changed_deep_in_the_history_fails_with_nondeterminism_error(url: str, workers: Workers) -> None:
    """Past the first operation, recorded positions are checked from the run's record read at once: a
    changed step there is the same NonDeterminismError DBOS's own check gives."""

    async def main() -> None:
        async with perdure.Client(url) as client:
            rid = f"nd-long-{uuid.uuid4().hex[:8]}"
            workers.gate(rid, "publish")
            workers.start()
            await client.start("t.long", run_id=rid, x="i", n=5)
            await workers.until(lambda: workers.calls(rid, "publish"), "publish entered")
            workers.kill()
            workers.start(variant="reordered")  # position 4: the tool where step t.fetch was recorded
            with pytest.raises(RunFailedError) as failed:
                await client.result(rid, timeout=PATIENCE)
            expected = NonDeterminismError(4, "step 't.fetch'", "tool 't.publish'")
            assert (failed.value.error_type, failed.value.message) == ("NonDeterminismError", str(expected))
            assert len(workers.calls(rid, "publish")) == 1  # the changed step was refused, not run

    asyncio.run(main())


def test_a_running_worker_takes_over_a_killed_workers_run_but_never_a_live_ones(url: str, workers: Workers) -> None:
    """Two worker processes on one database. While the first is alive -- even frozen (SIGSTOP) -- the
    second never takes its run; once the first is SIGKILLed, the second continues it, with no worker
    started after the kill."""

    async def main() -> None:
        async with perdure.Client(url) as client:
            first_run = f"held-{uuid.uuid4().hex[:8]}"
            gate_first = workers.gate(first_run, "publish")
            workers.start()
            holder = workers.procs[0]
            await client.start("t.pipeline", run_id=first_run, x="j")
            await workers.until(lambda: workers.calls(first_run, "publish"), "publish entered")
            os.kill(holder.pid, signal.SIGSTOP)  # alive, but doing nothing: its run must stay its own

            workers.start()  # a worker says ready after its first check for dead workers
            standby = workers.procs[1]
            second_run = f"other-{uuid.uuid4().hex[:8]}"
            gate_second = workers.gate(second_run, "publish")
            await client.start("t.pipeline", run_id=second_run, x="k")  # the frozen worker cannot take it
            await workers.until(lambda: workers.calls(second_run, "publish"), "second run's publish entered")
            assert workers.calls(second_run, "publish") == [str(standby.pid)]
            assert workers.calls(first_run, "publish") == [str(holder.pid)]  # not taken over

            os.kill(holder.pid, signal.SIGKILL)
            holder.wait()
            await workers.until(lambda: len(workers.calls(first_run, "publish")) == 2, "publish re-entered")
            assert workers.calls(first_run, "publish") == [str(holder.pid), str(standby.pid)]
            assert [p.pid for p in workers.procs if p.poll() is None] == [standby.pid]  # nobody else started
            gate_first.unlink()
            gate_second.unlink()
            assert await client.result(first_run, timeout=PATIENCE) == {"published": "j>fetch", "key": f"{first_run}:1"}
            assert await client.result(second_run, timeout=PATIENCE) == {"published": "k>fetch", "key": f"{second_run}:1"}
            assert len(workers.calls(first_run, "fetch")) == 1
            assert workers.calls(second_run, "publish") == [str(standby.pid)]  # its live worker kept it

    asyncio.run(main())


def test_reading_a_postgres_database_that_does_not_exist_is_a_typed_error_without_the_password(
    postgres: str,
) -> None:
    name = f"t_missing_{uuid.uuid4().hex[:8]}"
    host = postgres.split("@", 1)[1]
    url = f"dbos+postgresql://postgres:s3cret@{host}/{name}"

    async def read() -> str:
        async with perdure.Client(url) as client:
            with pytest.raises(ConfigurationError) as failed:
                await client.runs()
            return str(failed.value)

    message = asyncio.run(read())
    assert f'database "{name}" does not exist' in message and "postgres:***@" in message
    assert "s3cret" not in message  # reading did not create it (the next read fails the same way)
    assert asyncio.run(read()) == message


"""``perdure demo``: an agent run, a SIGKILLed worker, a new worker, and what was replayed vs re-run."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..core.client import Client
from ..core.types import StepKind, StepRecord

TOPIC = "durable agents"
KILL_DURING = "model (turn 2)"


def default_url(workdir: Path) -> str:
    """DBOS on an embedded SQLite file when DBOS is installed, else the in-process reference engine."""
    if importlib.util.find_spec("dbos") is not None:
        return f"dbos+sqlite:///{(workdir / 'demo.sqlite').resolve()}"
    return "memory://demo"


def _events(workdir: Path) -> list[dict[str, Any]]:
    path = workdir / "events.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def _until(pred: Any, what: str, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"demo: {what} did not happen within {timeout} s")
        await asyncio.sleep(0.05)


class _Workers:
    """Worker 1 and worker 2: processes for durable engines, tasks for memory://."""

    def __init__(self, url: str, workdir: Path) -> None:
        self.url, self.workdir = url, workdir
        self.in_process = url.startswith("memory:")
        self.proc: subprocess.Popen[bytes] | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self, number: int) -> str:
        env = {**os.environ, "PERDURE_DEMO_DIR": str(self.workdir), "PERDURE_DEMO_WORKER": str(number)}
        if self.in_process:
            from ..core.worker import serve

            os.environ.update(env)
            ready = asyncio.Event()
            self.task = asyncio.create_task(serve(self.url, apps=["perdure.examples.demo_agent"], ready=ready.set))
            await asyncio.wait_for(ready.wait(), 30)
            return f"worker {number} (in-process task)"
        log = self.workdir / f"worker-{number}.log"
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "perdure", "worker", self.url, "--app", "perdure.examples.demo_agent"],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )
        await _until(lambda: _async(b"perdure worker ready" in log.read_bytes() or self.proc.poll() is not None),
                     "worker start")
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker {number} exited:\n{log.read_text()[-2000:]}")
        return f"worker {number} (pid {self.proc.pid})"

    async def kill(self) -> None:
        if self.in_process:
            from ..adapters.memory import engine_for

            engine_for(self.url.split("://", 1)[1] or "default").crash_workers()
            if self.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await self.task
        elif self.proc is not None:
            os.kill(self.proc.pid, signal.SIGKILL)
            await asyncio.to_thread(self.proc.wait)

    async def stop(self) -> None:
        if self.in_process:
            if self.task is not None:
                self.task.cancel()
        elif self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(asyncio.to_thread(self.proc.wait), 10)
            except TimeoutError:
                self.proc.kill()


async def _async(value: Any) -> Any:
    return value


def _labels(records: list[StepRecord]) -> list[str]:
    labels, turn = [], 0
    for r in records:
        if r.name == "demo.model":
            turn += 1
            labels.append(f"model (turn {turn})")
        elif r.kind is StepKind.APPROVAL:
            labels.append(f"approval {r.name!r}")
        else:
            labels.append(r.name.removeprefix("demo."))
    return labels


async def _demo(url: str, workdir: Path) -> int:
    print(f"perdure demo on {url}\n")
    workers = _Workers(url, workdir)
    try:
        async with Client(url) as client:
            print(f"started {await workers.start(1)}")
            run_id = await client.start("demo.research_agent", run_id=f"demo-{int(time.time())}", topic=TOPIC)
            print(f"started run {run_id}: plan -> search -> draft -> approval -> publish -> summarize")

            await _until(lambda: _async(any(e.get("step") == KILL_DURING for e in _events(workdir))), "the draft step")
            await workers.kill()
            how = "crash (simulated in-process on memory://)" if workers.in_process else "SIGKILL"
            print(f"\n** {how}: worker 1 while {KILL_DURING!r} is running **\n")
            recorded = [r for r in await client.steps(run_id) if r.status.value == "COMPLETED"]
            print("journal after the crash: " + ", ".join(_labels(recorded)) + " recorded")

            print(f"started {await workers.start(2)} -- it replays the journal and resumes")
            info = await _until(lambda: _pending(client, run_id), "the approval")
            p = info.pending_approval
            print(f"\nrun is {info.status.value}: approval {p.approval_id!r} on {json.dumps(p.payload)}")
            print(f"approving as a reviewer would with: perdure approve {run_id} {p.approval_id} --by reviewer")
            await client.approve(run_id, p.approval_id, by="reviewer", digest=p.digest)

            output = await client.result(run_id, timeout=90)
            records = await client.steps(run_id)
    finally:
        await workers.stop()

    print(f"\nresult: {json.dumps(output)}\n")
    _report(records, workdir)
    return 0


async def _pending(client: Client, run_id: str) -> Any:
    info = await client.status(run_id)
    return info if info.pending_approval is not None else None


def _report(records: list[StepRecord], workdir: Path) -> None:
    ran: dict[str, list[str]] = {}
    for e in _events(workdir):
        ran.setdefault(e["step"], []).append(f"worker {e.get('worker', '?')}")
    print(f"{'pos':>3}  {'step':<22} {'executions':<32} after the crash")
    replayed, rerun = [], []
    for r, label in zip(records, _labels(records), strict=True):
        where = ran.get(label, [])
        if r.kind is StepKind.APPROVAL:
            verdict, where_text = "decided by a human", "-"
        elif "worker 1" in where and "worker 2" in where:
            verdict = "re-executed (in flight at the kill)"
            rerun.append(label)
        elif "worker 1" in where:
            verdict = "replayed from the journal, not re-run"
            replayed.append(label)
        else:
            verdict = "ran in the new worker"
        if r.kind is not StepKind.APPROVAL:
            where_text = ", ".join(where) or "-"
        print(f"{r.position:>3}  {label:<22} {where_text:<32} {verdict}")
    outbox = workdir / "outbox.jsonl"
    posts = len(outbox.read_text().splitlines()) if outbox.exists() else 0
    print(f"\nreplayed without running again: {', '.join(replayed) or 'none'}")
    print(f"re-executed because it was in flight: {', '.join(rerun) or 'none'}")
    print(f"posts in the outbox: {posts} (the publish tool's idempotency key keeps it at one)")


def run_demo(url: str | None, workdir: Path) -> int:
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    for name in ("events.log", "outbox.jsonl"):
        (workdir / name).unlink(missing_ok=True)
    return asyncio.run(_demo(url or default_url(workdir), workdir))

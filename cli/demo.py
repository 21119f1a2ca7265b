"""``perdure demo``: an agent run, a SIGKILLed worker, a new worker, and what was replayed vs re-run."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import time
from pathlib import Path
from typing import Any

from ..core.backend import redact_url
from ..core.client import Client
from ..core.types import StepKind, StepRecord
from ..examples.workers import DemoWorker, until

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
    print(f"perdure demo on {redact_url(url)}\n")
    workers = DemoWorker(url, workdir, "perdure.examples.demo_agent")
    try:
        async with Client(url) as client:
            print(f"started {await workers.start(1)}")
            run_id = await client.start("demo.research_agent", run_id=f"demo-{int(time.time())}", topic=TOPIC)
            print(f"started run {run_id}: plan -> search -> draft -> approval -> publish -> summarize")

            await until(lambda: any(e.get("step") == KILL_DURING for e in _events(workdir)), "the draft step")
            await workers.kill()
            print(f"\n** {workers.crash}: worker 1 while {KILL_DURING!r} is running **\n")
            recorded = [r for r in await client.steps(run_id) if r.status.value == "COMPLETED"]
            print("journal after the crash: " + ", ".join(_labels(recorded)) + " recorded")

            print(f"started {await workers.start(2)} -- it replays the journal and resumes")
            info = await until(lambda: _pending(client, run_id), "the approval")
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
    from ..examples import demo_agent  # noqa: F401  (registers the workflow for an in-process worker)

    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    for name in ("events.log", "outbox.jsonl"):
        (workdir / name).unlink(missing_ok=True)
    return asyncio.run(_demo(url or default_url(workdir), workdir))

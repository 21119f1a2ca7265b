"""The workflows benchmark workers serve: ``python -m perdure worker URL --app bench_app`` (benchmarks/ on
PYTHONPATH), or imported in process for the memory engine.

* ``perf.history`` -- ``n`` trivial steps, then a *gate* step that holds the worker (the benchmark kills
  it there), then ``perf.after``. The gate and ``after`` note when and in which process they start, in
  files under ``marks``: that is how the driver times recovery (gate entered again) and resume cost
  (``after`` entered: the first step that never ran before the kill).
* ``perf.short`` (three steps, for throughput) and ``perf.waiting`` (an approval nobody decides, for
  memory per waiting run).

It imports nothing but perdure, so a worker's start-up (part of recovery time) is perdure's and the
engine's, not the benchmark's. The agent-turn workflow is in bench_agent.py.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import perdure

# --- history, gate, after -------------------------------------------------------------------------------


def mark(marks: str, what: str) -> None:
    """Append ``"<wall time> <pid>"`` to ``marks/<what>`` (one line per execution)."""
    with open(Path(marks) / what, "a") as f:
        f.write(f"{time.time()} {os.getpid()}\n")


@perdure.step(name="perf.tick")
async def tick(i: int) -> int:
    return i + 1


@perdure.step(name="perf.gate")
async def gate(marks: str) -> str:
    """Held until ``marks/release`` exists; the worker is killed in here."""
    mark(marks, "gate")
    release = Path(marks) / "release"
    while not release.exists():
        await asyncio.sleep(0.002)
    return "passed"


@perdure.step(name="perf.after")
async def after(marks: str) -> str:
    mark(marks, "after")
    return "after"


@perdure.workflow(name="perf.history")
async def history(n: int, marks: str) -> int:
    total = 0
    for _ in range(n):
        total = await tick(total)
    await gate(marks)
    await after(marks)
    return total


@perdure.workflow(name="perf.short")
async def short() -> int:
    return await tick(await tick(await tick(0)))


@perdure.workflow(name="perf.waiting")
async def waiting() -> bool:
    decision = await perdure.approval("go", {"why": "memory per waiting run"})
    return decision.approved

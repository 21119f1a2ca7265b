"""Workflows the DBOS kill tests run in real worker processes (``--app dbos_app``, tests/ on PYTHONPATH).

Step bodies record each execution in ``$DBOS_TEST_DIR/calls`` and, when a gate file is armed, wait until
it is released, so a test can hold a worker inside a step and SIGKILL it there. ``DBOS_TEST_VARIANT``
selects a code version, as a deploy between a crash and a restart would.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import perdure

VARIANT = os.environ.get("DBOS_TEST_VARIANT", "base")


def _dir() -> Path:
    return Path(os.environ["DBOS_TEST_DIR"])


async def _checkpoint(label: str) -> None:
    """Count the call, then wait while ``<label>.gate`` exists (the test holds the worker here)."""
    rid = perdure.run_id()
    with open(_dir() / "calls", "a") as f:
        f.write(f"{rid} {label} {os.getpid()}\n")
    gate = _dir() / f"{rid}.{label}.gate"
    while gate.exists():
        await asyncio.sleep(0.01)


@perdure.step(name="t.fetch")
async def fetch(x: str) -> str:
    await _checkpoint("fetch")
    return f"{x}>fetch"


@perdure.tool(name="t.publish")
async def publish(x: str) -> dict[str, Any]:
    await _checkpoint("publish")
    return {"published": x, "key": perdure.idempotency_key()}


@perdure.workflow(name="t.pipeline")
async def pipeline(x: str) -> dict[str, Any]:
    if VARIANT == "approval-first":  # a deploy that put an approval where a step was
        await perdure.approval("inserted", {"x": x})
    fetched = await fetch(x)
    published = await publish(fetched)
    if VARIANT == "extra-step":  # a compatible deploy: one more step after the recorded ones
        await fetch("extra")
    return published


@perdure.workflow(name="t.review")
async def review(x: str, timeout: float | None = None) -> dict[str, Any]:
    draft = await fetch(x)
    decision = await perdure.approval("review", {"draft": draft}, timeout=timeout)
    await perdure.sleep(0.05)
    return {"approved": decision.approved, "by": decision.by, "draft": draft}


@perdure.workflow(name="t.long")
async def long(x: str, n: int) -> dict[str, Any]:
    """``n`` recorded steps, then the tool: a history long enough to be replayed from one read."""
    fetched = []
    for i in range(n):
        if VARIANT == "reordered" and i == n - 1:  # a deploy that changed a step deep in the recorded history
            await publish(x)
        fetched.append(await fetch(f"{x}{i}"))
    return {"fetched": fetched, **await publish(x)}

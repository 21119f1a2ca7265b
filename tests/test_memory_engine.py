"""The reference engine's own guarantees: fencing of zombie workers, recovery, cancel, idempotent start."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

import perdure
from perdure.adapters.memory import MemoryBackend, engine_for
from perdure.core.errors import RunConflictError

events: list[str] = []
release = {"go": False}


@perdure.step(name="m.slow")
async def slow(tag: str) -> str:
    events.append(f"start:{tag}")
    while not release["go"]:
        await asyncio.sleep(0.005)
    events.append(f"end:{tag}")
    return tag


@perdure.step(name="m.after")
async def after(tag: str) -> str:
    events.append(f"after:{tag}")
    return tag


@perdure.workflow(name="m.flow")
async def flow() -> str:
    await slow("one")
    return await after("two")


async def _wait(pred: Any) -> None:
    for _ in range(2000):
        if pred():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


def test_zombie_worker_writes_are_refused_and_the_new_worker_wins() -> None:
    async def main() -> Any:
        url = f"memory://z-{uuid.uuid4().hex[:6]}"
        engine = engine_for(url.split("://")[1])
        client = perdure.Client(url)
        w1 = asyncio.create_task(MemoryBackend(url).serve())
        rid = await client.start(flow)
        await _wait(lambda: "start:one" in events)
        engine.crash_workers(abandon=True)  # the old task keeps running: a zombie
        w2 = asyncio.create_task(MemoryBackend(url).serve())
        await _wait(lambda: events.count("start:one") == 2)
        release["go"] = True
        out = await client.result(rid, timeout=10)
        await asyncio.sleep(0.05)
        w1.cancel()
        w2.cancel()
        return out, await client.steps(rid)

    events.clear()
    release["go"] = False
    out, records = asyncio.run(main())
    assert out == "two"
    # Both copies of the step ran to the end, but only one record exists and the next step ran once.
    assert events.count("end:one") == 2 and events.count("after:two") == 1
    assert [(r.name, r.attempts) for r in records] == [("m.slow", 1), ("m.after", 1)]


def test_cancel_without_a_worker_and_a_conflicting_start() -> None:
    async def main() -> Any:
        client = perdure.Client(f"memory://c-{uuid.uuid4().hex[:6]}")
        rid = await client.start(flow, run_id="same")
        await client.cancel(rid)
        with pytest.raises(RunConflictError):
            await client.start("other.workflow", run_id="same")
        assert await client.start(flow, run_id="same") == "same"
        return (await client.status(rid)).status

    assert asyncio.run(main()) is perdure.RunStatus.CANCELLED


def test_memory_urls() -> None:
    with pytest.raises(perdure.InvalidBackendURLError):
        MemoryBackend("memory://name/path")
    assert MemoryBackend("memory://").engine is MemoryBackend("memory://default").engine

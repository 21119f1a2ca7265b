"""``memory://[name]``: the reference backend. Client and worker must share one process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ClassVar

from ...core.backend import Backend, Capabilities, redact_url
from ...core.errors import InvalidBackendURLError
from ...core.types import Decision, RunInfo, StepRecord
from .engine import MemoryEngine

_engines: dict[str, MemoryEngine] = {}


def engine_for(name: str = "default", cls: type[MemoryEngine] = MemoryEngine) -> MemoryEngine:
    """The process-wide engine behind ``memory://name`` (``memory://`` is ``default``)."""
    engine = _engines.get(name)
    if engine is None:
        engine = _engines[name] = cls(name)
    elif type(engine) is not cls:
        raise InvalidBackendURLError(f"memory://{name} is already in use by a {type(engine).__name__}")
    return engine


class MemoryBackend(Backend):
    """Every ``memory://`` URL with the same name shares one :class:`MemoryEngine` in this process."""

    schemes: ClassVar[tuple[str, ...]] = ("memory",)
    capabilities: ClassVar[Capabilities] = Capabilities(separate_worker_processes=False)
    engine_class: ClassVar[type[MemoryEngine]] = MemoryEngine

    def __init__(self, url: str) -> None:
        super().__init__(url)
        if self.parts.path not in ("", "/") or self.parts.query:
            raise InvalidBackendURLError(f"{redact_url(url)!r}: a memory URL is memory:// or memory://NAME")
        self.engine = engine_for(self.parts.netloc or "default", self.engine_class)

    async def start(self, workflow: str, args_json: str, run_id: str) -> RunInfo:
        return self.engine.start(workflow, args_json, run_id).info()

    async def describe(self, run_id: str) -> RunInfo:
        return self.engine.get(run_id).info()

    async def steps(self, run_id: str) -> list[StepRecord]:
        return self.engine.steps(run_id)

    async def list_runs(self, limit: int = 50) -> list[RunInfo]:
        runs = sorted(self.engine.runs.values(), key=lambda r: r.created_at, reverse=True)
        return [r.info() for r in runs[:limit]]

    async def decide(self, run_id: str, approval_id: str, decision: Decision) -> None:
        self.engine.decide(run_id, approval_id, decision)

    async def cancel(self, run_id: str) -> None:
        self.engine.cancel(run_id)

    async def serve(self, *, ready: Callable[[], None] | None = None) -> None:
        engine = self.engine
        worker = engine.add_worker()
        if ready is not None:
            ready()
        try:
            while not worker.dead.is_set():
                for run in engine.claim(worker):
                    task = asyncio.create_task(engine.execute(run, worker.epoch), name=f"perdure:{run.run_id}")
                    run.task = task
                    worker.tasks.add(task)
                    task.add_done_callback(worker.tasks.discard)
                worker.wake.clear()
                waiter = asyncio.ensure_future(worker.wake.wait())
                dead = asyncio.ensure_future(worker.dead.wait())
                await asyncio.wait({waiter, dead}, timeout=0.05, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                dead.cancel()
        finally:
            # Clean shutdown (cancelled) behaves like a crash for the journal: unfinished runs are
            # released and the next worker replays them.
            if not worker.abandoned:
                for t in list(worker.tasks):
                    t.cancel()
            engine.remove_worker(worker)

"""Worker processes for the crash-and-resume demos (``perdure demo`` and the agent examples).

Durable engines get a real ``perdure worker`` process, SIGKILLed for real; ``memory://`` gets a task in
this process whose crash is simulated (its journal lives here, so a second process could not reach it).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..core.worker import serve

DIR_ENV = "PERDURE_EXAMPLE_DIR"  # where the examples' steps write their event log and effects
WORKER_ENV = "PERDURE_EXAMPLE_WORKER"  # which worker (1, 2, ...) ran a step, for the demos' report


class DemoWorker:
    """Starts worker number 1, 2, ... of ``app`` on ``url``; ``kill()`` SIGKILLs the current one.

    Each worker gets ``PERDURE_EXAMPLE_DIR`` (the demo's working directory) and ``PERDURE_EXAMPLE_WORKER``
    (its number) in its environment.
    """

    def __init__(self, url: str, workdir: Path, app: str) -> None:
        self.url, self.workdir, self.app = url, workdir, app
        self.in_process = url.startswith("memory:")
        self.proc: subprocess.Popen[bytes] | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self, number: int) -> str:
        """Start worker ``number``; returns how to name it."""
        env = {DIR_ENV: str(self.workdir), WORKER_ENV: str(number)}
        if self.in_process:
            # The caller's process already registered the workflows (it may run ``app`` as __main__, so
            # importing it again by name would register them twice).
            os.environ.update(env)
            ready = asyncio.Event()
            task = self.task = asyncio.create_task(serve(self.url, ready=ready.set))
            await until(lambda: ready.is_set() or task.done(), f"worker {number} start", 60)
            if task.done():
                task.result()  # raises what stopped the worker
            return f"worker {number} (in-process task)"
        log = self.workdir / f"worker-{number}.log"
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "perdure", "worker", self.url, "--app", self.app],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True,
            )
        proc = self.proc
        await until(lambda: b"perdure worker ready" in log.read_bytes() or proc.poll() is not None,
                    f"worker {number} start")
        if proc.poll() is not None:
            raise RuntimeError(f"worker {number} exited:\n{log.read_text()[-2000:]}")
        return f"worker {number} (pid {proc.pid})"

    @property
    def crash(self) -> str:
        """How the kill reads in the demos' output."""
        return "crash (simulated in-process on memory://)" if self.in_process else "SIGKILL"

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
        """Stop the current worker cleanly (SIGINT, then SIGKILL after 10 s)."""
        if self.in_process:
            if self.task is not None:
                self.task.cancel()
        elif self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(asyncio.to_thread(self.proc.wait), 10)
            except TimeoutError:
                self.proc.kill()


async def until(check: Callable[[], Any | Awaitable[Any]], what: str, timeout: float = 120.0) -> Any:
    """Poll ``check()`` (sync or async) until it gives something true; :class:`TimeoutError` naming
    ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout} s")
        await asyncio.sleep(0.05)

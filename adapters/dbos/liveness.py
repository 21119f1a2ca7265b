"""Which perdure DBOS workers are alive, and how a live worker takes over a dead worker's runs.

DBOS recovers a workflow when the *executor* that ran it launches again. With every worker sharing DBOS's
default executor id (``local``), a killed worker's runs waited until some worker process (re)started --
a worker already running never took them -- and a worker starting next to a live one re-enqueued the live
one's runs as well. So each perdure worker is a DBOS executor of its own (``perdure-<hex>``), and proves it
is alive with a lock that is released the moment its process dies -- by the kernel or the database, not
after a timeout:

* SQLite: an exclusive ``flock`` on ``<database file>.workers/<executor id>.lock``;
* Postgres: a session advisory lock (a random 63-bit key) on a connection the worker keeps open.

A worker takes its lock, *then* registers in ``perdure_workers`` (a registered worker that lives always
holds its lock), then launches DBOS. Every :func:`recovery_poll` seconds each worker tries the locks of the
other registered workers. A lock it obtains belongs to a dead worker: it puts that worker's PENDING runs
back on perdure's queue (DBOS's recovery for an executor id, internals.py; every live worker polls the
queue), deletes the row and lets the lock go. A live worker's lock cannot be obtained, so its runs are
never taken over. Should a live worker still be taken for dead (its Postgres connection broke), DBOS's
ownership check refuses every later write of its old execution: a run is recorded by one execution only.

A worker stopping normally keeps its row and releases its lock: another live worker (or the next to
start) takes its unfinished runs at once. Runs left by workers of earlier perdure versions (executor
``local``) are recovered by each worker when it starts, as DBOS itself did.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import sys
import tempfile
import threading
import time
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from . import internals
from .database import Database, workers_table

log = logging.getLogger("perdure.dbos")

LEGACY_EXECUTOR = "local"  # DBOS's default executor id, shared by the workers of earlier perdure versions


def recovery_poll() -> float:
    """Seconds between a worker's checks for dead workers (``PERDURE_DBOS_RECOVERY_POLL_SECONDS``)."""
    return float(os.environ.get("PERDURE_DBOS_RECOVERY_POLL_SECONDS", "0.2"))


class Locks(ABC):
    """This worker's proof of life, and the test of the other workers'."""

    key: int  # this worker's lock key (Postgres advisory lock; recorded on SQLite too)

    @abstractmethod
    def hold(self, executor_id: str) -> None:
        """Take this worker's own lock, for as long as the process lives (or :meth:`close`)."""

    @abstractmethod
    def take_dead(self, workers: list[Any]) -> list[Any]:
        """The rows of ``workers`` whose lock this worker could take, i.e. dead workers; their locks stay
        held until :meth:`let_go`."""

    @abstractmethod
    def let_go(self, worker: Any) -> None:
        """Release a dead worker's lock once its runs are recovered and its row deleted."""

    @abstractmethod
    def close(self) -> None:
        """Release this worker's own lock."""


class FileLocks(Locks):
    """SQLite: ``flock`` on one file per worker next to the database (the kernel drops it on SIGKILL)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.key = 0
        self.own: int | None = None
        self.taken: dict[str, int] = {}

    def _path(self, executor_id: str) -> Path:
        return self.directory / f"{executor_id}.lock"

    def hold(self, executor_id: str) -> None:
        fd = os.open(self._path(executor_id), os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):  # a fresh random id: nobody else can hold it
            os.close(fd)
            raise RuntimeError(f"the lock of new worker {executor_id} is held by another process")
        self.own = fd

    def take_dead(self, workers: list[Any]) -> list[Any]:
        dead = []
        for worker in workers:
            # O_CREAT: a worker whose file is gone cannot be holding it.
            fd = os.open(self._path(worker.executor_id), os.O_RDWR | os.O_CREAT, 0o644)
            if _try_lock(fd):
                self.taken[worker.executor_id] = fd
                dead.append(worker)
            else:
                os.close(fd)
        return dead

    def let_go(self, worker: Any) -> None:
        fd = self.taken.pop(worker.executor_id, None)
        if fd is not None:
            with contextlib.suppress(FileNotFoundError):
                self._path(worker.executor_id).unlink()  # while locked: no live worker uses this file
            os.close(fd)

    def close(self) -> None:
        for fd in [*self.taken.values(), *([] if self.own is None else [self.own])]:
            os.close(fd)
        self.taken.clear()
        self.own = None


def _try_lock(fd: int) -> bool:
    """Take an exclusive lock on an open file without waiting; False if another open file holds it."""
    if sys.platform == "win32":
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


class AdvisoryLocks(Locks):
    """Postgres: session advisory locks on one connection this worker keeps (released when it closes)."""

    def __init__(self, engine: sa.Engine) -> None:
        # Its own connection, outside any pool, in autocommit: the lock lives exactly as long as it does.
        self.engine = sa.create_engine(engine.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        self.conn: sa.Connection | None = None
        self.key = 0

    def _connection(self) -> sa.Connection:
        if self.conn is None:
            self.conn = self.engine.connect()
        return self.conn

    def hold(self, executor_id: str) -> None:
        while True:
            key = secrets.randbits(63)
            if self._connection().execute(sa.select(sa.func.pg_try_advisory_lock(key))).scalar():
                self.key = key
                return

    def ensure(self) -> bool:
        """Make sure the lock connection is alive; if it broke (the server dropped this worker's lock), open a
        new one and lock this worker's key on it again. Returns whether it had to."""
        try:
            self._connection().execute(sa.select(1))
            return False
        except Exception:
            pass
        self.close()
        # Waits while a sweeper that took this worker for dead holds the key (until it has recovered).
        while not self._connection().execute(sa.select(sa.func.pg_try_advisory_lock(self.key))).scalar():
            time.sleep(recovery_poll())
        return True

    def take_dead(self, workers: list[Any]) -> list[Any]:
        if not workers:
            return []
        # One round trip for all of them; the locks obtained stay held by this connection.
        locked = set(self._connection().execute(
            sa.text("SELECT k FROM unnest(CAST(:keys AS bigint[])) AS k WHERE pg_try_advisory_lock(k)"),
            {"keys": [w.lock_key for w in workers]},
        ).scalars())
        return [w for w in workers if w.lock_key in locked]

    def let_go(self, worker: Any) -> None:
        self._connection().execute(sa.select(sa.func.pg_advisory_unlock(worker.lock_key)))

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()  # the server drops every lock of the session
            self.conn = None


class Watch:
    """This worker's registration (executor id, lock, row) and its thread that recovers dead workers' runs."""

    def __init__(self, db: Database, engine: sa.Engine) -> None:
        self.engine = engine
        self.executor_id = f"perdure-{uuid.uuid4().hex[:16]}"
        if db.sqlite:
            path = sa.make_url(db.dbos_url).database
            # An in-memory database has no other process to hand runs to: any private directory will do.
            where = Path(f"{path}.workers") if path and path != ":memory:" else Path(tempfile.mkdtemp())
            self.locks: Locks = FileLocks(where)
        else:
            self.locks = AdvisoryLocks(engine)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def register(self) -> None:
        """Take this worker's lock, then add its row (before DBOS launches and dequeues anything)."""
        self.locks.hold(self.executor_id)
        self._insert_row()

    def _insert_row(self) -> None:
        with self.engine.begin() as conn:
            exists = conn.execute(
                sa.select(workers_table.c.executor_id).where(workers_table.c.executor_id == self.executor_id)
            ).first()
            if exists is None:
                conn.execute(workers_table.insert().values(
                    executor_id=self.executor_id, lock_key=self.locks.key, host=socket.gethostname(),
                    pid=os.getpid(), started_at=time.time(),
                ))

    def start(self) -> None:
        """Check once now -- a worker that says it is ready has already taken over dead workers' runs,
        including those of earlier perdure versions -- then every :func:`recovery_poll` seconds in a thread.
        DBOS must be launched: recovery re-enqueues through it."""
        try:
            internals.recover_executor(LEGACY_EXECUTOR)
        except Exception:
            log.warning("recovering the runs of earlier perdure workers failed", exc_info=True)
        self._check()
        self._thread = threading.Thread(target=self._run, name="perdure-liveness", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(recovery_poll()):
            self._check()

    def _check(self) -> None:
        try:
            self.sweep()
        except Exception:
            log.warning("checking for dead perdure workers failed; trying again", exc_info=True)
            # Only a broken lock connection is re-made: closing a live one would drop this worker's lock.
            if isinstance(self.locks, AdvisoryLocks):
                with contextlib.suppress(Exception):
                    if self.locks.ensure():
                        self._insert_row()  # back, if a sweeper took this worker for dead meanwhile

    def sweep(self) -> list[str]:
        """Recover the runs of every registered worker that is dead; returns their executor ids."""
        with self.engine.connect() as conn:
            others = conn.execute(
                sa.select(workers_table.c.executor_id, workers_table.c.lock_key).where(
                    workers_table.c.executor_id != self.executor_id
                )
            ).all()
        recovered = []
        for worker in self.locks.take_dead(list(others)):
            try:
                runs = internals.recover_executor(worker.executor_id)
                with self.engine.begin() as conn:
                    conn.execute(workers_table.delete().where(workers_table.c.executor_id == worker.executor_id))
            finally:
                self.locks.let_go(worker)
            recovered.append(worker.executor_id)
            if runs:
                log.warning("perdure worker %s is gone; its %d unfinished run(s) continue on this and the other "
                            "live workers", worker.executor_id, runs)
        return recovered

    def stop(self) -> None:
        """Stop checking (call before DBOS is destroyed)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def release(self) -> None:
        """Let this worker's lock go (after DBOS stopped): its unfinished runs go to the live workers."""
        self.locks.close()

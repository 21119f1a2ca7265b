"""The DBOS system database as perdure uses it: URLs, connections, and the two tables perdure adds.

Everything durable lives in DBOS's system database (SQLite file or Postgres database). perdure adds:

* ``perdure_decisions``, whose primary key makes an approval's outcome exactly-once: a human's decision
  and a worker's timeout both *claim* the row ``(run_id, approval_id)``; whoever inserts first wins,
  atomically, whether or not a worker is running. The decision itself is delivered with DBOS's own
  ``send`` in the same transaction, so a claimed decision is always a delivered one.
* ``perdure_workers``, one row per worker process (its DBOS executor id and liveness lock key), so live
  workers can find dead ones and take over their runs (liveness.py).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult

import pydantic_core
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError

from ...core.backend import redact_url
from ...core.errors import ConfigurationError, InvalidBackendURLError

APP_NAME = "perdure"
# DBOS recovers only runs of its own application version. By default that is a hash of the workflow
# source code, so any edit would silently orphan pending runs. perdure registers one generic DBOS
# workflow whose code never changes with user code, and pins the version: a user code change then
# replays under the new code, and a reordered step surfaces as NonDeterminismError. Bump this only
# when the journal layout written by this adapter changes incompatibly (workers warn about old runs).
APP_VERSION = "perdure-journal-1"
QUEUE = "perdure"  # every run is enqueued here; recovery re-enqueues a dead worker's runs here too
DBOS_WORKFLOW = "perdure.run"  # the generic DBOS workflow (see journal.py)
PENDING_EVENT = "perdure.pending_approval"  # DBOS event holding the pending approval, or None


def queue_polling_interval() -> float:
    """Seconds between a worker's polls of the run queue (start latency and recovery latency).

    DBOS's default of 1 s is what makes plain DBOS recovery take 1.5-1.8 s; perdure polls every 50 ms.
    """
    return float(os.environ.get("PERDURE_DBOS_POLL_SECONDS", "0.05"))


_decisions = sa.Table(
    "perdure_decisions",
    sa.MetaData(),
    sa.Column("run_id", sa.Text, primary_key=True),
    sa.Column("approval_id", sa.Text, primary_key=True),
    sa.Column("outcome", sa.Text, nullable=False),  # "decision" or "timeout"
    sa.Column("decision", sa.Text, nullable=True),  # Decision as JSON (outcome "decision")
    sa.Column("claimed_at", sa.Float, nullable=False),
)

workers_table = sa.Table(
    "perdure_workers",
    sa.MetaData(),
    sa.Column("executor_id", sa.Text, primary_key=True),  # the worker's DBOS executor id
    sa.Column("lock_key", sa.BigInteger, nullable=False),  # Postgres: its advisory lock (liveness.py)
    sa.Column("host", sa.Text, nullable=False),  # for people reading the table
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
)


@dataclass(frozen=True)
class Database:
    """Where one backend URL's system database is, and how to connect to it."""

    url: str  # the backend URL
    dbos_url: str  # the URL DBOS takes (sqlite:///... or postgresql://...)
    sqlite: bool

    @classmethod
    def from_url(cls, url: str, parts: SplitResult) -> Database:
        scheme, _, rest = url.partition("://")
        if scheme == "dbos+sqlite":
            if not parts.path or parts.path == "/" or parts.netloc:
                raise InvalidBackendURLError(
                    f"{redact_url(url)!r}: a DBOS SQLite URL is dbos+sqlite:///relative/path.sqlite or "
                    "dbos+sqlite:////absolute/path.sqlite"
                )
            return cls(url, f"sqlite://{rest}", True)
        if scheme == "dbos+postgresql":
            if not parts.hostname or not parts.path.strip("/"):
                raise InvalidBackendURLError(
                    f"{redact_url(url)!r}: a DBOS Postgres URL is dbos+postgresql://user:password@host:port/database"
                )
            return cls(url, f"postgresql://{rest}", False)
        raise InvalidBackendURLError(f"{redact_url(url)!r}: expected dbos+sqlite:// or dbos+postgresql://")

    @property
    def path(self) -> str | None:
        """The SQLite file (None for Postgres and in-memory SQLite)."""
        path = sa.make_url(self.dbos_url).database if self.sqlite else None
        return path if path and path != ":memory:" else None

    def missing(self) -> bool:
        """Whether this is a SQLite database whose file does not exist yet (connecting would create it)."""
        return self.path is not None and not Path(self.path).exists()

    def create_engine(self, pool_size: int = 5) -> sa.Engine:
        """An SQLAlchemy engine configured the way DBOS configures its own."""
        if self.sqlite:
            engine = sa.create_engine(self.dbos_url, pool_size=pool_size, max_overflow=0, pool_timeout=30)

            @event.listens_for(engine, "connect")
            def _configure(dbapi_conn: Any, _record: Any) -> None:
                # Serialize writers (as DBOS does) and ride out lock contention instead of failing.
                dbapi_conn.isolation_level = "IMMEDIATE"
                dbapi_conn.execute("PRAGMA busy_timeout=30000")
                dbapi_conn.execute("PRAGMA foreign_keys=ON")

            return engine
        url = sa.make_url(self.dbos_url).set(drivername="postgresql+psycopg")
        return sa.create_engine(url, pool_size=pool_size, max_overflow=0, pool_timeout=30, pool_pre_ping=True)


_prepared: set[str] = set()
_prepare_lock = threading.Lock()


def prepare(db: Database, engine: sa.Engine) -> None:
    """Create (or migrate) the system database, perdure's table and the run queue. Idempotent; once per
    process and URL. Clients call it too, so a run can be started before any worker ever ran."""
    with _prepare_lock:
        if db.dbos_url in _prepared:
            return
        for attempt in range(3):
            try:
                _prepare(db, engine)
                break
            except sa.exc.DBAPIError as exc:
                # Another process creating the same database or table at this very moment: look again.
                if attempt == 2:
                    raise ConfigurationError(
                        f"{redact_url(db.url)}: cannot open or create the DBOS system database: {exc.orig or exc}"
                    ) from exc
                time.sleep(0.2)
            except OSError as exc:  # the SQLite file's folder cannot be created
                raise ConfigurationError(f"{redact_url(db.url)}: cannot create the SQLite database's folder: {exc}") from exc
        _prepared.add(db.dbos_url)


def _prepare(db: Database, engine: sa.Engine) -> None:
    from dbos import DBOS, DBOSClient

    if db.path is not None:
        Path(db.path).parent.mkdir(parents=True, exist_ok=True)
    DBOS.migrate(db.dbos_url)  # creates the Postgres database / SQLite file and DBOS's tables
    with engine.begin() as conn:
        conn.execute(sa.schema.CreateTable(_decisions, if_not_exists=True))
        conn.execute(sa.schema.CreateTable(workers_table, if_not_exists=True))
    client = DBOSClient(system_database_engine=engine, application_name=APP_NAME)
    try:
        # Registered before a worker launches, so its queue thread serves the queue from the start.
        client.register_queue(QUEUE, polling_interval_sec=queue_polling_interval(), on_conflict="always_update")
    finally:
        client.destroy()


def insert_decision(conn: sa.Connection, run_id: str, approval_id: str, decision_json: str) -> None:
    """Claim the approval for a human decision, inside the caller's transaction.

    Raises :class:`sqlalchemy.exc.IntegrityError` if it was already decided or timed out; the caller's
    transaction is then rolled back, so nothing of the second decision is kept.
    """
    conn.execute(
        _decisions.insert().values(
            run_id=run_id, approval_id=approval_id, outcome="decision", decision=decision_json, claimed_at=time.time()
        )
    )


def claim_timeout(engine: sa.Engine, run_id: str, approval_id: str) -> Any:
    """Claim the approval for its timeout. Returns None if the timeout won, else the decision (JSON data)
    that was claimed first -- a decision that arrived while the deadline passed still counts."""
    try:
        with engine.begin() as conn:
            conn.execute(
                _decisions.insert().values(run_id=run_id, approval_id=approval_id, outcome="timeout", claimed_at=time.time())
            )
        return None
    except IntegrityError:
        pass
    with engine.begin() as conn:
        row = conn.execute(
            sa.select(_decisions.c.outcome, _decisions.c.decision).where(
                _decisions.c.run_id == run_id, _decisions.c.approval_id == approval_id
            )
        ).one()
    if row.outcome != "decision":  # our own earlier claim (the worker died before recording it)
        return None
    return pydantic_core.from_json(row.decision)

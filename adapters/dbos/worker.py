"""The DBOS worker: ``DBOS.launch()`` configured for perdure, as a DBOS executor of its own.

Each worker process is its own DBOS executor and registers itself with a liveness lock (liveness.py):
while it runs it checks for dead workers and puts their unfinished runs back on perdure's queue, which
every worker polls every 50 ms -- so a run whose worker was SIGKILLed continues on a live worker within
a fraction of a second, or on the next worker to start. Runs left by a worker of another journal version
are not recovered; they are reported loudly instead of being left silently orphaned.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from dbos import DBOS, DBOSClient

from ...core.backend import redact_url
from .database import APP_NAME, APP_VERSION, DBOS_WORKFLOW, Database, prepare
from .liveness import Watch
from .serializer import SERIALIZER

log = logging.getLogger("perdure.dbos")


def _config(db: Database, executor_id: str) -> Any:
    config: dict[str, Any] = {
        "name": APP_NAME,
        "executor_id": executor_id,
        "system_database_url": db.dbos_url,
        "application_version": APP_VERSION,
        "serializer": SERIALIZER,
        "log_level": os.environ.get("PERDURE_DBOS_LOG_LEVEL", "WARNING"),
        "enable_otlp": False,
    }
    if db.sqlite:
        # SQLite has no LISTEN/NOTIFY: DBOS polls for messages (approval decisions) at this interval.
        config["notification_listener_polling_interval_sec"] = 0.05
    return config


def _warn_other_versions(db: Database, engine: Any) -> None:
    client = DBOSClient(system_database_engine=engine, serializer=SERIALIZER, application_name=APP_NAME)
    try:
        stale = [
            s for s in client.list_workflows(
                name=DBOS_WORKFLOW, status=["PENDING", "ENQUEUED"], load_input=False, load_output=False
            )
            if s.app_version != APP_VERSION
        ]
    finally:
        client.destroy()
    if stale:
        versions = sorted({str(s.app_version) for s in stale})
        log.error(
            "%d unfinished run(s) on %s were started by another perdure journal version (%s, this worker is "
            "%s) and will not be resumed by it: finish them with a worker of that version or cancel them "
            "(`perdure cancel RUN_ID`). First: %s",
            len(stale), redact_url(db.url), ", ".join(versions), APP_VERSION, ", ".join(s.workflow_id for s in stale[:5]),
        )


_engine: sa.Engine | None = None
_watch: Watch | None = None


def _not_cancellation_noise(record: logging.LogRecord) -> bool:
    """DBOS logs a traceback whenever a cancelled workflow stops; for perdure that is a normal cancel."""
    exc = record.exc_info[1] if record.exc_info else None
    return type(exc).__name__ not in ("DBOSAwaitedWorkflowCancelledError", "DBOSWorkflowCancelledError")


def launch(db: Database) -> None:
    """Configure and launch DBOS in this process (blocking). One DBOS per process: DBOS is a singleton."""
    global _engine, _watch
    from . import journal  # registers the generic DBOS workflow before launch

    _engine = db.create_engine(pool_size=4)
    prepare(db, _engine)
    journal.configure(_engine)
    _warn_other_versions(db, _engine)
    _watch = Watch(db, _engine)
    _watch.register()  # alive (lock held, row written) before DBOS dequeues a run under this executor id
    try:
        DBOS(config=_config(db, _watch.executor_id))
        logging.getLogger("dbos").addFilter(_not_cancellation_noise)
        DBOS.launch()
    except BaseException:
        _watch.release()
        raise
    _watch.start()


def shutdown() -> None:
    """Stop DBOS. Runs in flight stay PENDING in the database: a live worker (or the next to start)
    recovers them once this worker's liveness lock is released, after DBOS stopped."""
    global _engine, _watch
    from . import journal

    if _watch is not None:
        _watch.stop()
    DBOS.destroy(destroy_registry=False)
    if _watch is not None:
        _watch.release()
        _watch = None
    journal.configure(None)
    if _engine is not None:
        _engine.dispose()
        _engine = None


async def serve(db: Database, *, ready: Callable[[], None] | None = None) -> None:
    """Run a DBOS worker until cancelled."""
    await asyncio.to_thread(launch, db)
    try:
        if ready is not None:
            ready()
        await asyncio.Event().wait()
    finally:
        await asyncio.to_thread(shutdown)

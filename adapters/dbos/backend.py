"""``dbos+sqlite:///path`` and ``dbos+postgresql://...``: perdure on DBOS (client side and worker).

The client side talks only to the system database through :class:`dbos.DBOSClient`, so any process (the
CLI, a web app, the conformance suite) can start runs, read their status and journal, decide approvals
and cancel, with or without a worker running. The worker is ``DBOS.launch()`` with perdure's generic
workflow (journal.py), the JSON serializer and the pinned application version; at launch DBOS re-enqueues
the runs a dead worker left PENDING onto perdure's queue, which workers poll every 50 ms, so recovery
takes a process start plus one poll.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pydantic_core
import sqlalchemy as sa
from dbos import DBOSClient
from dbos._error import DBOSConflictingWorkflowError
from sqlalchemy.exc import IntegrityError

from ...core.backend import Backend, Capabilities, DevServer, parse_url
from ...core.errors import (
    ApprovalAlreadyDecidedError,
    ConfigurationError,
    InvalidBackendURLError,
    ResultTimeoutError,
    RunConflictError,
    RunNotFoundError,
)
from ...core.types import Decision, RunInfo, StepRecord
from . import records
from .database import (
    APP_NAME,
    APP_VERSION,
    DBOS_WORKFLOW,
    PENDING_EVENT,
    QUEUE,
    Database,
    insert_decision,
    prepare,
)
from .serializer import SERIALIZER


class _NoDatabase(Exception):
    """Reading a SQLite system database whose file does not exist (see DBOSBackend._connect)."""


class DBOSBackend(Backend):
    """perdure on DBOS. State lives in the system database named by the URL; workers are DBOS processes."""

    schemes: ClassVar[tuple[str, ...]] = ("dbos+sqlite", "dbos+postgresql")
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.db = Database.from_url(url, self.parts)
        self._engine: sa.Engine | None = None
        self._client: DBOSClient | None = None
        self._prepared = False
        self._lock = threading.Lock()  # client calls run in worker threads: connect once

    @classmethod
    def anchor_url(cls, url: str, folder: Path) -> str:
        """``dbos+sqlite:///relative.sqlite`` in a config file: relative to the file's folder."""
        try:
            db = Database.from_url(url, parse_url(url, cls.schemes))
        except InvalidBackendURLError:
            return url  # opening the backend says why
        if db.path is None or Path(db.path).is_absolute():
            return url  # Postgres, in-memory SQLite, or already absolute
        _, sep, query = url.partition("?")
        return f"dbos+sqlite:///{(folder / db.path).as_posix()}{sep}{query}"

    # --- connections --------------------------------------------------------------------------------
    def _connect(self, *, write: bool = True) -> DBOSClient:
        """The DBOS client on the system database. Writing (starting a run, deciding, cancelling) first
        creates or migrates the database. Reading never does: inspecting runs needs no write access, and a
        misspelt SQLite path raises :class:`_NoDatabase` instead of leaving an empty database behind."""
        client = self._client
        if client is None or (write and not self._prepared):
            with self._lock:
                if self._client is None:
                    if not write and self.db.missing():
                        raise _NoDatabase
                    self._engine = self.db.create_engine()
                    if write:
                        prepare(self.db, self._engine)
                        self._prepared = True
                    else:
                        self._probe(self._engine)
                    self._client = DBOSClient(
                        system_database_engine=self._engine, serializer=SERIALIZER, application_name=APP_NAME
                    )
                elif write and not self._prepared:
                    assert self._engine is not None
                    prepare(self.db, self._engine)
                    self._prepared = True
                client = self._client
        return client

    def _probe(self, engine: sa.Engine) -> None:
        """Connect once, so an unreachable server or a database that does not exist is a typed error here
        (writing would create the database; reading does not)."""
        try:
            with engine.connect():
                pass
        except sa.exc.DBAPIError as exc:
            engine.dispose()
            self._engine = None
            raise ConfigurationError(f"{self.safe_url}: cannot read the DBOS system database: {exc.orig or exc}") from None

    def _not_found(self, run_id: str) -> RunNotFoundError:
        where = f" (there is no database at {self.db.path})" if self.db.missing() else ""
        return RunNotFoundError(f"no run {run_id!r} on {self.safe_url}{where}")

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a blocking DBOS client call off the event loop."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    def _status(self, run_id: str, *, load: bool = True) -> Any:
        try:
            client = self._connect(write=False)
        except _NoDatabase:
            raise self._not_found(run_id) from None
        found = client.list_workflows(workflow_ids=[run_id], load_input=load, load_output=load)
        if not found:
            raise self._not_found(run_id)
        return found[0]

    def _info(self, status: Any) -> RunInfo:
        pending = None
        if records.needs_pending_event(status):
            pending = self._connect(write=False).get_event(status.workflow_id, PENDING_EVENT, timeout_seconds=0)
        return records.run_info(status, pending)

    # --- client side --------------------------------------------------------------------------------
    async def start(self, workflow: str, args_json: str, run_id: str) -> RunInfo:
        return await self._call(self._start, workflow, args_json, run_id)

    def _start(self, workflow: str, args_json: str, run_id: str) -> RunInfo:
        client = self._connect()
        options: Any = {
            "queue_name": QUEUE,
            "workflow_name": DBOS_WORKFLOW,
            "workflow_id": run_id,
            "app_version": APP_VERSION,
            "application_name": APP_NAME,
        }
        try:
            # An existing workflow ID returns that run: DBOS neither stores the new arguments nor runs it twice.
            client.enqueue(options, workflow, pydantic_core.from_json(args_json))
        except DBOSConflictingWorkflowError:
            raise RunConflictError(f"run {run_id!r} already exists on {self.safe_url} and is not a perdure run") from None
        status = self._status(run_id)
        existing = records.perdure_workflow(status)
        if existing != workflow:
            raise RunConflictError(f"run {run_id!r} already exists for workflow {existing!r}, not {workflow!r}")
        return self._info(status)

    async def wait(self, run_id: str, timeout: float | None = None) -> RunInfo:
        """Poll the run's status row only (one query) until it is terminal, then describe it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.005
        while True:
            status = await self._call(self._status, run_id, load=False)
            if status.status in records.TERMINAL:
                return await self.describe(run_id)
            if deadline is not None and time.monotonic() >= deadline:
                info = await self.describe(run_id)
                raise ResultTimeoutError(f"run {run_id!r} is still {info.status.value} after {timeout} s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

    async def describe(self, run_id: str) -> RunInfo:
        return await self._call(lambda: self._info(self._status(run_id)))

    async def steps(self, run_id: str) -> list[StepRecord]:
        def read() -> list[StepRecord]:
            status = self._status(run_id, load=False)
            operations = self._connect(write=False).list_workflow_steps(run_id)
            return records.step_records(operations, status.status)

        return await self._call(read)

    async def list_runs(self, limit: int = 50) -> list[RunInfo]:
        def read() -> list[RunInfo]:
            try:
                client = self._connect(write=False)
            except _NoDatabase:
                return []  # nothing was ever started there (and reading does not create the file)
            found = client.list_workflows(name=DBOS_WORKFLOW, sort_desc=True, limit=limit)
            return [self._info(s) for s in found]

        return await self._call(read)

    async def decide(self, run_id: str, approval_id: str, decision: Decision) -> None:
        def send() -> None:
            client = self._connect()
            assert self._engine is not None
            message = decision.model_dump(mode="json")
            try:
                # One transaction: the claim (primary key: exactly once, also against the timeout) and
                # DBOS's message to the run (kept until a worker receives it, even if none runs now).
                with self._engine.begin() as conn:
                    insert_decision(conn, run_id, approval_id, pydantic_core.to_json(message).decode())
                    client.send_in_transaction(
                        conn, run_id, message, topic=approval_id, idempotency_key=f"perdure-decision:{approval_id}"
                    )
            except IntegrityError:
                raise ApprovalAlreadyDecidedError(
                    f"approval {approval_id!r} of run {run_id!r} was already decided or timed out"
                ) from None

        await self._call(send)

    async def cancel(self, run_id: str) -> None:
        def cancel() -> None:
            status = self._status(run_id, load=False)  # read first: an unknown run creates nothing
            if status.status in records.TERMINAL:
                return
            self._connect().cancel_workflow(run_id)

        await self._call(cancel)

    async def aclose(self) -> None:
        client, engine = self._client, self._engine
        self._client = self._engine = None
        if client is not None:
            await self._call(client.destroy)
        if engine is not None:
            await self._call(engine.dispose)

    # --- worker side --------------------------------------------------------------------------------
    async def serve(self, *, ready: Callable[[], None] | None = None) -> None:
        from . import worker

        await worker.serve(self.db, ready=ready)

    @classmethod
    def dev_server(cls, scheme: str, workdir: Path) -> DevServer | None:
        from .devserver import PostgresDevServer, SQLiteDevServer

        if scheme == "dbos+sqlite":
            return SQLiteDevServer(workdir)
        if scheme == "dbos+postgresql":
            return PostgresDevServer(workdir)
        raise ConfigurationError(f"no DBOS dev server for {scheme}://")

"""``temporal://host:port/namespace?task_queue=...``: perdure's client and worker on a Temporal cluster.

Client side, SEMANTICS.md onto Temporal's API:

* start -- ``start_workflow`` with the run id as workflow id, ``REJECT_DUPLICATE`` + conflict policy
  ``FAIL``: the server never runs an id twice; on "already started" we describe the existing execution and
  return it, or raise :class:`RunConflictError` when its type (perdure workflow name) differs;
* describe / wait / list -- ``describe`` (+ the close event for output or error), the memo for the
  pending approval, visibility for the list; ``wait`` long-polls the close event;
* steps -- rebuilt from the history by :mod:`.history`;
* decide -- the server decides exactly-once: a tiny gate workflow ``perdure.decision/<run>/<approval>``
  started with ``REJECT_DUPLICATE`` (refusal of a second decision is atomic and needs no worker), whose
  input keeps the decision; then the decision is signalled to the run (signals are kept while no worker
  runs), and the gate signals it again when a worker runs it, in case this client died in between;
* cancel -- ``terminate``: perdure's cancel is immediate and must hold with no worker alive (a Temporal
  cancellation request waits for a worker to act on it). The run reads CANCELLED.

The worker side is :mod:`.worker`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowHistoryEventFilterType,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from ...core.backend import Backend, Capabilities, DevServer
from ...core.errors import (
    ApprovalAlreadyDecidedError,
    ConfigurationError,
    ResultTimeoutError,
    RunConflictError,
    RunNotFoundError,
)
from ...core.types import Decision, PendingApproval, RunInfo, RunStatus, StepRecord
from .devserver import TemporalDevServer
from .history import outcome, step_records
from .payloads import DECISION_SIGNAL, GATE_WORKFLOW, MEMO_PENDING, gate_id, raw
from .settings import TemporalSettings, parse_settings
from .worker import TemporalWorker, worker_options

_CONNECT_TIMEOUT = 15.0  # seconds to keep retrying a connection (a dev server that just opened its port)
_CLOSED = {
    WorkflowExecutionStatus.COMPLETED,
    WorkflowExecutionStatus.FAILED,
    WorkflowExecutionStatus.CANCELED,
    WorkflowExecutionStatus.TERMINATED,
    WorkflowExecutionStatus.TIMED_OUT,
    WorkflowExecutionStatus.CONTINUED_AS_NEW,
}


class TemporalBackend(Backend):
    """perdure on Temporal. One instance holds one connection (made on first use, per event loop)."""

    schemes: ClassVar[tuple[str, ...]] = ("temporal",)
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self, url: str) -> None:
        super().__init__(url)
        p = self.parts
        self.settings: TemporalSettings = parse_settings(url, p.hostname, p.port, p.path, p.query)
        self._client: Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- connection -------------------------------------------------------------------------------
    async def client(self) -> Client:
        """The connected Temporal client (retrying for a few seconds while the server starts)."""
        loop = asyncio.get_running_loop()
        if self._client is not None and self._loop is loop:
            return self._client
        deadline = time.monotonic() + _CONNECT_TIMEOUT
        while True:
            try:
                self._client = await Client.connect(self.settings.address, namespace=self.settings.namespace)
                self._loop = loop
                return self._client
            except RuntimeError as exc:  # the SDK reports connection failures as RuntimeError
                if time.monotonic() >= deadline:
                    raise ConfigurationError(
                        f"cannot reach Temporal at {self.settings.address} (namespace "
                        f"{self.settings.namespace!r}): {exc}. Start one with `perdure dev temporal`."
                    ) from None
                await asyncio.sleep(0.1)

    async def _handle(self, run_id: str) -> tuple[WorkflowHandle[Any, Any], WorkflowExecutionDescription]:
        handle = (await self.client()).get_workflow_handle(run_id)
        try:
            desc = await handle.describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise RunNotFoundError(f"no run {run_id!r} on {self.url}") from None
            raise
        if desc.workflow_type == GATE_WORKFLOW:
            raise RunNotFoundError(f"{run_id!r} is a perdure decision record, not a run")
        return handle, desc

    # --- client side ------------------------------------------------------------------------------
    async def start(self, workflow: str, args_json: str, run_id: str) -> RunInfo:
        client = await self.client()
        try:
            await client.start_workflow(
                workflow,
                raw(args_json),
                id=run_id,
                task_queue=self.settings.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                task_timeout=timedelta(seconds=self.settings.profile.workflow_task_timeout),
            )
        except WorkflowAlreadyStartedError:
            info = await self.describe(run_id)
            if info.workflow != workflow:
                raise RunConflictError(
                    f"run {run_id!r} already exists for workflow {info.workflow!r}, not {workflow!r}"
                ) from None
            return info
        return RunInfo(run_id=run_id, workflow=workflow, status=RunStatus.PENDING, created_at=time.time())

    async def describe(self, run_id: str) -> RunInfo:
        handle, desc = await self._handle(run_id)
        return await self._info(handle, desc)

    async def _info(self, handle: WorkflowHandle[Any, Any], ex: WorkflowExecution) -> RunInfo:
        base: dict[str, Any] = {
            "run_id": ex.id,
            "workflow": ex.workflow_type,
            "created_at": ex.start_time.timestamp(),
        }
        if ex.status in _CLOSED:
            async for close in handle.fetch_history_events(
                event_filter_type=WorkflowHistoryEventFilterType.CLOSE_EVENT
            ):
                status, output, error = outcome(close)
                return RunInfo(status=status, output=output, error=error, **base)
        memo = await ex.memo()
        pending = memo.get(MEMO_PENDING)
        if pending:
            pending = {k: v for k, v in pending.items() if k != "position"}
            return RunInfo(status=RunStatus.WAITING, pending_approval=PendingApproval(**pending), **base)
        # Started + first workflow task scheduled, nothing else: no worker has picked the run up yet.
        status = RunStatus.PENDING if ex.history_length <= 2 else RunStatus.RUNNING
        return RunInfo(status=status, **base)

    async def steps(self, run_id: str) -> list[StepRecord]:
        handle, desc = await self._handle(run_id)
        events = [ev async for ev in handle.fetch_history_events()]
        closed = bool(events) and events[-1].event_type in _CLOSE_EVENTS
        return step_records(events, closed=closed or desc.status in _CLOSED)

    async def list_runs(self, limit: int = 50) -> list[RunInfo]:
        if limit <= 0:
            return []
        client = await self.client()
        runs = f"WorkflowType != '{GATE_WORKFLOW}'"
        # Visibility cannot ORDER BY here; it lists open runs newest-started first and closed runs by
        # close time. A run closes after it starts, so closed runs can stop once one closed before the
        # oldest start time among the ``limit`` newest found so far.
        found = [ex async for ex in client.list_workflows(f"{runs} AND ExecutionStatus = 'Running'", limit=limit)]
        async for ex in client.list_workflows(f"{runs} AND ExecutionStatus != 'Running'"):
            if len(found) >= limit:
                found.sort(key=lambda e: e.start_time, reverse=True)
                del found[limit:]
                if ex.close_time is not None and ex.close_time < found[-1].start_time:
                    break
            found.append(ex)
        found.sort(key=lambda e: e.start_time, reverse=True)
        return list(await asyncio.gather(*(self._info(client.get_workflow_handle(ex.id), ex) for ex in found[:limit])))

    async def wait(self, run_id: str, timeout: float | None = None) -> RunInfo:
        handle, desc = await self._handle(run_id)
        if desc.status not in _CLOSED:
            try:
                await asyncio.wait_for(self._closed(handle), timeout)
            except TimeoutError:
                info = await self.describe(run_id)
                if info.status.terminal:
                    return info
                raise ResultTimeoutError(f"run {run_id!r} is still {info.status.value} after {timeout} s") from None
        return await self.describe(run_id)

    @staticmethod
    async def _closed(handle: WorkflowHandle[Any, Any]) -> None:
        """Return once the run's close event exists (a server-side long poll, no busy polling)."""
        while True:
            async for _ in handle.fetch_history_events(
                wait_new_event=True, event_filter_type=WorkflowHistoryEventFilterType.CLOSE_EVENT
            ):
                return

    async def decide(self, run_id: str, approval_id: str, decision: Decision) -> None:
        client = await self.client()
        decision_json = raw(decision.model_dump_json())
        try:
            await client.start_workflow(
                GATE_WORKFLOW,
                args=[run_id, approval_id, decision_json],
                id=gate_id(run_id, approval_id),
                task_queue=self.settings.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            )
        except WorkflowAlreadyStartedError:
            raise ApprovalAlreadyDecidedError(
                f"approval {approval_id!r} of run {run_id!r} was already decided"
            ) from None
        try:  # the fast path; the gate delivers the same decision if this signal never leaves
            await client.get_workflow_handle(run_id).signal(DECISION_SIGNAL, args=[approval_id, decision_json])
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:  # NOT_FOUND: the run ended meanwhile
                raise

    async def cancel(self, run_id: str) -> None:
        handle, desc = await self._handle(run_id)
        if desc.status in _CLOSED:
            return
        try:
            await handle.terminate(reason="perdure: cancelled")
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:  # NOT_FOUND: it finished meanwhile
                raise

    async def aclose(self) -> None:
        # The SDK client has no close(): its connection goes with the object. The engine is untouched.
        self._client = self._loop = None

    # --- worker side ------------------------------------------------------------------------------
    def worker_options(self) -> dict[str, Any]:
        """The Temporal ``Worker`` options perdure uses (besides workflows and activities)."""
        return worker_options(self.settings)

    async def serve(self, *, ready: Callable[[], None] | None = None) -> None:
        await TemporalWorker(self.settings, await self.client()).serve(ready)

    @classmethod
    def dev_server(cls, scheme: str, workdir: Path) -> DevServer | None:
        return TemporalDevServer(workdir)


_CLOSE_EVENTS = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
}

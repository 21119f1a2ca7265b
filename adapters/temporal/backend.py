"""``temporal://host:port/namespace?task_queue=...``: perdure's client and worker on a Temporal cluster.

Client side, SEMANTICS.md onto Temporal's API:

* start -- ``start_workflow`` with the run id as workflow id, ``REJECT_DUPLICATE`` + conflict policy
  ``FAIL``: the server never runs an id twice while it keeps the run (the namespace's retention, after the
  run closed); on "already started" we describe the existing execution and return it, or raise
  :class:`RunConflictError` when its type (perdure workflow name) differs;
* describe / wait / list -- ``describe`` (+ the close event for output or error), the memo for the
  pending approvals, visibility for the list (this backend's task queue only: the namespace may hold
  other workflows, which are never runs); ``wait`` long-polls the close event;
* steps -- rebuilt from the history by :mod:`.history`;
* decide -- the server decides exactly-once: a tiny gate workflow ``perdure.decision/<run>/<approval>``
  started with ``REJECT_DUPLICATE`` (refusal of a second decision is atomic and needs no worker), whose
  input keeps the decision; then the decision is signalled to the run (signals are kept while no worker
  runs), and the gate signals it again when a worker runs it, in case this client died in between;
* cancel -- ``terminate``: perdure's cancel is immediate and must hold with no worker alive (a Temporal
  cancellation request waits for a worker to act on it). The run reads CANCELLED; any *other*
  termination (the server's, an operator's) reads FAILED, with the reason (``history.termination_error``).

The namespace is checked once per connection: a missing one is a ``ConfigurationError`` (Temporal's
NOT_FOUND would otherwise read as "no such run").

A perdure run may span several Temporal runs of its workflow id (continue-as-new, see
:mod:`.continuation`). Every call here addresses the workflow id without a Temporal run id, i.e. the
latest Temporal run, which holds the whole journal (carried in its input, then its own events); the
earlier ones (status ContinuedAsNew) are left out of listings, and a run's start time is its first
Temporal run's (memo ``perdure.run``).

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
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
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
from .continuation import perdure_input
from .devserver import TemporalDevServer
from .history import outcome, step_records
from .payloads import CANCEL_REASON, DECISION_SIGNAL, GATE_WORKFLOW, MEMO_RUN, gate_id, pending_approvals, raw
from .settings import TemporalSettings, parse_settings
from .worker import TemporalWorker, worker_options

_CONNECT_TIMEOUT = 15.0  # seconds to keep retrying a connection (a dev server that just opened its port)
_CLOSED = {
    WorkflowExecutionStatus.COMPLETED,
    WorkflowExecutionStatus.FAILED,
    WorkflowExecutionStatus.CANCELED,
    WorkflowExecutionStatus.TERMINATED,
    WorkflowExecutionStatus.TIMED_OUT,
}  # (not CONTINUED_AS_NEW: that Temporal run ended, the perdure run goes on in the next)


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

    @property
    def journals_step_start(self) -> bool:
        """An activity is in the history once scheduled; a local activity only once it completed."""
        return self.settings.steps == "activity"

    # --- connection -------------------------------------------------------------------------------
    async def client(self) -> Client:
        """The connected Temporal client (retrying for a few seconds while the server starts)."""
        loop = asyncio.get_running_loop()
        if self._client is not None and self._loop is loop:
            return self._client
        deadline = time.monotonic() + _CONNECT_TIMEOUT
        while True:
            try:
                client = await Client.connect(self.settings.address, namespace=self.settings.namespace)
                await self._check_namespace(client)
                self._client, self._loop = client, loop
                return client
            except (RuntimeError, _Unavailable) as exc:  # the SDK reports connection failures as RuntimeError
                if time.monotonic() >= deadline:
                    raise ConfigurationError(
                        f"cannot reach Temporal at {self.settings.address} (namespace "
                        f"{self.settings.namespace!r}): {exc}. Start one with `perdure dev temporal`."
                    ) from None
                await asyncio.sleep(0.1)

    async def _check_namespace(self, client: Client) -> None:
        """Once per connection: the namespace must exist. Temporal answers NOT_FOUND for a missing namespace
        and a missing run alike, and a worker polling a missing namespace dies at start-up."""
        ns = self.settings.namespace
        try:
            await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=ns))
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise self._no_namespace() from None
            if exc.status == RPCStatusCode.UNAVAILABLE:  # a server still starting: retried like a connection
                raise _Unavailable(exc.message) from None
            # anything else (e.g. PERMISSION_DENIED for a key scoped to its namespace): it may well exist

    def _no_namespace(self) -> ConfigurationError:
        ns = self.settings.namespace
        return ConfigurationError(
            f"the Temporal namespace {ns!r} does not exist on {self.settings.address}: fix the URL's path "
            f"({self.safe_url}) or create it (`temporal operator namespace create --namespace {ns}`)"
        )

    async def _handle(self, run_id: str) -> tuple[WorkflowHandle[Any, Any], WorkflowExecutionDescription]:
        handle = (await self.client()).get_workflow_handle(run_id)
        try:
            desc = await handle.describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                if _namespace_not_found(exc):  # deleted since this client connected
                    raise self._no_namespace() from None
                raise RunNotFoundError(f"no run {run_id!r} on {self.safe_url}") from None
            raise
        if desc.workflow_type == GATE_WORKFLOW:
            raise RunNotFoundError(f"{run_id!r} is a perdure decision record, not a run")
        if desc.task_queue != self.settings.task_queue and not await _started_by_perdure(handle):
            # Every workflow on this backend's task queue is run by perdure's worker; elsewhere in the
            # namespace only one that perdure started (another perdure app's) is a perdure run.
            raise RunNotFoundError(
                f"no run {run_id!r} on {self.safe_url}: {run_id!r} is a Temporal workflow of type "
                f"{desc.workflow_type!r} on task queue {desc.task_queue!r} that perdure did not start"
            )
        return handle, desc

    # --- client side ------------------------------------------------------------------------------
    async def start(self, workflow: str, args_json: str, run_id: str) -> RunInfo:
        client = await self.client()
        try:
            await client.start_workflow(
                workflow,
                args=[raw(args_json), raw(self.settings.run_state().to_json())],
                id=run_id,
                task_queue=self.settings.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                task_timeout=timedelta(seconds=self.settings.profile.workflow_task_timeout),
            )
        except WorkflowAlreadyStartedError:
            try:
                info = await self.describe(run_id)
            except RunNotFoundError as exc:  # a workflow id taken by something that is not a perdure run
                raise RunConflictError(f"run id {run_id!r} is taken: {exc}") from None
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
        memo = await ex.memo()
        continued = memo.get(MEMO_RUN)  # set on the Temporal runs after the first
        base: dict[str, Any] = {
            "run_id": ex.id,
            "workflow": ex.workflow_type,
            "created_at": continued["created_at"] if continued else ex.start_time.timestamp(),
        }
        if ex.status in _CLOSED:
            async for close in handle.fetch_history_events(
                event_filter_type=WorkflowHistoryEventFilterType.CLOSE_EVENT
            ):
                status, output, error = outcome(close)
                return RunInfo(status=status, output=output, error=error, **base)
        pending = pending_approvals(memo)
        if pending:  # several at once (concurrent approvals): the last requested, as the memory engine shows
            shown = {k: v for k, v in pending[-1].items() if k != "position"}
            return RunInfo(status=RunStatus.WAITING, pending_approval=PendingApproval(**shown), **base)
        # Started + first workflow task scheduled, nothing else: no worker has picked the run up yet.
        status = RunStatus.PENDING if ex.history_length <= 2 and not continued else RunStatus.RUNNING
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
        # This backend's runs: its task queue's workflows (the perdure worker runs every type there), less
        # the decision records. Other workflows of the namespace are not listed.
        runs = f"TaskQueue = '{self.settings.task_queue}' AND WorkflowType != '{GATE_WORKFLOW}'"
        # Visibility cannot ORDER BY here; it lists open runs newest-started first and closed runs by
        # close time. A run's order key is its perdure start (its first Temporal run's), which is no
        # later than its current Temporal run's start and earlier than its close: so each listing can stop
        # at the first run that started (open) or closed before the oldest of the ``limit`` newest found
        # so far. Temporal runs that continued as new are not runs of their own.
        found: list[WorkflowExecution] = []
        created: dict[str, float] = {}
        seen: set[str] = set()  # a run that closed between the two listings is in both
        for query, at in (
            (f"{runs} AND ExecutionStatus = 'Running'", lambda e: e.start_time),
            (f"{runs} AND ExecutionStatus != 'Running' AND ExecutionStatus != 'ContinuedAsNew'", lambda e: e.close_time),
        ):
            async for ex in client.list_workflows(query):
                if len(found) >= limit:
                    found.sort(key=lambda e: created[e.run_id], reverse=True)
                    del found[limit:]
                    when = at(ex)
                    if when is not None and when.timestamp() < created[found[-1].run_id]:
                        break
                if ex.id not in seen:
                    seen.add(ex.id)
                    created[ex.run_id] = await _created(ex)
                    found.append(ex)
        found.sort(key=lambda e: created[e.run_id], reverse=True)
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
        """Return once the run's close event exists (a server-side long poll, no busy polling). The
        handle has no Temporal run id: each poll follows the latest Temporal run of a continued run."""
        while True:
            async for event in handle.fetch_history_events(
                wait_new_event=True, event_filter_type=WorkflowHistoryEventFilterType.CLOSE_EVENT
            ):
                if event.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
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
            await handle.terminate(reason=CANCEL_REASON)
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
}


class _Unavailable(Exception):
    """The server did not answer yet (retried while connecting)."""


def _namespace_not_found(exc: RPCError) -> bool:
    """Whether a NOT_FOUND is about the namespace (not the run asked for)."""
    return any(d.type_url.endswith(".NamespaceNotFoundFailure") for d in exc.grpc_status.details)


async def _started_by_perdure(handle: WorkflowHandle[Any, Any]) -> bool:
    """Whether the (latest Temporal run of the) workflow was started with perdure's input."""
    async for event in handle.fetch_history_events(page_size=1):
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            return perdure_input(event.workflow_execution_started_event_attributes.input.payloads)
        break
    return False


async def _created(ex: WorkflowExecution) -> float:
    """When the perdure run started (its first Temporal run's start)."""
    continued = (await ex.memo()).get(MEMO_RUN)
    return float(continued["created_at"]) if continued else ex.start_time.timestamp()

"""The perdure worker on Temporal: a Temporal ``Worker`` for the generic workflow and step activity, plus
the one thing Temporal does not do by itself -- replaying open runs against new code when a worker starts.

Temporal replays a run only when its next event arrives. A deploy that reordered steps would go unnoticed
while, say, a step runs for an hour -- or forever, if the step in flight waits for something the new code
never does -- and in the meantime the new worker would run that step again. perdure's contract (and the
memory engine) fail such a run with ``NonDeterminismError`` on the new worker's first replay. So before it
polls, a starting worker replays the newest open runs of its task queue with Temporal's ``Replayer``
(offline: it writes nothing), and:

* a replay that breaks perdure's journal (another step name at a recorded position) is reported by the
  workflow itself (``workflow.WorkerContext.report_failure``) and the run is ended FAILED with perdure's
  error -- as a termination whose reason carries the error (see ``history.outcome``), because a
  replay that diverged mid-history cannot fail the run from inside: any command there is Temporal
  nondeterminism, reported with Temporal's message instead of perdure's;
* a replay that breaks Temporal's own history matching (a timer where the code now schedules a step) gets
  a ``perdure.wake`` signal, so a live worker replays it and Temporal fails it (``NondeterminismError`` is
  a workflow failure type here), reported as ``NonDeterminismError``;
* a replay that matches, but whose code now asks for another step at the position of the step in flight
  (:func:`replaced_in_flight`), is ended FAILED with perdure's error as in the first case: otherwise the
  retry of the old step would run its body again first.

The same report path serves a live worker whose replay (after a cache eviction, or of a run it never
cached) finds perdure's journal broken.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, Worker
from temporalio.workflow import NondeterminismError

from ...core.errors import NonDeterminismError
from ...core.types import ErrorInfo
from .activities import run_step
from .history import steps_in_flight
from .payloads import FAILED_REASON, GATE_WORKFLOW, WAKE_SIGNAL
from .settings import TemporalSettings
from .workflow import DecisionGate, PerdureWorkflow, register_worker

log = logging.getLogger("perdure.temporal")
REPLAY_CHECK_LIMIT = 1000  # open runs a starting worker replays against its code
REPLAY_CHECK_TIMEOUT = 60.0  # seconds; a worker serves anyway after this
# The Replayer runs workflows on task queue "replay-<build id>"; perdure registers its context there too.
_REPLAY_BUILD_ID = "perdure-replay-check"
_REPLAY_TASK_QUEUE = f"replay-{_REPLAY_BUILD_ID}"


def worker_options(settings: TemporalSettings) -> dict[str, Any]:
    """The Temporal ``Worker`` options perdure uses (besides workflows and activities)."""
    p = settings.profile
    options: dict[str, Any] = {
        "task_queue": settings.task_queue,
        # Workflow code runs on Temporal's deterministic event loop, without its import sandbox: perdure
        # routes time, randomness and I/O through recorded steps already, the sandbox would re-import the
        # user's modules (and perdure's registry) per run, and agent frameworks do not import inside it.
        "workflow_runner": UnsandboxedWorkflowRunner(),
        "max_cached_workflows": p.max_cached_workflows,
        "sticky_queue_schedule_to_start_timeout": timedelta(seconds=p.sticky_timeout),
        # A replay that no longer matches its history fails the run (reported as NonDeterminismError)
        # instead of retrying the workflow task forever, as perdure's contract says.
        "workflow_failure_exception_types": [NondeterminismError],
    }
    if p.heartbeat_throttle is not None:  # see settings.py: how often heartbeats reach the server
        options["max_heartbeat_throttle_interval"] = timedelta(seconds=p.heartbeat_throttle)
    return options


class AskedSteps:
    """The steps replayed runs' code issued as activities, by run: (position -> (kind, name))."""

    def __init__(self) -> None:
        self._runs: dict[str, dict[int, tuple[str, str]]] = {}

    def report(self, run_id: str, position: int, kind: str, name: str) -> None:
        self._runs.setdefault(run_id, {})[position] = (kind, name)

    def take(self, run_id: str) -> dict[int, tuple[str, str]]:
        return self._runs.pop(run_id, {})


def replaced_in_flight(events: Iterable[HistoryEvent], asked: dict[int, tuple[str, str]]) -> NonDeterminismError | None:
    """The error of a run whose step in flight (an activity scheduled, no outcome yet) the new code replaced
    by another at the same position, or None.

    Temporal matches a scheduled activity by type and id only, and every perdure step is the activity
    ``perdure.step`` with its position as id: such a history replays without complaint, and the retry of
    the step in flight would run the *old* step's body before the run failed on its result. The memory
    and Restate engines never run it again; neither does this worker (it ends the run before polling).
    """
    if not asked:
        return None
    for position, (kind, name) in sorted(steps_in_flight(events).items()):
        if position in asked and asked[position] != (kind, name):
            now_kind, now_name = asked[position]
            return NonDeterminismError(position, f"{kind} {name!r}", f"{now_kind} {now_name!r}")
    return None


class TemporalWorker:
    """One perdure worker process's Temporal side (see the module docstring)."""

    def __init__(self, settings: TemporalSettings, client: Client) -> None:
        self.settings = settings
        self.client = client
        self.reported: set[str] = set()  # runs found broken on replay here (and being failed)
        self._asked = AskedSteps()
        self._tasks: set[asyncio.Task[Any]] = set()

    def worker(self) -> Worker:
        return Worker(
            self.client,
            workflows=[PerdureWorkflow, DecisionGate],
            activities=[run_step],
            **worker_options(self.settings),
        )

    async def serve(self, ready: Callable[[], None] | None = None) -> None:
        loop = asyncio.get_running_loop()

        def report_failure(run_id: str, error: ErrorInfo) -> None:
            # Called synchronously from a workflow thread when a replay proves the run's code changed.
            if run_id not in self.reported:
                self.reported.add(run_id)
                loop.call_soon_threadsafe(lambda: self._tasks.add(loop.create_task(self.fail(run_id, error))))

        register_worker(self.settings.task_queue, self.settings, report_failure)
        register_worker(_REPLAY_TASK_QUEUE, self.settings, report_failure, self._asked.report)
        # Before polling: a run whose code changed must fail before this worker runs any more of its steps.
        try:
            await asyncio.wait_for(self.replay_check(), REPLAY_CHECK_TIMEOUT)
        except TimeoutError:
            log.warning("perdure: the replay check of open runs took over %s s; serving anyway", REPLAY_CHECK_TIMEOUT)
        await asyncio.sleep(0)  # let failures reported from the replay's thread schedule their tasks
        while pending := [t for t in self._tasks if not t.done()]:
            await asyncio.gather(*pending, return_exceptions=True)
        async with self.worker():
            if ready is not None:
                ready()
            try:
                await asyncio.Event().wait()
            finally:
                for t in self._tasks:
                    t.cancel()

    async def fail(self, run_id: str, error: ErrorInfo) -> None:
        """End a run FAILED with ``error``: a termination whose reason ``history.outcome`` reads."""
        log.info("perdure: run %s failed on replay: %s", run_id, error.type)
        try:
            await self.client.get_workflow_handle(run_id).terminate(reason=FAILED_REASON + error.model_dump_json())
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:  # NOT_FOUND: it is closed already
                self.reported.discard(run_id)  # the next replay reports it again
                log.warning("perdure: could not fail run %s (%s); the next replay retries", run_id, exc)

    async def replay_check(self, limit: int = REPLAY_CHECK_LIMIT) -> int:
        """Replay the newest ``limit`` open runs of this task queue against this process's code, offline;
        fail or wake the broken ones (module docstring). Returns how many were broken."""
        query = (
            f"TaskQueue = '{self.settings.task_queue}' AND ExecutionStatus = 'Running' "
            f"AND WorkflowType != '{GATE_WORKFLOW}'"
        )
        replayer = Replayer(
            workflows=[PerdureWorkflow, DecisionGate],
            namespace=self.settings.namespace,
            workflow_runner=UnsandboxedWorkflowRunner(),
            # (no workflow_failure_exception_types: with them the replay of a broken history never ends)
            build_id=_REPLAY_BUILD_ID,
        )
        broken = 0
        try:
            histories = self.client.list_workflows(query, limit=limit).map_histories()
            async with replayer.workflow_replay_iterator(histories) as results:
                async for result in results:
                    run_id, failure = result.history.workflow_id, result.replay_failure
                    asked = self._asked.take(run_id)
                    if failure is None:
                        replaced = replaced_in_flight(result.history.events, asked)
                        if replaced is not None and run_id not in self.reported:
                            broken += 1
                            self.reported.add(run_id)
                            await self.fail(run_id, ErrorInfo.of(replaced))
                        continue
                    broken += 1
                    log.debug("perdure: replay check of %s failed: %s", run_id, failure)
                    if run_id not in self.reported:
                        with contextlib.suppress(RPCError):
                            await self.client.get_workflow_handle(run_id).signal(WAKE_SIGNAL)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a check that cannot run must not stop the worker
            log.warning("perdure: the replay check of open runs failed: %s", exc)
        return broken

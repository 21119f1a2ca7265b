"""The reference engine: SEMANTICS.md as executable code, with zero dependencies.

State lives in this process (one :class:`MemoryEngine` per ``memory://name``). Each run has a journal:
one :class:`Entry` per position. Workers claim runs by taking ownership with a fresh *epoch*; a crash
(:meth:`MemoryEngine.crash_workers`) drops ownership, so a zombie worker that keeps running has every
write refused (:class:`FencedError`) and a new worker replays the run from its journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass, field

import pydantic_core

from ...core.errors import (
    ApprovalAlreadyDecidedError,
    ApprovalNotFoundError,
    FencedError,
    RunCancelledError,
    RunConflictError,
    RunNotFoundError,
)
from ...core.runtime import (
    Journal,
    decision_envelope,
    execute_step,
    run_workflow,
    sleep_envelope,
    timeout_envelope,
)
from ...core.types import (
    ApprovalRequest,
    Decision,
    Envelope,
    ErrorInfo,
    RunInfo,
    RunStatus,
    StepCall,
    StepKind,
    StepRecord,
    StepStatus,
)

_RECHECK = 0.05  # seconds: how often a waiting approval re-checks fencing, cancel and its deadline


@dataclass
class Entry:
    """One position of a run's journal. ``envelope`` is set once the outcome is recorded."""

    name: str
    kind: StepKind
    envelope: str | None = None
    deadline: float | None = None  # sleeps and approvals: fixed when the position is first reached
    request: ApprovalRequest | None = None


@dataclass
class Run:
    run_id: str
    workflow: str
    args_json: str
    created_at: float
    status: RunStatus = RunStatus.PENDING
    output: object = None
    error: ErrorInfo | None = None
    journal: dict[int, Entry] = field(default_factory=dict)
    decisions: dict[str, Decision] = field(default_factory=dict)
    owner: int | None = None  # epoch of the worker executing the run
    task: asyncio.Task[None] | None = None
    waker: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None  # set while waiting on a decision

    def info(self) -> RunInfo:
        pending = None
        for entry in self.journal.values():
            if entry.request is not None and entry.envelope is None:
                pending = entry.request.pending(entry.deadline)
        return RunInfo(
            run_id=self.run_id,
            workflow=self.workflow,
            status=self.status,
            output=self.output,
            error=self.error,
            pending_approval=pending if not self.status.terminal else None,
            created_at=self.created_at,
        )


@dataclass(eq=False)
class Worker:
    epoch: int
    wake: asyncio.Event
    loop: asyncio.AbstractEventLoop
    dead: asyncio.Event
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    abandoned: bool = False  # crashed with abandon=True: its tasks live on as fenced zombies


class MemoryEngine:
    """All runs of one ``memory://name``; shared by every client and worker in the process."""

    journal_class: type[MemoryJournal]  # set below the journal's definition

    def __init__(self, name: str) -> None:
        self.name = name
        self.runs: dict[str, Run] = {}
        self.workers: list[Worker] = []
        self._epochs = itertools.count(1)

    # --- client side ------------------------------------------------------------------------------
    def get(self, run_id: str) -> Run:
        try:
            return self.runs[run_id]
        except KeyError:
            raise RunNotFoundError(f"no run {run_id!r} on memory://{self.name}") from None

    def start(self, workflow: str, args_json: str, run_id: str) -> Run:
        run = self.runs.get(run_id)
        if run is not None:
            if run.workflow != workflow:
                raise RunConflictError(f"run {run_id!r} already exists for workflow {run.workflow!r}, not {workflow!r}")
            return run
        run = self.runs[run_id] = Run(run_id, workflow, args_json, created_at=time.time())
        self.notify()
        return run

    def decide(self, run_id: str, approval_id: str, decision: Decision) -> None:
        run = self.get(run_id)
        if approval_id in run.decisions:
            raise ApprovalAlreadyDecidedError(f"approval {approval_id!r} of run {run_id!r} was already decided")
        for entry in run.journal.values():
            if entry.request is not None and entry.request.approval_id == approval_id:
                if entry.envelope is not None or run.status.terminal:
                    raise ApprovalAlreadyDecidedError(
                        f"approval {approval_id!r} of run {run_id!r} was already decided or timed out"
                    )
                run.decisions[approval_id] = decision  # kept even when no worker runs
                if run.waker is not None:
                    loop, event = run.waker
                    loop.call_soon_threadsafe(event.set)
                return
        raise ApprovalNotFoundError(f"run {run_id!r} has no pending approval {approval_id!r}")

    def cancel(self, run_id: str) -> None:
        run = self.get(run_id)
        if run.status.terminal:
            return
        run.status = RunStatus.CANCELLED
        self._prune(run)
        task, run.task, run.owner = run.task, None, None
        if task is not None:
            task.cancel()

    def steps(self, run_id: str) -> list[StepRecord]:
        out = []
        for pos, entry in sorted(self.get(run_id).journal.items()):
            if entry.envelope is not None:
                out.append(Envelope.from_json(entry.envelope).record(pos))
            else:
                status = StepStatus.RUNNING if entry.kind in (StepKind.STEP, StepKind.TOOL) else StepStatus.WAITING
                out.append(StepRecord(position=pos, name=entry.name, kind=entry.kind, status=status, attempts=0))
        return out

    # --- workers ----------------------------------------------------------------------------------
    def notify(self) -> None:
        for w in self.workers:
            w.loop.call_soon_threadsafe(w.wake.set)

    def add_worker(self) -> Worker:
        w = Worker(next(self._epochs), asyncio.Event(), asyncio.get_running_loop(), asyncio.Event())
        self.workers.append(w)
        return w

    def remove_worker(self, worker: Worker) -> None:
        """Stop a worker: its runs lose their owner (another worker recovers them) and its tasks end."""
        if worker in self.workers:
            self.workers.remove(worker)
        for run in self.runs.values():
            if run.owner == worker.epoch:
                run.owner, run.task = None, None
        worker.dead.set()
        self.notify()

    def crash_workers(self, *, abandon: bool = False) -> int:
        """Simulate SIGKILL of every live worker. With ``abandon``, their tasks keep running as zombies
        whose writes are refused; otherwise they are cancelled where they stand. Returns how many died."""
        dead = list(self.workers)
        for w in dead:
            w.abandoned = abandon
            if not abandon:
                for t in list(w.tasks):
                    t.cancel()
            self.remove_worker(w)
        return len(dead)

    def claim(self, worker: Worker) -> list[Run]:
        """Runs no live worker owns, now owned by ``worker`` (recovery happens here)."""
        claimed = []
        for run in self.runs.values():
            if run.owner is None and not run.status.terminal:
                run.owner = worker.epoch
                claimed.append(run)
        return claimed

    def check(self, run: Run, epoch: int) -> None:
        """Refuse writes from a worker that no longer owns the run (fencing), and steps after a cancel."""
        if run.status is RunStatus.CANCELLED:
            raise RunCancelledError(f"run {run.run_id!r} was cancelled")
        if run.owner != epoch:
            raise FencedError(f"worker epoch {epoch} no longer owns run {run.run_id!r}")

    async def execute(self, run: Run, epoch: int) -> None:
        journal = self.journal_class(self, run, epoch)
        try:
            if run.status is RunStatus.PENDING:
                run.status = RunStatus.RUNNING
            output = await run_workflow(journal, run.run_id, run.workflow, run.args_json)
        except (FencedError, RunCancelledError):
            return
        except asyncio.CancelledError:
            return  # crash, shutdown or cancel: the journal holds what was recorded
        except Exception as exc:
            if run.owner == epoch and run.status is not RunStatus.CANCELLED:
                run.status, run.error, run.owner = RunStatus.FAILED, ErrorInfo.of(exc), None
                self._prune(run)
            return
        if run.owner == epoch and run.status is not RunStatus.CANCELLED:
            run.status, run.output, run.owner = RunStatus.SUCCEEDED, pydantic_core.from_json(output), None

    @staticmethod
    def _prune(run: Run) -> None:
        """A finished run keeps only recorded outcomes: an operation in flight at the end never finished."""
        run.journal = {p: e for p, e in run.journal.items() if e.envelope is not None}


class MemoryJournal(Journal):
    """The :class:`Journal` of one run, as executed by the worker of ``epoch``."""

    def __init__(self, engine: MemoryEngine, run: Run, epoch: int) -> None:
        self.engine, self.run, self.epoch = engine, run, epoch

    def _reach(self, position: int, name: str, kind: StepKind) -> Entry:
        """The entry at ``position``, created if the run never got this far."""
        self.engine.check(self.run, self.epoch)
        entry = self.run.journal.get(position)
        if entry is None or (entry.envelope is None and (entry.name, entry.kind) != (name, kind)):
            # Nothing recorded here (an in-flight entry is not a recorded outcome): this position runs now.
            entry = self.run.journal[position] = Entry(name=name, kind=kind)
        return entry

    def _record(self, entry: Entry, envelope: str) -> str:
        self.engine.check(self.run, self.epoch)
        entry.envelope = envelope
        return envelope

    async def step(self, call: StepCall) -> str:
        entry = self._reach(call.position, call.name, call.kind)
        if entry.envelope is not None:
            return entry.envelope
        return self._record(entry, await execute_step(call))

    async def approval(self, request: ApprovalRequest) -> str:
        entry = self._reach(request.position, request.name, StepKind.APPROVAL)
        if entry.envelope is not None:
            return entry.envelope
        if entry.request is None:
            entry.request = request
            entry.deadline = None if request.timeout is None else time.time() + request.timeout
        self.run.status = RunStatus.WAITING
        event = asyncio.Event()
        self.run.waker = (asyncio.get_running_loop(), event)
        try:
            while True:
                event.clear()  # before the checks, so a decision arriving after them still wakes us
                self.engine.check(self.run, self.epoch)
                decision = self.run.decisions.get(request.approval_id)
                if decision is not None:
                    envelope = decision_envelope(request, decision)
                    break
                if entry.deadline is not None and time.time() >= entry.deadline:
                    envelope = timeout_envelope(request)
                    break
                # Woken by decide(); the bounded wait re-checks fencing, cancel and the deadline.
                left = _RECHECK if entry.deadline is None else min(_RECHECK, max(entry.deadline - time.time(), 0))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), left)
        finally:
            self.run.waker = None
        self._record(entry, envelope)
        self.run.status = RunStatus.RUNNING
        return envelope

    async def sleep(self, position: int, seconds: float) -> str:
        entry = self._reach(position, "perdure.sleep", StepKind.SLEEP)
        if entry.envelope is not None:
            return entry.envelope
        if entry.deadline is None:
            entry.deadline = time.time() + seconds
        while (left := entry.deadline - time.time()) > 0:
            await asyncio.sleep(min(left, 0.05))
            self.engine.check(self.run, self.epoch)
        return self._record(entry, sleep_envelope(seconds))


MemoryEngine.journal_class = MemoryJournal

"""How a model or tool call inside a LangGraph graph becomes one durable perdure call.

Three things make a graph's calls replay exactly, on every engine:

* **Order.** perdure gives each durable call the next position of the run, in the order calls are
  *issued*. :func:`perdure.integrations.langgraph.run_graph` runs a superstep's tasks one at a time in
  LangGraph's own task order (``max_concurrency=1``), so timing never decides which branch goes first.
  Inside one task, calls begun concurrently (ToolNode's parallel tool calls, ``asyncio.gather`` of model
  calls) take a ticket when they *begin* and are issued in ticket order (:class:`CallOrder`), so a
  callback handler that runs in a thread cannot reorder them; once issued they run concurrently.
* **Memo.** LangGraph re-executes a task from its start when it is resumed after ``interrupt()``. Calls
  the task already made in this execution of the workflow are answered from a memo keyed by (task,
  call, fingerprint of the inputs, occurrence), so resuming never repeats a model or tool call. The memo
  is rebuilt identically on replay because it is filled from the (replayed) journal.
* **Fingerprints.** Each recorded result carries a digest of its inputs; a replay that asks something
  else raises :class:`~perdure.NonDeterminismError` (see messages.py).
"""

from __future__ import annotations

import asyncio
import collections
import copy
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from langchain_core.runnables import RunnableConfig

from ...core.context import current_run
from ...core.errors import ConfigurationError, NonDeterminismError
from ...core.registry import Step
from ...core.runtime import RunContext

# LangGraph's per-task scratchpad (a new object each time a task is prepared, i.e. executed) and the
# task's checkpoint namespace ("node:task_id", joined with "|" for subgraphs). Internal config keys of
# langgraph 1.x, read-only here.
_SCRATCHPAD = "__pregel_scratchpad"
_CHECKPOINT_NS = "checkpoint_ns"


class CallOrder:
    """Tickets: durable calls are issued in the order they took a ticket.

    ``take()`` is synchronous, so tickets follow the order in which coroutines *begin* (asyncio runs new
    tasks in creation order). ``turn(t)`` waits until every earlier ticket was issued or given up;
    ``done(t)`` marks ``t`` issued (or given up). A caller issues its durable call synchronously right
    after ``done``: the next ticket's waiter only runs once the caller suspends, after its position is taken.
    """

    def __init__(self) -> None:
        self._taken = 0
        self._floor = 0  # every ticket below is done
        self._done: set[int] = set()
        self._waiters: dict[int, asyncio.Future[None]] = {}

    def take(self) -> int:
        ticket = self._taken
        self._taken += 1
        return ticket

    async def turn(self, ticket: int) -> None:
        while self._floor < ticket:
            fut = self._waiters.get(ticket)
            if fut is None or fut.done():
                fut = self._waiters[ticket] = asyncio.get_running_loop().create_future()
            await fut

    def done(self, ticket: int) -> None:
        if ticket < self._floor or ticket in self._done:
            return
        self._done.add(ticket)
        while self._floor in self._done:
            self._done.discard(self._floor)
            self._floor += 1
        fut = self._waiters.pop(self._floor, None)
        if fut is not None and not fut.done():
            fut.set_result(None)


@dataclass(eq=False)
class GraphRun:
    """The state of one :func:`run_graph` call inside a workflow execution (never persisted)."""

    run: RunContext
    loop: asyncio.AbstractEventLoop
    order: CallOrder = field(default_factory=CallOrder)
    memo: dict[tuple[str, str, str, int], dict[str, Any]] = field(default_factory=dict)
    # id(scratchpad) -> (scratchpad, occurrences of (step, fingerprint) in that task execution). The
    # scratchpad is kept alive so its id cannot be reused by another task while the graph runs.
    executions: dict[int, tuple[object, collections.Counter[tuple[str, str]]]] = field(default_factory=dict)

    def occurrence(self, scratchpad: object, step: str, fp: str) -> int:
        entry = self.executions.get(id(scratchpad))
        if entry is None or entry[0] is not scratchpad:
            entry = self.executions[id(scratchpad)] = (scratchpad, collections.Counter())
        n = entry[1][(step, fp)]
        entry[1][(step, fp)] += 1
        return n


_graph_run: ContextVar[GraphRun | None] = ContextVar("perdure_langgraph_run", default=None)


def current_graph_run() -> GraphRun | None:
    return _graph_run.get()


def _task_of(config: RunnableConfig | None) -> tuple[str, object] | None:
    conf = (config or {}).get("configurable") or {}
    ns, scratchpad = conf.get(_CHECKPOINT_NS), conf.get(_SCRATCHPAD)
    if ns is None or scratchpad is None:
        return None
    return str(ns), scratchpad


def take_ticket() -> int | None:
    """A ticket for a durable call beginning now (None outside :func:`run_graph`)."""
    state = _graph_run.get()
    return None if state is None else state.order.take()


def give_up(ticket: int | None) -> None:
    """Release a ticket whose call ended without issuing (an error, a cache hit)."""
    state = _graph_run.get()
    if state is not None and ticket is not None:
        state.order.done(ticket)


async def durable_call(
    step: Step[Any, Any],
    kwargs: dict[str, Any],
    *,
    fingerprint: str,
    config: RunnableConfig | None,
    ticket: int | None,
    key: str | None = None,
) -> dict[str, Any]:
    """Record one call of ``step`` (a model or tool step whose output is ``{"fingerprint", ...}``).

    ``config`` is the LangGraph task config the call is made in (None outside a graph); ``key`` is the
    framework's call id to build the idempotency key from (a tool_call id), made unique per run.
    """
    what = f"{step.kind.value} {step.name!r}"
    state = _graph_run.get()
    task = _task_of(config)
    if state is None:
        if task is not None:
            raise ConfigurationError(
                f"{what} was called inside a LangGraph graph that was not started with "
                "perdure.integrations.langgraph.run_graph(graph, input); run_graph is what makes the "
                "graph's durable calls replay in a deterministic order"
            )
        run = current_run(what)
        position = getattr(run, "_position", -1)
        output: dict[str, Any] = await run.call_step(step, (), kwargs, key=key)
        _check(output, fingerprint, position, what)
        return output

    memo_key: tuple[str, str, str, int] | None = None
    issued = False
    if ticket is None:
        ticket = state.order.take()
    try:
        await state.order.turn(ticket)
        if task is not None:
            ns, scratchpad = task
            memo_key = (ns, step.name, fingerprint, state.occurrence(scratchpad, step.name, fingerprint))
            if memo_key in state.memo:  # the task re-executes after a resume: no second call
                return copy.deepcopy(state.memo[memo_key])
        run = state.run
        # Counted per perdure run, not per graph: two graphs (or agents) in one workflow whose models reuse
        # a tool-call id still give each call its own idempotency key.
        unique = run.unique_key(key) if key is not None else None
        # What the journal position of this call will be: call_step takes it synchronously when the
        # coroutine starts, and nothing else runs in between (the next ticket's waiter runs only after
        # this task suspends).
        position = getattr(run, "_position", -1)
        state.order.done(ticket)
        issued = True
        output = await run.call_step(step, (), kwargs, key=unique)
    finally:
        if not issued:
            state.order.done(ticket)
    _check(output, fingerprint, position, what)
    if memo_key is not None:
        state.memo[memo_key] = output
    return output


def _check(output: dict[str, Any], fingerprint: str, position: int, what: str) -> None:
    recorded = output.get("fingerprint") if isinstance(output, dict) else None
    if recorded != fingerprint:
        raise NonDeterminismError(
            position, f"{what} answered for inputs {recorded}", f"{what} with inputs {fingerprint}"
        )

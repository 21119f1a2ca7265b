"""Running a compiled LangGraph graph inside a perdure workflow, with interrupts as perdure approvals.

:func:`run_graph` is the whole integration from the workflow's side::

    @perdure.workflow(name="support")
    async def support(question: str) -> str:
        state = await run_graph(graph, {"messages": [("user", question)]})
        return state["messages"][-1].content

The graph runs in the workflow (its node code must be deterministic, like all workflow code); its model
and tool calls are perdure steps and tools (model.py, tools.py). When the graph stops on ``interrupt()``,
each pending interrupt becomes one :func:`perdure.approval` (WAITING, visible in ``perdure status``,
decided with ``client.approve/reject`` even while no worker runs) and the graph resumes with
``Command(resume=...)``. After a crash the workflow replays: the graph runs again from its input, every
recorded model and tool call returns its recorded result, recorded decisions resume the same interrupts,
and execution continues where the crash happened.

LangGraph checkpointers: perdure's journal is the durable record of the run, so a graph given to
:func:`run_graph` must be compiled *without* a checkpointer. run_graph gives it a private in-memory
checkpointer for the length of one workflow execution -- LangGraph needs one to resume interrupts -- and
drops it afterwards. See docs/langgraph.md for why perdure does not also offer a checkpointer.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import re
from collections.abc import Callable
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.pregel import Pregel
from langgraph.types import Command, Interrupt, interrupt

from ...core.context import approval as perdure_approval
from ...core.context import current_run
from ...core.errors import ConfigurationError, InvalidArgumentError
from ...core.types import Decision
from .calls import GraphRun, _graph_run

_APPROVAL = "perdure_approval"  # marks an interrupt raised by ask_approval
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")

Resume = Callable[[Decision, Any], Any]


def ask_approval(name: str, payload: Any = None, *, timeout: float | _dt.timedelta | None = None) -> Decision:
    """Inside a graph node: ask a human, durably, and get their :class:`~perdure.Decision`.

    This is LangGraph's ``interrupt()`` with a perdure approval behind it: the run shows as WAITING with
    approval id ``"<name>-<position>"`` and ``payload``; ``client.approve``/``client.reject`` resumes
    the node, where this call returns the decision. Like every ``interrupt()``, the node runs again from
    its start when resumed -- its model and tool calls are not repeated (they are answered from the run's
    record). ``timeout`` raises :class:`~perdure.ApprovalTimeoutError` out of :func:`run_graph`.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidArgumentError(
            f"approval name must be 1-100 characters of letters, digits, '_', '-' or '.', got {name!r}"
        )
    seconds = timeout.total_seconds() if isinstance(timeout, _dt.timedelta) else timeout
    value = interrupt({_APPROVAL: name, "payload": payload, "timeout": seconds})
    return Decision.model_validate(value)


def _approval_for(item: Interrupt, node: str | None, default_timeout: float | None) -> tuple[str, Any, float | None, bool]:
    """(approval name, payload, timeout, raised by ask_approval) for one pending interrupt."""
    value = item.value
    if isinstance(value, dict) and isinstance(value.get(_APPROVAL), str):
        return value[_APPROVAL], value.get("payload"), value.get("timeout"), True
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", node or "interrupt")[:100] or "interrupt"
    return name, value, default_timeout, False


def _event_loop_shim(loop: asyncio.AbstractEventLoop) -> None:
    """Let LangGraph run on Temporal's workflow event loop.

    That loop is deterministic and single-threaded: it implements neither ``call_soon_threadsafe``
    (LangGraph hands stream chunks to its loop with it) nor ``run_in_executor`` (LangGraph runs sync
    nodes, routing functions and ``tools_condition`` in a thread with it). On such a loop the first is
    ``call_soon``, and sync functions run inline, on the workflow thread, in their copied context -- the
    deterministic equivalent. Other engines run workflows on a normal asyncio loop and are left alone.
    """
    cls = type(loop)
    if cls.call_soon_threadsafe is asyncio.AbstractEventLoop.call_soon_threadsafe:
        loop.call_soon_threadsafe = loop.call_soon  # type: ignore[method-assign]
    if cls.run_in_executor is asyncio.AbstractEventLoop.run_in_executor:

        def run_inline(executor: Any, func: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
            future = loop.create_future()
            try:
                future.set_result(func(*args))
            except Exception as exc:  # GraphInterrupt included: it reaches the awaiting task as usual
                future.set_exception(exc)
            return future

        loop.run_in_executor = run_inline  # type: ignore[method-assign,assignment]


async def run_graph(
    graph: Pregel,
    input: Any,
    *,
    config: RunnableConfig | None = None,
    context: Any = None,
    approval_timeout: float | _dt.timedelta | None = None,
    resume: Resume | None = None,
) -> Any:
    """Run ``graph`` on ``input`` inside the current perdure workflow and return its final state.

    * Model calls of :func:`durable_model` models and tool calls of :class:`DurableToolNode` nodes are
      perdure steps/tools, recorded once; after a crash they are not repeated.
    * Tasks of one superstep run one at a time in LangGraph's task order (``max_concurrency=1``), so the
      order of durable calls -- their journal positions -- never depends on timing.
    * Every ``interrupt()`` becomes a perdure approval. :func:`ask_approval` interrupts resume with the
      :class:`~perdure.Decision`; a plain ``interrupt(value)`` becomes an approval named after its node
      with ``value`` as payload and resumes with ``resume(decision, value)`` -- by default the decision as
      a dict (``{"approved": ..., "by": ..., "comment": ..., "data": ...}``). Several pending interrupts
      are asked one after the other, in task order. ``approval_timeout`` applies to plain interrupts.

    ``config`` (``recursion_limit``, ``configurable`` values for your nodes) and ``context`` are passed to
    the graph. The graph must be compiled without a checkpointer (see the module docstring).
    """
    run = current_run("run_graph()")
    if graph.checkpointer not in (None, False):
        raise ConfigurationError(
            "run_graph needs a graph compiled without a checkpointer: perdure's journal is the run's durable "
            "record (compile with builder.compile(), no checkpointer=). See docs/langgraph.md."
        )
    default_timeout = approval_timeout.total_seconds() if isinstance(approval_timeout, _dt.timedelta) else approval_timeout
    loop = asyncio.get_running_loop()
    _event_loop_shim(loop)
    private = graph.copy(update={"checkpointer": InMemorySaver()})
    cfg: RunnableConfig = dict(config or {})  # type: ignore[assignment]
    cfg["configurable"] = {**(cfg.get("configurable") or {}), "thread_id": run.run_id}
    cfg["max_concurrency"] = 1
    token = _graph_run.set(GraphRun(run=run, loop=loop))
    try:
        output = await private.ainvoke(input, cfg, context=context)
        while True:
            snapshot = await private.aget_state(cfg)
            if not snapshot.interrupts:
                break
            nodes = {i.id: t.name for t in snapshot.tasks for i in t.interrupts}
            answers: dict[str, Any] = {}
            for item in snapshot.interrupts:
                name, payload, timeout, own = _approval_for(item, nodes.get(item.id), default_timeout)
                decision = await perdure_approval(name, payload, timeout=timeout)
                if own or resume is None:
                    answers[item.id] = decision.model_dump(mode="json")
                else:
                    answers[item.id] = resume(decision, item.value)
            output = await private.ainvoke(Command(resume=answers), cfg, context=context)
    finally:
        _graph_run.reset(token)
    if isinstance(output, dict):
        output.pop("__interrupt__", None)
    return output

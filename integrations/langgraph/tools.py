"""Durable tool calls: a LangGraph ``ToolNode`` whose every tool call is one perdure tool.

``DurableToolNode(tools)`` is a ``ToolNode`` (same constructor, same routing with ``tools_condition``,
usable in ``create_react_agent``) with an ``awrap_tool_call`` that records each tool call as the perdure
tool ``langgraph.tool.<tool name>``. The idempotency key of a call is ``<run id>:<tool_call id>`` -- the
id the model gave the call -- so a tool re-executed after a crash hands the external system the same key
(``perdure.idempotency_key()`` inside the tool). Like model steps, the tool body may run in another
process and finds the tool by name in this module's registry.

Parallel tool calls of one model response still run concurrently; their journal positions follow the
order of ``tool_calls`` in the recorded message (calls.py), so replays are deterministic.

A tool with only a sync implementation (a plain ``def``) is a sync perdure tool calling LangChain's
``invoke`` (an engine that runs sync steps in a worker thread runs it there); any other calls ``ainvoke``.

Errors: a tool that raises is retried by perdure's :class:`~perdure.RetryPolicy` (``retry=``); when
retries run out, the ToolNode's ``handle_tool_errors`` sees :class:`~perdure.StepFailedError` (with the
original type name and message). Invalid arguments are not retried: they are recorded as the same
``ToolInvocationError`` message a plain ToolNode gives the model.

Not supported as durable tools: tools that take ``InjectedState``, ``InjectedStore`` or ``ToolRuntime``
-- graph objects that cannot travel to a step in another process -- refused when the node is built; a tool
that returns ``Command`` (it could only be seen once it ran) or calls ``interrupt()`` (a human decision
belongs in a node, with ``ask_approval``) fails its call at once, without a retry, saying so.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool, StructuredTool, Tool
from langchain_core.tools import tool as create_tool
from langgraph.errors import GraphInterrupt
from langgraph.prebuilt import ToolNode
from langgraph.prebuilt.tool_node import (
    ToolCallRequest,
    ToolInvocationError,
    _filter_validation_errors,
    _get_all_injected_args,
    msg_content_output,
)
from langgraph.types import Command
from pydantic import ValidationError

from ...core.context import idempotency_key
from ...core.errors import ConfigurationError, PermanentError, RegistrationError
from ...core.registry import Step, check_retry, equivalent, same_definition
from ...core.registry import tool as perdure_tool
from ...core.retry import RetryPolicy
from .calls import durable_call, give_up, take_ticket
from .messages import fingerprint, from_data, stable_id, to_data

_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,80}$")
_tools: dict[str, BaseTool] = {}
_steps: dict[str, Step[Any, Any]] = {}


def get_tool(name: str) -> BaseTool:
    """The LangChain tool registered under ``name`` in this process."""
    try:
        return _tools[name]
    except KeyError:
        raise ConfigurationError(
            f"no LangGraph tool named {name!r} is registered in this process; import the module that "
            "builds the DurableToolNode in the worker (perdure worker --app MODULE)"
        ) from None


def _origin(t: BaseTool) -> tuple[str, str]:
    fn = getattr(t, "coroutine", None) or getattr(t, "func", None) or type(t)
    return getattr(fn, "__module__", ""), getattr(fn, "__qualname__", repr(fn))


def _same_tool(a: BaseTool, b: BaseTool) -> bool:
    """Whether two tool objects are the same tool: a module imported twice builds new objects for one
    function (allowed); a factory building one tool per tenant or connection builds different ones."""
    if _origin(a) != _origin(b):
        return False
    fa = getattr(a, "coroutine", None) or getattr(a, "func", None)
    fb = getattr(b, "coroutine", None) or getattr(b, "func", None)
    if fa is not None and fb is not None:
        return same_definition(fa, fb)
    return equivalent(a, b)  # a class-based tool: equal fields


def _invocation_error(tool_name: str, message: str, tool_kwargs: dict[str, Any]) -> ToolInvocationError:
    """The invalid-arguments error the tool step recorded, rebuilt in the workflow as the very
    ``ToolInvocationError`` a plain ToolNode raises, so ``handle_tool_errors`` treats (and words) it the
    same. Its constructor needs the original pydantic error, which stayed in the step."""
    error = ToolInvocationError.__new__(ToolInvocationError)
    Exception.__init__(error, message)
    error.message, error.tool_name, error.tool_kwargs = message, tool_name, tool_kwargs
    error.source, error.filtered_errors = None, None  # type: ignore[assignment]
    return error


def _register(t: BaseTool, retry: RetryPolicy | None) -> Step[Any, Any]:
    name = t.name
    if not _NAME.match(name):
        raise RegistrationError(f"a durable tool name is 1-80 letters, digits, '_', '-' or '.', got {name!r}")
    injected = _get_all_injected_args(t)
    if injected is not None and (injected.state or injected.store or injected.runtime):
        raise RegistrationError(
            f"tool {name!r} takes InjectedState, InjectedStore or ToolRuntime: durable tools run as perdure "
            "tools, possibly in another process, where graph state and runtime objects do not exist. Pass "
            "what the tool needs as arguments, or read it in a node before the tool call."
        )
    existing = _tools.get(name)
    if existing is not None and existing is not t and not _same_tool(existing, t):
        a, b = ".".join(_origin(existing)), ".".join(_origin(t))
        detail = f"{a} and {b}" if a != b else f"two tools {a} made around different values"
        raise RegistrationError(
            f"two different tools are named {name!r} ({detail}); durable tools are found by name, so one "
            "would run the other's code: give each its own name, or build the tool once and pass per-run "
            "values as its arguments"
        )
    _tools[name] = t
    if name in _steps:
        check_retry(_steps[name], retry, f"durable tool {name!r}")
    if name not in _steps:

        async def call_tool(call: dict[str, Any], fingerprint: str) -> dict[str, Any]:
            """Run the registered tool once on the model's tool call; the result is recorded by perdure."""
            try:
                response = await get_tool(name).ainvoke({**call, "type": "tool_call"})
            except (ValidationError, GraphInterrupt) as exc:
                return _refused(name, call, fingerprint, exc)
            return _recorded(name, call, fingerprint, response)

        def call_tool_sync(call: dict[str, Any], fingerprint: str) -> dict[str, Any]:
            """``call_tool`` for a tool with only a sync implementation: LangChain's ``invoke`` in the thread
            the engine runs sync steps in (``ainvoke`` would hand it to yet another thread; on DBOS a sync
            step is one hand-off to DBOS's executor, an async one three)."""
            try:
                response = get_tool(name).invoke({**call, "type": "tool_call"})
            except (ValidationError, GraphInterrupt) as exc:
                return _refused(name, call, fingerprint, exc)
            return _recorded(name, call, fingerprint, response)

        body = call_tool_sync if _sync_only(t) else call_tool
        _steps[name] = perdure_tool(body, name=f"langgraph.tool.{name}", description=t.description, retry=retry)
    return _steps[name]


def _sync_only(t: BaseTool) -> bool:
    """Whether the tool has only a sync implementation (LangChain's ``ainvoke`` runs it in a thread)."""
    if isinstance(t, StructuredTool | Tool):
        return t.coroutine is None
    return type(t)._arun is BaseTool._arun


def _refused(name: str, call: dict[str, Any], fingerprint: str, exc: Exception) -> dict[str, Any]:
    """A call the tool refused: arguments the model got wrong are recorded as ToolNode words them (not
    retried); ``interrupt()`` inside a durable tool fails the call for good."""
    if isinstance(exc, ValidationError):
        error = ToolInvocationError(name, exc, call["args"], _filter_validation_errors(exc, None))
        return {"fingerprint": fingerprint, "invalid": error.message}
    raise PermanentError(
        f"tool {name!r} called interrupt(): a durable tool is a recorded effect, not a place to wait for a "
        "human; ask in a node before the tool call, with perdure.integrations.langgraph.ask_approval"
    ) from None


def _recorded(name: str, call: dict[str, Any], fingerprint: str, response: Any) -> dict[str, Any]:
    """What a tool call records: its ToolMessage, with an id that is the same on every replay."""
    if isinstance(response, Command) or (isinstance(response, list) and response):
        raise PermanentError(f"tool {name!r} returned {type(response).__name__}: durable tools must "
                             "return their output (a ToolMessage), not Command")
    if not isinstance(response, ToolMessage):
        response = ToolMessage(content=msg_content_output(response), name=name,  # type: ignore[arg-type]
                               tool_call_id=call["id"])
    response.content = msg_content_output(response.content)  # type: ignore[assignment]
    stable_id(response, idempotency_key())
    return {"fingerprint": fingerprint, "message": to_data(response, where=f"output of tool {name!r}")}


async def _durable_execute(request: ToolCallRequest, ticket: int | None = None) -> ToolMessage:
    """Execute one tool call as a perdure tool (ToolNode's ``execute``, made durable)."""
    call = request.tool_call
    if ticket is None:
        ticket = take_ticket()
    try:
        step = _steps.get(call["name"]) if request.tool is not None else None
        registered = _tools.get(call["name"])
        if step is None or registered is None or request.tool is None or _origin(registered) != _origin(request.tool):
            raise ConfigurationError(
                f"tool {call['name']!r} is not a durable tool of this node (tools added by a wrapper are not "
                "recorded); add it to the DurableToolNode's tools"
            )
        data = {"name": call["name"], "args": call["args"], "id": call["id"]}
        fp = fingerprint(data)
        output = await durable_call(
            step, {"call": data, "fingerprint": fp}, fingerprint=fp, config=request.runtime.config,
            ticket=ticket, key=str(call["id"]),
        )
    except BaseException:
        give_up(ticket)
        raise
    if "invalid" in output:
        raise _invocation_error(call["name"], output["invalid"], call["args"])
    message = from_data(output["message"])
    assert isinstance(message, ToolMessage)
    return message


def _refuse_sync(request: ToolCallRequest, execute: Callable[[ToolCallRequest], Any]) -> Any:
    raise ConfigurationError(
        "a DurableToolNode runs only in async graphs: run the graph with "
        "perdure.integrations.langgraph.run_graph (graph.invoke/stream are not durable)"
    )


class DurableToolNode(ToolNode):
    """A ``ToolNode`` whose tool calls are durable perdure tools (see the module docstring).

    ``awrap_tool_call`` still works: your wrapper receives an ``execute`` that makes the durable call
    (calling it twice makes two recorded calls). Sync ``wrap_tool_call`` is refused.
    """

    def __init__(
        self,
        tools: Sequence[BaseTool | Callable[..., Any]],
        *,
        retry: RetryPolicy | None = None,
        awrap_tool_call: Callable[..., Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs.pop("wrap_tool_call", None) is not None:
            raise RegistrationError("DurableToolNode takes awrap_tool_call (async), not wrap_tool_call")
        built = [t if isinstance(t, BaseTool) else create_tool(t) for t in tools]
        for t in built:
            _register(t, retry)
        user_wrapper = awrap_tool_call

        async def durable(request: ToolCallRequest, execute: Callable[..., Any]) -> Any:
            # The ticket is taken as the call begins -- before a user wrapper can await anything -- so
            # the call's journal position follows tool_calls order (calls.CallOrder).
            ticket: list[int | None] = [take_ticket()]

            async def execute_durably(req: ToolCallRequest) -> ToolMessage:
                first, ticket[0] = ticket[0], None  # a wrapper's second execute takes a ticket of its own
                return await _durable_execute(req, first)

            try:
                if user_wrapper is not None:
                    return await user_wrapper(request, execute_durably)
                return await execute_durably(request)
            finally:
                give_up(ticket[0])

        super().__init__(built, wrap_tool_call=_refuse_sync, awrap_tool_call=durable, **kwargs)

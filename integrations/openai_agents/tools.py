"""Function tool calls as perdure tools, keyed by the model's ``tool_call_id``.

Every :class:`agents.FunctionTool` of a durable agent is registered as a perdure tool named
``openai_agents.tool.<tool name>``. In the workflow, the agent's copy of the tool gets a
:class:`DurableInvoker` instead of its ``on_invoke_tool``: it records one call of that perdure tool, with
the idempotency key ``<run id>:<tool_call_id>`` (``perdure.idempotency_key()`` inside the tool body).
The body runs wherever the engine runs steps; it rebuilds a :class:`ToolContext` and calls the tool's own
implementation, so the SDK's argument parsing and validation are unchanged. A tool whose function is a
plain ``def`` gets a sync body (:class:`SyncInvocation`): an engine that runs sync steps in one worker
thread (DBOS) runs its record check, the function and the record there, as it runs its own sync step,
instead of an async step that hands the function to yet another thread. Failures go through
perdure's retry policy first; only a failure that is final is formatted for the model the way the SDK
would have (the tool's ``failure_error_function``), and that formatting is recorded by replay too.

What the tool returns is recorded as what the model will see: plain JSON data as is, the SDK's structured
outputs (text/image/file) as their JSON form, typed outputs through the tool's output adapter, and any
other object as ``str(value)`` -- the text the SDK would have sent. A replay therefore hands the SDK the
same tool output, and every later model call gets the same input as in the first run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import pydantic_core
from agents.exceptions import ToolTimeoutError
from agents.tool import (
    FunctionTool,
    ToolOutputFileContent,
    ToolOutputImage,
    ToolOutputText,
    _FailureHandlingFunctionToolInvoker,
    _validate_function_tool_output,
    default_tool_timeout_error_message,
    maybe_invoke_function_tool_failure_error_function,
)
from agents.tool_context import ToolContext
from pydantic import TypeAdapter

from perdure.core.codec import adapter_for, to_jsonable
from perdure.core.errors import NonDeterminismError, RegistrationError, SerializationError, StepFailedError
from perdure.core.registry import Step, check_retry, get_step, same_definition
from perdure.core.registry import tool as perdure_tool
from perdure.core.retry import RetryPolicy
from perdure.core.runtime import RunContext

TOOL_PREFIX = "openai_agents.tool."
# Arguments the model got wrong (ModelBehaviorError) or a misdeclared tool (UserError) fail the same way
# on every attempt: the SDK reports them to the model at once.
TOOL_RETRY = RetryPolicy(
    max_attempts=3, initial_interval=1.0, backoff=2.0, max_interval=30.0,
    non_retryable=("ModelBehaviorError", "UserError", "ToolTimeoutError"),
)


def _with_timeouts_final(retry: RetryPolicy) -> RetryPolicy:
    """``retry``, never retrying a tool timeout whose behaviour is "raise_exception": the SDK fails the run
    with it at once, and each retry would wait the whole timeout again."""
    if "ToolTimeoutError" in retry.non_retryable:
        return retry
    return dataclasses.replace(retry, non_retryable=(*retry.non_retryable, "ToolTimeoutError"))

_tools: dict[str, FunctionTool] = {}
_sync_invocations: dict[str, SyncInvocation | None] = {}  # by step name, for the tool in _tools
_STRUCTURED = (ToolOutputText, ToolOutputImage, ToolOutputFileContent)
_STRUCTURED_ADAPTER: TypeAdapter[Any] = TypeAdapter(ToolOutputText | ToolOutputImage | ToolOutputFileContent)


def step_name(tool: FunctionTool) -> str:
    return TOOL_PREFIX + tool.qualified_name


def _same_tool(a: FunctionTool, b: FunctionTool) -> bool:
    """Whether two FunctionTool objects are the same tool: a module imported twice builds new objects for
    the same function; a factory building one tool per tenant builds different ones (same_definition)."""
    fa, fb = getattr(a, "__wrapped__", None), getattr(b, "__wrapped__", None)
    if callable(fa) and callable(fb):
        return same_definition(fa, fb)
    schema = (a.description, pydantic_core.to_json(a.params_json_schema)) == (
        b.description, pydantic_core.to_json(b.params_json_schema))
    return schema and same_definition(_implementation(a), _implementation(b))


def register_tool(tool: FunctionTool, retry: RetryPolicy | None = None) -> Step[Any, Any]:
    """Register ``tool`` as the perdure tool ``openai_agents.tool.<name>`` (idempotent for the same tool)."""
    name = step_name(tool)
    retry = None if retry is None else _with_timeouts_final(retry)
    existing = _tools.get(name)
    if existing is not None and existing is not tool and not _same_tool(existing, tool):
        raise RegistrationError(
            f"two different function tools are named {tool.qualified_name!r} (different functions, or one "
            "function made around different values); perdure runs tool calls by name, so one would run the "
            "other's code: give each its own name (function_tool(name_override=...)), or build the tool once "
            "and pass per-run values in the run's context"
        )
    _tools[name] = tool
    _sync_invocations[name] = SyncInvocation.of(tool)
    if existing is not None:
        registered = get_step(name)
        check_retry(registered, retry, f"function tool {tool.qualified_name!r}")
        return registered
    body = _sync_body_for(name) if _sync_invocations[name] is not None else _body_for(name)
    step: Step[Any, Any] = perdure_tool(
        body, name=name, description=tool.description, retry=retry or TOOL_RETRY
    )
    return step


def registered_tool(name: str) -> FunctionTool:
    try:
        return _tools[name]
    except KeyError:
        raise RegistrationError(
            f"function tool {name.removeprefix(TOOL_PREFIX)!r} is not registered in this process; call "
            "perdure.integrations.openai_agents.register(agent) when the module defining the agent is imported"
        ) from None


# --- the run context a tool body sees -------------------------------------------------------------
def encode_context(context: Any) -> dict[str, Any] | None:
    """The run's ``context`` object as JSON plus its type, so a tool body in any process gets it back."""
    if context is None:
        return None
    cls = type(context)
    if _find_class(cls.__module__, cls.__qualname__) is not cls:
        raise SerializationError(
            f"the agent run context (context=...) is a {cls.__qualname__}, which cannot be imported by its "
            f"name ({cls.__module__}.{cls.__qualname__}: a class defined inside a function, or replaced "
            "since): a tool body running in another process, or after a restart, could not rebuild it. "
            "Define the class at module level"
        )
    return {
        "type": f"{cls.__module__}:{cls.__qualname__}",
        "value": to_jsonable(context, where="the agent run context (context=...)"),
    }


def _find_class(module: str, qualname: str) -> Any:
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return None
    return found


def decode_context(data: dict[str, Any] | None) -> Any:
    if data is None:
        return None
    module, _, qualname = data["type"].partition(":")
    cls = _find_class(module, qualname)
    if cls is None:  # recorded by an older worker whose class is gone: the data as it was stored
        return data["value"]
    return adapter_for(cls).validate_python(data["value"])


# --- tool outputs, recorded as the model will see them ----------------------------------------------
def _plain_json(value: Any) -> bool:
    if value is None or isinstance(value, str | bool | int | float):
        return True
    if isinstance(value, list):
        return all(_plain_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_json(v) for k, v in value.items())
    return False


def encode_output(tool: FunctionTool, output: Any) -> dict[str, Any]:
    adapter = tool._output_type_adapter
    if adapter is not None:
        return {"kind": "typed", "value": adapter.dump_python(output, mode="json", by_alias=True)}
    if isinstance(output, _STRUCTURED):
        return {"kind": "structured", "value": output.model_dump(mode="json")}
    if isinstance(output, list | tuple) and output and all(isinstance(o, _STRUCTURED) for o in output):
        return {"kind": "structured_list", "value": [o.model_dump(mode="json") for o in output]}
    if _plain_json(output):
        return {"kind": "json", "value": output}
    return {"kind": "text", "value": str(output)}


def decode_output(tool: FunctionTool, data: dict[str, Any]) -> Any:
    kind, value = data["kind"], data["value"]
    if kind == "typed" and tool._output_type_adapter is not None:
        return tool._output_type_adapter.validate_python(value)
    if kind == "structured":
        return _STRUCTURED_ADAPTER.validate_python(value)
    if kind == "structured_list":
        return [_STRUCTURED_ADAPTER.validate_python(v) for v in value]
    return value


# --- the step body --------------------------------------------------------------------------------
def _implementation(tool: FunctionTool) -> Callable[[ToolContext[Any], str], Awaitable[Any]]:
    """The tool's own implementation, without the SDK's error-to-text conversion: a failure must reach
    perdure's retry policy first."""
    invoker = tool.on_invoke_tool
    if isinstance(invoker, _FailureHandlingFunctionToolInvoker):
        return invoker._invoke_tool_impl
    return invoker


async def _timed_out(tool: FunctionTool, ctx: ToolContext[Any], seconds: float) -> Any:
    """What the SDK does when a tool call outlives ``timeout_seconds``: raise ``ToolTimeoutError`` (the
    run fails with it), or give the model the tool's ``timeout_error_function`` text or the SDK's own."""
    error = ToolTimeoutError(tool_name=tool.name, timeout_seconds=seconds)
    if tool.timeout_behavior == "raise_exception":
        raise error
    if tool.timeout_error_function is None:
        return default_tool_timeout_error_message(tool_name=tool.name, timeout_seconds=seconds)
    message = tool.timeout_error_function(ctx, error)
    return await message if inspect.isawaitable(message) else message


def _tool_context(tool: FunctionTool, arguments: str, call_id: str, context: Any) -> ToolContext[Any]:
    return ToolContext(
        context=decode_context(context), tool_name=tool.name, tool_call_id=call_id, tool_arguments=arguments,
        tool_namespace=tool._tool_namespace,
    )


@dataclasses.dataclass(frozen=True)
class SyncInvocation:
    """The SDK's own pieces of a ``@function_tool`` over a plain ``def``, to call it without an event loop.

    The SDK's implementation is a coroutine that parses and validates the arguments, hands the function
    to ``asyncio.to_thread`` and validates its output. Run as perdure's step body on DBOS, that is an async
    DBOS step (three hand-offs to DBOS's executor) plus that thread: four thread hops for a call DBOS's
    own sync step makes in one -- measured ~1 ms (4-5 %) of an agent turn. A sync body calling the same
    pieces -- the SDK's argument preparation, the function, the SDK's output validation -- in the
    engine's worker thread keeps everything the SDK checks and says on failure.

    The pieces live in the implementation's closure (the SDK has no public way to reach them): if an SDK
    release renames them, :meth:`of` returns ``None`` and the tool keeps the async body, correct and
    slower; tests/test_openai_agents_sync_tools.py fails on that, so an upgrade notices.
    """

    prepare: Callable[[str, str], Any]  # (arguments, tool name) -> the SDK's PreparedFunctionArguments
    function: Callable[..., Any]
    takes_context: bool
    output_adapter: Any

    @staticmethod
    def of(tool: FunctionTool) -> SyncInvocation | None:
        impl = _implementation(tool)
        code, cells = getattr(impl, "__code__", None), getattr(impl, "__closure__", None)
        if code is None or not cells:
            return None
        try:
            found = {name: cell.cell_contents for name, cell in zip(code.co_freevars, cells, strict=True)}
            if found["is_sync_function_tool"] is not True:
                return None
            return SyncInvocation(found["_prepare_arguments"], found["the_func"],
                                  bool(found["schema"].takes_context), found["output_type_adapter"])
        except (KeyError, ValueError, AttributeError):  # another SDK's closure: keep the async body
            return None

    def __call__(self, tool: FunctionTool, ctx: ToolContext[Any], arguments: str) -> Any:
        """What the SDK's implementation does for this tool, in the calling thread."""
        prepared = self.prepare(arguments, tool.name)
        args, kwargs = prepared.args, prepared.kwargs
        output = self.function(ctx, *args, **kwargs) if self.takes_context else self.function(*args, **kwargs)
        return _validate_function_tool_output(
            tool_name=tool.name, output=output, output_type_adapter=self.output_adapter
        )


def _sync_body_for(name: str) -> Callable[..., dict[str, Any]]:
    # SDK function tools over a plain def take no timeout (the SDK refuses one), so none is handled here.
    def body(arguments: str, call_id: str, context: Any = None) -> dict[str, Any]:
        tool = registered_tool(name)
        invocation = _sync_invocations.get(name)
        if invocation is None:  # register_tool gave this name a sync body for a plain def: same function
            raise RegistrationError(f"function tool {tool.name!r} was registered over a plain def, and is not now")
        output = invocation(tool, _tool_context(tool, arguments, call_id, context), arguments)
        return {"call_id": call_id, **encode_output(tool, output)}

    body.__qualname__ = body.__name__ = "openai_agents_tool_body"
    return body


def _body_for(name: str) -> Callable[..., Awaitable[dict[str, Any]]]:
    async def body(arguments: str, call_id: str, context: Any = None) -> dict[str, Any]:
        tool = registered_tool(name)
        ctx = _tool_context(tool, arguments, call_id, context)
        call = _implementation(tool)(ctx, arguments)
        if tool.timeout_seconds is None:
            output = await call
        else:  # the timeout runs here, inside the step, where a timer cannot make the workflow diverge
            try:
                output = await asyncio.wait_for(call, tool.timeout_seconds)
            except TimeoutError:
                output = await _timed_out(tool, ctx, tool.timeout_seconds)
        return {"call_id": call_id, **encode_output(tool, output)}

    body.__qualname__ = body.__name__ = "openai_agents_tool_body"
    return body


# --- the workflow side ----------------------------------------------------------------------------


def key_for(run: RunContext, call_id: str) -> str:
    """The idempotency-key suffix of a tool call: its ``tool_call_id``, made unique in the run
    (:meth:`RunContext.unique_key`), so a provider that reuses ids -- or two agents run one after the other
    with scripted ids -- still gives every call its own key (``#2``...)."""
    return run.unique_key(call_id)


class DurableInvoker:
    """``on_invoke_tool`` of a durable agent's tool: one recorded perdure tool call per ``tool_call_id``."""

    def __init__(self, original: FunctionTool, step: Step[Any, Any], session: Any) -> None:
        self.original = original
        self.step = step
        self.session = session
        self.formats_failures = isinstance(original.on_invoke_tool, _FailureHandlingFunctionToolInvoker)
        self.tool: FunctionTool | None = None  # the agent's copy, set once it exists

    async def __call__(self, ctx: ToolContext[Any], arguments: str) -> Any:
        try:
            return await self._call(ctx, arguments)
        except BaseException as exc:
            # The SDK wraps what a tool raises in its own UserError; the runner re-raises this original
            # (a NonDeterminismError, a cancellation, an engine's own control-flow error) instead.
            self.session.remember(exc)
            raise

    def on_invoke_tool(self) -> Callable[[ToolContext[Any], str], Awaitable[Any]]:
        """What the tool copy's ``on_invoke_tool`` is set to: a plain function calling this invoker.

        Before every call the SDK reads the signature and type hints of ``on_invoke_tool`` to choose the
        context it passes (``agents.tool._get_function_tool_invoke_context``): an unannotated function
        is the cheapest thing to inspect (~8 µs, against ~35 µs for this object), and gets the full
        ``ToolContext`` as every other form does."""
        return lambda ctx, arguments: self(ctx, arguments)

    async def _call(self, ctx: ToolContext[Any], arguments: str) -> Any:
        run = self.session.run_context()
        call_id = ctx.tool_call_id
        key = key_for(run, call_id)
        position = run._position  # call_step takes this position before its first await
        try:
            args = (arguments, call_id, self.session.context_payload)
            # These arguments are JSON data already (the model's argument text, the call id, the encoded
            # context): a body in this process gets them as they are, which equals their JSON round trip.
            recorded = await run.call_step(self.step, args, {}, key=key, portable=lambda: (args, {}))
        except StepFailedError as exc:
            seconds = self.original.timeout_seconds
            if exc.error_type == "ToolTimeoutError" and seconds is not None:
                # timeout_behavior="raise_exception": the run fails with the SDK's own error, as without perdure.
                raise ToolTimeoutError(tool_name=self.original.name, timeout_seconds=seconds) from exc
            if not self.formats_failures:
                raise
            message = await maybe_invoke_function_tool_failure_error_function(
                function_tool=self.tool or self.original, context=ctx, error=exc
            )
            if message is None:
                raise
            return message
        if recorded.get("call_id") != call_id:
            # Parallel tool calls replayed in another order than they were recorded in.
            raise NonDeterminismError(position, f"tool call {recorded.get('call_id')!r}", f"tool call {call_id!r}")
        return decode_output(self.original, recorded)

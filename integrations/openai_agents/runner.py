"""``DurableRunner``: run an unchanged ``Agent`` inside a ``@perdure.workflow``.

``await DurableRunner.run(agent, input)`` is ``Runner.run`` with durability. It runs the SDK's own run
loop on a run-private copy of the agent graph (the agent, every agent reachable by handoffs, their
tools), in which

* every model call is one ``openai_agents.model`` step (:mod:`.model`),
* every function tool call is one ``openai_agents.tool.<name>`` perdure tool keyed by its
  ``tool_call_id`` (:mod:`.tools`),
* every tool that ``needs_approval`` waits for a perdure approval (:mod:`.approvals`).

Everything else the SDK does -- building inputs, choosing tools, handoffs, guardrails, parsing output --
is deterministic code that the workflow simply runs again on replay; recorded model responses and tool
outputs make it take the same path. The user's objects are never modified.

Parallel tool calls: the SDK starts one task per call in the order the model listed them, and each task
reaches its tool step through the same internal awaits, so calls get their journal positions in that
order on the first run and on every replay. Each recorded outcome carries its ``tool_call_id`` and is
checked on replay: a mismatch is a :class:`NonDeterminismError`, never a wrong tool output.
"""

from __future__ import annotations

import asyncio
import dataclasses
import weakref
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from agents import Agent, Handoff, ModelSettings, RunConfig, RunHooks, Runner
from agents.exceptions import AgentsException
from agents.items import TResponseInputItem
from agents.models.interface import Model
from agents.models.multi_provider import MultiProvider
from agents.result import RunResult, RunResultStreaming
from agents.run import DEFAULT_MAX_TURNS
from agents.stream_events import StreamEvent
from agents.tool import (
    ApplyPatchTool,
    CodeInterpreterTool,
    ComputerTool,
    CustomTool,
    FileSearchTool,
    FunctionTool,
    HostedMCPTool,
    ImageGenerationTool,
    LocalShellTool,
    ProgrammaticToolCallingTool,
    ShellTool,
    Tool,
    ToolSearchTool,
    WebSearchTool,
)

from perdure.core.context import current_run
from perdure.core.errors import ConfigurationError, RegistrationError
from perdure.core.retry import RetryPolicy
from perdure.core.runtime import RunContext

from .approvals import decide_interruptions
from .model import DurableModel, DurableModelProvider, name_of, register_model
from .tools import DurableInvoker, encode_context, register_tool

# Tools the model provider runs on its side: nothing happens in the worker, so nothing to record.
_HOSTED = (FileSearchTool, WebSearchTool, HostedMCPTool, CodeInterpreterTool, ImageGenerationTool, ToolSearchTool)
# Tools whose effects happen in the worker but that the SDK runs through its own action machinery.
_LOCAL = (ComputerTool, LocalShellTool, ShellTool, ApplyPatchTool, CustomTool, ProgrammaticToolCallingTool)

T = TypeVar("T")


class _Session:
    """One ``DurableRunner.run``: the agent copies it made, and the first error a durable call raised
    (the SDK wraps those in its own exception types; the runner re-raises them)."""

    def __init__(self, context: Any = None, tool_retry: RetryPolicy | None = None) -> None:
        self.context_payload = encode_context(context)
        self.tool_retry = tool_retry
        self.clones: dict[int, Agent[Any]] = {}
        self.originals: list[Any] = []  # keeps originals alive, so their id() stays theirs
        self.error: BaseException | None = None

    # --- used by the durable model and tools -------------------------------------------------------
    def run_context(self) -> RunContext:
        return current_run("a durable OpenAI Agents call")

    def remember(self, exc: BaseException) -> None:
        if self.error is None and not isinstance(exc, asyncio.CancelledError):
            self.error = exc

    def reraise(self, exc: BaseException) -> None:
        """Re-raise the original of an error the SDK wrapped (if a durable call raised one)."""
        original, self.error = self.error, None
        if original is None or original is exc or isinstance(exc, asyncio.CancelledError):
            return
        cause: BaseException | None = exc
        for _ in range(20):
            if cause is None or cause is original:
                break
            cause = cause.__cause__ or cause.__context__
        if cause is original or isinstance(exc, AgentsException):
            raise original from exc

    # --- the agent graph copy -----------------------------------------------------------------------
    def agent(self, original: Agent[Any]) -> Agent[Any]:
        clone = self.clones.get(id(original))
        if clone is not None:
            return clone
        if not isinstance(original, Agent):
            raise ConfigurationError(f"DurableRunner runs agents.Agent objects, got {type(original).__name__}")
        if original.mcp_servers:
            raise ConfigurationError(
                f"agent {original.name!r} uses MCP servers, whose tool calls perdure cannot record yet; "
                "use HostedMCPTool (runs at the provider) or wrap the calls in function tools"
            )
        _refuse_model_timeout(original.model_settings, f"agent {original.name!r}")
        clone = _copy(original)
        self.clones[id(original)] = clone
        self.originals.append(original)
        if isinstance(original.model, Model):
            clone.model = DurableModel(self.model_name(original.model, f"agent:{original.name}"), self)
        clone.tools = [self.tool(t, original) for t in original.tools]
        clone.handoffs = [self.handoff(h) for h in original.handoffs]
        return clone

    @staticmethod
    def model_name(model: Model, fallback: str) -> str:
        if isinstance(model, DurableModel) and model.name is not None:
            return model.name
        name = name_of(model)
        if name is not None:
            return name
        try:
            return register_model(fallback, model)
        except RegistrationError:
            raise RegistrationError(
                f"{fallback!r} already names another model instance (agents of one name with different "
                "models, or a model built anew for each run): register each model once with "
                "register_model(name, model) at import and use model=name -- a model step finds its model "
                "by name, so one run would call the other's model"
            ) from None

    def tool(self, tool: Tool, agent: Agent[Any]) -> Tool:
        if isinstance(tool, FunctionTool):
            step = register_tool(tool, self.tool_retry)
            invoker = DurableInvoker(tool, step, self)
            copy = _copy(tool)
            copy.on_invoke_tool = invoker.on_invoke_tool()
            # The timeout moves into the step: a timer racing a step in the workflow would diverge on replay.
            copy.timeout_seconds = None
            invoker.tool = copy
            return copy
        if isinstance(tool, _HOSTED):
            return tool
        kind = type(tool).__name__
        hint = "wrap what it does in a function tool" if isinstance(tool, _LOCAL) else "it is not a known tool type"
        raise ConfigurationError(f"agent {agent.name!r}: a {kind} cannot run durably ({hint})")

    def handoff(self, h: Agent[Any] | Handoff[Any, Any]) -> Agent[Any] | Handoff[Any, Any]:
        if isinstance(h, Agent):
            return self.agent(h)
        if not isinstance(h, Handoff):
            raise ConfigurationError(f"unknown handoff {h!r}")
        ref = h._agent_ref
        target = ref() if ref is not None else None
        original_invoke = h.on_invoke_handoff

        async def invoke(ctx: Any, input_json: str) -> Any:
            # ``on_handoff`` callbacks run here, in the workflow: keep them free of side effects.
            return self.agent(await original_invoke(ctx, input_json))

        copy = dataclasses.replace(h, on_invoke_handoff=invoke)
        if isinstance(target, Agent):
            copy._agent_ref = weakref.ref(self.agent(target))
        return copy

    def run_config(self, run_config: RunConfig | dict[str, Any] | None) -> RunConfig:
        rc = run_config or RunConfig()
        if isinstance(rc, dict):  # the SDK's runner takes RunConfig's fields as a dict too
            known = {f.name for f in dataclasses.fields(RunConfig) if f.init}
            if unknown := sorted(str(k) for k in rc if k not in known):
                raise ConfigurationError(f"unknown run_config settings: {', '.join(unknown)}")
            rc = RunConfig(**rc)
        if not isinstance(rc, RunConfig):
            raise ConfigurationError(
                f"DurableRunner needs run_config to be an agents.RunConfig or a dict of its fields, got {rc!r}"
            )
        if type(rc.model_provider) is not MultiProvider:
            raise ConfigurationError(
                "a custom RunConfig.model_provider cannot be reached from a model step in another process; "
                "register it with perdure.integrations.openai_agents.register_model_provider(...) instead"
            )
        if rc.model_settings is not None:
            _refuse_model_timeout(rc.model_settings, "run_config")
        model = rc.model
        if isinstance(model, Model):
            model = DurableModel(self.model_name(model, "run_config:model"), self)
        copy = _copy(rc)
        copy.model = model
        copy.model_provider = DurableModelProvider(self)
        copy.tracing_disabled = True  # spans would be exported from workflow code, once per replay
        return copy


def _refuse_model_timeout(settings: ModelSettings, where: str) -> None:
    """``ModelSettings.timeout`` is enforced by the SDK's run loop -- in workflow code, where a wall-clock
    timer racing a recorded model call would make a replay take another path than the first run."""
    if settings.timeout is not None:
        raise ConfigurationError(
            f"{where}: ModelSettings(timeout=...) cannot run durably (the SDK times the model call in "
            "workflow code, and a replay would not time out where the first run did); give the model's "
            "client its timeout instead (e.g. AsyncOpenAI(timeout=...)), which runs inside the model step"
        )


def _copy(obj: T) -> T:
    """A shallow copy of an SDK dataclass (agent, tool, run config) that does not run its constructor
    again. ``Agent.clone()`` and ``dataclasses.replace`` re-validate every field and re-derive each
    tool's strict JSON schema -- more work than the rest of a durable run's set-up -- for an object
    whose fields were checked when the original was built; what the copy changes is set by the runner."""
    copy: T = object.__new__(type(obj))
    copy.__dict__.update(obj.__dict__)
    return copy


def register(agent: Agent[Any], *, tool_retry: RetryPolicy | None = None) -> Agent[Any]:
    """Register ``agent``'s tools and model instances (and those of every agent it hands off to) under
    the names durable steps resolve. Call it when the module defining the agent is imported, so a worker
    that executes a step before replaying the workflow (a Temporal activity worker) finds them.
    Returns ``agent`` unchanged."""
    _Session(tool_retry=tool_retry).agent(agent)
    return agent


class DurableRunner:
    """``Runner.run`` / ``Runner.run_streamed`` for use inside a ``@perdure.workflow``."""

    @classmethod
    async def run(
        cls,
        starting_agent: Agent[Any],
        input: str | list[TResponseInputItem],
        *,
        context: Any = None,
        max_turns: int = DEFAULT_MAX_TURNS,
        hooks: RunHooks[Any] | None = None,
        run_config: RunConfig | dict[str, Any] | None = None,
        approval_timeout: float | None = None,
        **kwargs: Any,
    ) -> RunResult:
        """Run ``starting_agent`` on ``input`` durably and return the SDK's :class:`RunResult`.

        Tools that need approval wait for ``perdure.approval`` (``approval_timeout`` seconds, or forever);
        the run goes on with each decision until the agent produces its final output. ``context`` is
        available to tool bodies round-tripped through JSON (a pydantic model, dataclass or dict).
        """
        current_run("DurableRunner.run")
        _refuse(kwargs)
        session = _Session(context)
        agent = session.agent(starting_agent)
        rc = session.run_config(run_config)
        options = {"max_turns": max_turns, "hooks": hooks, "run_config": rc, **kwargs}
        next_input: Any = input
        first = True
        while True:
            try:
                if first:
                    result = await Runner.run(agent, next_input, context=context, **options)
                else:
                    result = await Runner.run(agent, next_input, **options)
            except BaseException as exc:
                session.reraise(exc)
                raise
            first = False
            session.error = None  # whatever a durable call raised, the SDK handled it
            if not result.interruptions:
                return result
            state = result.to_state()
            await decide_interruptions(state, list(result.interruptions), approval_timeout)
            next_input = state

    @classmethod
    def run_streamed(
        cls,
        starting_agent: Agent[Any],
        input: str | list[TResponseInputItem],
        *,
        context: Any = None,
        max_turns: int = DEFAULT_MAX_TURNS,
        hooks: RunHooks[Any] | None = None,
        run_config: RunConfig | dict[str, Any] | None = None,
        approval_timeout: float | None = None,
        **kwargs: Any,
    ) -> DurableStream:
        """Like ``Runner.run_streamed``: iterate ``stream_events()``, then read ``final_result``.

        Each model call is recorded whole and its events are emitted when it completes (no token deltas);
        a replay emits the events of recorded calls again. See docs/openai-agents.md, "Streaming".
        """
        current_run("DurableRunner.run_streamed")
        _refuse(kwargs)
        session = _Session(context)
        agent = session.agent(starting_agent)
        rc = session.run_config(run_config)
        options = {"max_turns": max_turns, "hooks": hooks, "run_config": rc, **kwargs}
        return DurableStream(session, agent, input, context, options, approval_timeout)


class DurableStream:
    """A streamed durable run: events of every round (approvals in between), then :attr:`final_result`."""

    def __init__(
        self, session: _Session, agent: Agent[Any], input: Any, context: Any, options: dict[str, Any],
        approval_timeout: float | None,
    ) -> None:
        self._session, self._agent, self._input, self._context = session, agent, input, context
        self._options, self._timeout = options, approval_timeout
        self.final_result: RunResultStreaming | None = None

    async def stream_events(self) -> AsyncIterator[StreamEvent]:
        next_input: Any = self._input
        first = True
        while True:
            extra = {"context": self._context} if first else {}
            result = Runner.run_streamed(self._agent, next_input, **extra, **self._options)
            try:
                async for event in result.stream_events():
                    yield event
            except BaseException as exc:
                self._session.reraise(exc)
                raise
            first = False
            self._session.error = None
            if not result.interruptions:
                self.final_result = result
                return
            state = result.to_state()
            await decide_interruptions(state, list(result.interruptions), self._timeout)
            next_input = state


def _refuse(kwargs: dict[str, Any]) -> None:
    if kwargs.get("session") is not None:
        raise ConfigurationError(
            "DurableRunner does not take an SDK session: the perdure journal already keeps the run's history"
        )

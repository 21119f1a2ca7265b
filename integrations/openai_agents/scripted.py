"""A scripted model for tests and examples: its reply is a function of the *input*, never of call order.

A durable run calls its model again only for turns that were not recorded, and a recovered worker is a
fresh process; a fake model that counts its calls (like ``agents.testing.ScriptedModel``'s queue) would
answer a re-executed turn with the *next* scripted reply. :class:`ScriptedModel` instead hands the reply
function a :class:`Turn` -- a read-only view of the conversation so far (the user's request, the tool
calls made, their outputs, the agent's instructions and offered tools) -- and builds a
:class:`ModelResponse` from what it returns:

* a ``str``: the final answer (an assistant message);
* ``call("search", query="x")``: one tool call, or a handoff (``call("transfer_to_writer")``);
* a list of calls: parallel tool calls, in that order.

Call ids are derived from the input as well (``call_<n>_<tool>``), so a re-executed turn produces the
same ids and the tool calls keep their idempotency keys.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pydantic_core
from agents import Handoff, ModelSettings
from agents.agent_output import AgentOutputSchemaBase
from agents.items import ModelResponse, TResponseInputItem, TResponseStreamEvent
from agents.models.interface import Model, ModelTracing
from agents.testing import assistant_message, function_call
from agents.tool import Tool
from agents.usage import Usage
from openai.types.responses.response_prompt_param import ResponsePromptParam

from .streaming import response_events


@dataclass(frozen=True)
class ToolCall:
    """A tool call (or handoff) a scripted model asks for."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


def call(name: str, **arguments: Any) -> ToolCall:
    """A scripted tool call: ``call("search", query="durable agents")``."""
    return ToolCall(name, arguments)


Reply = str | ToolCall | Sequence[ToolCall]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


@dataclass(frozen=True)
class Turn:
    """What the model is asked, as plain data: the view a reply function decides from."""

    instructions: str | None
    items: list[dict[str, Any]]
    tools: list[str]

    @property
    def user_text(self) -> str:
        """The text of the last user message."""
        for item in reversed(self.items):
            if item.get("role") == "user":
                return _text(item.get("content"))
        return ""

    @property
    def calls(self) -> list[dict[str, Any]]:
        """Every tool call (and handoff) made so far: ``{"name", "arguments", "call_id"}``, in order."""
        out = []
        for item in self.items:
            if item.get("type") == "function_call":
                args = item.get("arguments") or "{}"
                try:
                    parsed = pydantic_core.from_json(args)
                except ValueError:
                    parsed = args
                out.append({"name": item.get("name"), "arguments": parsed, "call_id": item.get("call_id")})
        return out

    def outputs(self, tool: str | None = None) -> list[str]:
        """The outputs of the calls of ``tool`` (of every tool if None) the conversation holds, in order."""
        names = {c["call_id"]: c["name"] for c in self.calls}
        return [
            _text(item.get("output"))
            for item in self.items
            if item.get("type") == "function_call_output" and (tool is None or names.get(item.get("call_id")) == tool)
        ]

    def called(self, tool: str) -> bool:
        return any(c["name"] == tool for c in self.calls)


ReplyFunction = Callable[[Turn], Reply | Awaitable[Reply]]


class ScriptedModel(Model):
    """A deterministic :class:`agents.Model`: ``reply(turn)`` chooses the response from the input."""

    def __init__(self, reply: ReplyFunction) -> None:
        self.reply = reply

    @staticmethod
    def turn(
        system_instructions: str | None, input: str | list[TResponseInputItem], tools: list[Tool],
        handoffs: list[Handoff[Any, Any]],
    ) -> Turn:
        if isinstance(input, str):
            items: list[dict[str, Any]] = [{"role": "user", "content": input}]
        else:
            items = [pydantic_core.from_json(pydantic_core.to_json(i)) for i in input]
        names = [getattr(t, "name", type(t).__name__) for t in tools] + [h.tool_name for h in handoffs]
        return Turn(system_instructions, items, names)

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff[Any, Any]],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> ModelResponse:
        turn = self.turn(system_instructions, input, tools, handoffs)
        reply = self.reply(turn)
        if inspect.isawaitable(reply):
            reply = await reply
        return build_response(turn, reply)

    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff[Any, Any]],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        response = await self.get_response(
            system_instructions, input, model_settings, tools, output_schema, handoffs, tracing,
            previous_response_id=previous_response_id, conversation_id=conversation_id, prompt=prompt,
        )
        for event in response_events(response):
            yield event


def build_response(turn: Turn, reply: Any) -> ModelResponse:
    """The :class:`ModelResponse` for a reply; ids derive from the conversation length, not a counter."""
    n = len(turn.items)
    if isinstance(reply, str):
        output: list[Any] = [assistant_message(reply, item_id=f"msg_{n}")]
    else:
        calls = [reply] if isinstance(reply, ToolCall) else list(reply)
        if not calls or not all(isinstance(c, ToolCall) for c in calls):
            raise TypeError(f"a scripted reply is a str, a call(...) or a list of calls, got {reply!r}")
        made = len(turn.calls)
        output = [
            function_call(c.name, c.arguments, call_id=f"call_{made + i}_{c.name}") for i, c in enumerate(calls)
        ]
    return ModelResponse(output=output, usage=Usage(requests=1), response_id=f"resp_{n}")

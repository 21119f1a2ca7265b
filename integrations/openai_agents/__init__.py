"""OpenAI Agents SDK on perdure: an unchanged ``Agent``, durable on any backend (``pip install perdure[openai-agents]``).

>>> from agents import Agent, function_tool
>>> from perdure.integrations.openai_agents import DurableRunner, register
>>>
>>> agent = register(Agent(name="researcher", model="gpt-4.1-mini", tools=[search, publish]))
>>>
>>> @perdure.workflow
... async def research(topic: str) -> str:
...     result = await DurableRunner.run(agent, topic)
...     return result.final_output

Every model call is a recorded step, every function tool call a perdure tool keyed by its
``tool_call_id``, every ``needs_approval`` tool a perdure approval. After a crash the run resumes from
its journal: no completed model call or tool call happens again. See docs/openai-agents.md.
"""

from __future__ import annotations

from .approvals import approval_name, approval_payload
from .model import (
    MODEL_STEP,
    DurableModel,
    DurableModelProvider,
    register_model,
    register_model_provider,
)
from .runner import DurableRunner, DurableStream, register
from .scripted import ScriptedModel, ToolCall, Turn, call
from .tools import TOOL_PREFIX

__all__ = [
    "MODEL_STEP", "TOOL_PREFIX", "DurableModel", "DurableModelProvider", "DurableRunner", "DurableStream",
    "ScriptedModel", "ToolCall", "Turn", "approval_name", "approval_payload", "call", "register",
    "register_model", "register_model_provider",
]

"""Tools marked ``needs_approval`` become perdure approvals.

The SDK stops a run whose model asked for a tool that needs approval and returns the pending calls as
``result.interruptions``; the caller approves or rejects each on the run's :class:`RunState` and runs
again from that state. :class:`~perdure.integrations.openai_agents.DurableRunner` does exactly that,
with the decision coming from :func:`perdure.approval`: the run shows as WAITING with the tool call as
the payload, survives any number of worker crashes, and is decided from the CLI
(``perdure approve RUN_ID <tool>-<position>``) or ``client.approve/reject``. Interruptions are decided
one after another in the order the SDK lists them, so a replay asks for the same approvals at the same
positions.

A decision's ``comment`` is the rejection message the model sees (the SDK's default when empty);
``data={"always": true}`` approves or rejects this tool for the rest of the run.
"""

from __future__ import annotations

import re
from typing import Any

import pydantic_core
from agents.items import ToolApprovalItem
from agents.run_state import RunState

import perdure

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def approval_name(item: ToolApprovalItem) -> str:
    """The perdure approval name of a pending tool call: the tool's name (approval ids read
    ``<tool>-<position>``)."""
    name = _UNSAFE.sub("_", item.qualified_name or item.name or "tool")[:100]
    return name or "tool"


def approval_payload(item: ToolApprovalItem) -> dict[str, Any]:
    """What the reviewer sees (and what the decision's digest binds): agent, tool, call id, arguments."""
    raw = item.arguments
    arguments: Any = raw
    if raw is not None:
        try:
            arguments = pydantic_core.from_json(raw)
        except ValueError:
            arguments = raw
    return {
        "agent": getattr(item.agent, "name", None),
        "tool": item.qualified_name or item.name,
        "call_id": item.call_id,
        "arguments": arguments,
    }


async def decide_interruptions(
    state: RunState[Any, Any], interruptions: list[ToolApprovalItem], timeout: float | None
) -> None:
    """Ask for one perdure approval per interruption, in order, and record each decision on ``state``."""
    for item in interruptions:
        decision = await perdure.approval(approval_name(item), approval_payload(item), timeout=timeout)
        always = isinstance(decision.data, dict) and bool(decision.data.get("always"))
        if decision.approved:
            state.approve(item, always_approve=always)
        else:
            state.reject(item, always_reject=always, rejection_message=decision.comment or None)

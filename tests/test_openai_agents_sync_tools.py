"""Function tools over a plain ``def``: a sync perdure tool body that does what the SDK's own coroutine does.

On DBOS a sync body is one hand-off to DBOS's executor (tests/dbos_internals_check.py counts it) instead
of an async step's three plus the SDK's ``asyncio.to_thread``; benchmarks/ measures the turn. These tests
check that the sync body is chosen, and that it is the SDK's behaviour: same outputs, same errors, same
context, retries and failure text as an async tool.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import pytest

pytest.importorskip("agents")

from agents import Agent, RunContextWrapper, function_tool  # noqa: E402
from agents.tool_context import ToolContext  # noqa: E402
from pydantic import BaseModel  # noqa: E402

import perdure  # noqa: E402
from perdure.core.errors import PermanentError  # noqa: E402
from perdure.core.registry import get_step  # noqa: E402
from perdure.integrations.openai_agents import DurableRunner, ScriptedModel, Turn, call, register  # noqa: E402
from perdure.integrations.openai_agents.tools import SyncInvocation, _implementation, step_name  # noqa: E402


class Box(BaseModel):
    width: int
    label: str = "box"


@function_tool(name_override="t_sync_area")
def area(box: Box, scale: float = 1.0) -> str:
    """Area of a box."""
    if box.width < 0:
        raise ValueError(f"negative width {box.width}")
    return f"{box.label}:{box.width * box.width * scale}"


@function_tool(name_override="t_sync_whoami")
def whoami(ctx: RunContextWrapper[Any], greeting: str) -> dict[str, Any]:
    """Who calls."""
    assert isinstance(ctx, ToolContext)
    return {"greeting": greeting, "call": ctx.tool_call_id, "context": ctx.context}


@function_tool(name_override="t_async_area")
async def async_area(width: int) -> int:
    """Area, async."""
    return width * width


def test_a_plain_def_tool_gets_a_sync_body_and_an_async_one_does_not() -> None:
    """Fails when an SDK release moves the pieces SyncInvocation reads: such a tool would silently fall
    back to the async body (correct, ~1 ms slower per call on DBOS)."""
    assert SyncInvocation.of(area) is not None and SyncInvocation.of(whoami) is not None
    assert SyncInvocation.of(async_area) is None
    register(Agent(name="t-sync-shapes", model=ScriptedModel(lambda turn: "-"), tools=[area, async_area]))
    assert get_step(step_name(area)).is_async is False
    assert get_step(step_name(async_area)).is_async is True


CASES = [
    (area, '{"box": {"width": 3}}'),
    (area, '{"box": {"width": 2, "label": "crate"}, "scale": 0.5}'),
    (area, '{"box": {"width": -1}}'),            # the function raises
    (area, '{"box": {"width": "wide"}}'),        # validation fails: ModelBehaviorError
    (area, '{"box": '),                          # not JSON
    (area, ""),                                  # no arguments at all
    (whoami, '{"greeting": "hi"}'),
    (whoami, '{}'),
]


def _outcome(thunk: Any) -> Any:
    try:
        return ("ok", thunk())
    except Exception as exc:  # noqa: BLE001  # the outcome is what is compared
        return ("error", type(exc).__name__, str(exc))


@pytest.mark.parametrize(("tool", "arguments"), CASES)
def test_the_sync_body_gives_what_the_sdks_own_implementation_gives(tool: Any, arguments: str) -> None:
    def context() -> ToolContext[Any]:
        return ToolContext(context={"tenant": 7}, tool_name=tool.name, tool_call_id="call_1", tool_arguments=arguments)

    invocation = SyncInvocation.of(tool)
    assert invocation is not None
    ours = _outcome(lambda: invocation(tool, context(), arguments))
    sdks = _outcome(lambda: asyncio.run(_implementation(tool)(context(), arguments)))
    assert ours == sdks


# --- end to end, on the reference engine -------------------------------------------------------------

seen: list[dict[str, Any]] = []
flaky = {"left": 0}


@function_tool(name_override="t_sync_ship")
def ship(parcel: str) -> str:
    """Ship a parcel."""
    seen.append({"key": perdure.idempotency_key(), "main": threading.current_thread() is threading.main_thread()})
    if parcel == "lost":
        raise PermanentError("no such parcel")
    if flaky["left"] > 0:
        flaky["left"] -= 1
        raise ConnectionError("carrier unreachable")
    return f"shipped {parcel}"


def _shipper(turn: Turn) -> Any:
    return f"model saw: {turn.outputs('t_sync_ship')[-1]}" if turn.called("t_sync_ship") else call(
        "t_sync_ship", parcel=turn.user_text)


shipper = register(Agent(name="t-sync-shipper", model=ScriptedModel(_shipper), tools=[ship]))


@perdure.workflow(name="t.sync.ship")
async def ship_flow(parcel: str) -> str:
    return str((await DurableRunner.run(shipper, parcel)).final_output)


def test_a_sync_tool_is_retried_keyed_and_its_failure_worded_as_with_an_async_one() -> None:
    async def main() -> Any:
        url = f"memory://sync-{uuid.uuid4().hex[:8]}"
        worker = asyncio.create_task(perdure.serve(url))
        try:
            client = perdure.Client(url)
            flaky["left"] = 1
            rid = await client.start(ship_flow, "books")
            ok = await client.result(rid, timeout=30)
            lost = await client.result(await client.start(ship_flow, "lost"), timeout=30)
            return rid, ok, lost, await client.steps(rid)
        finally:
            worker.cancel()

    seen.clear()
    rid, ok, lost, records = asyncio.run(main())
    assert ok == "model saw: shipped books"
    assert lost == "model saw: An error occurred while running the tool. Please try again."  # the SDK's text
    tool = [r for r in records if r.kind.value == "tool"]
    assert [(r.name, r.status.value, r.attempts) for r in tool] == [("openai_agents.tool.t_sync_ship", "COMPLETED", 2)]
    first, retry = seen[0], seen[1]
    assert first["key"] == retry["key"] and first["key"].startswith(f"{rid}:")  # a retry keeps its key
    assert not any(s["main"] for s in seen)  # the body ran in a worker thread, never on the event loop

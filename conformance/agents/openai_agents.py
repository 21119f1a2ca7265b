"""Agent conformance for the OpenAI Agents SDK: a research agent, run by ``DurableRunner`` on every backend.

The agent is an unchanged ``agents.Agent`` with a scripted model (its reply depends only on the input):

1. ``plan``: two *parallel* ``lookup`` calls;
2. ``draft``: one ``publish`` call -- a tool with ``needs_approval=True`` and a real side effect,
   applied through the ledger's deduplicating effect table with the tool's idempotency key;
3. ``handoff``: hand off to the ``writer`` agent;
4. ``write``: the writer's final answer, which says whether the post was published or rejected.

Every model turn and tool body records its call in the ledger and passes a gate named after it
(``model-plan``, ``model-draft``, ``model-handoff``, ``model-write``, ``lookup-<topic>``, ``publish``), so
a scenario can SIGKILL the worker inside any of them. The traces count model and tool executions: after a
crash only the call that was in flight runs again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agents import Agent, function_tool

import perdure
from perdure.integrations.openai_agents import (
    DurableRunner,
    ScriptedModel,
    Turn,
    call,
    register,
    register_model,
)

from ...core.types import StepStatus
from ..ledger import current_ledger
from ..scenarios import refused, scenario, start, trace
from ..workflows import pass_gate, pass_gate_sync

if TYPE_CHECKING:
    from ..harness import Harness


MODEL = "openai_agents.model"
LOOKUP = "openai_agents.tool.lookup"
PUBLISH = "openai_agents.tool.publish"


@function_tool
def lookup(topic: str) -> str:
    """Look a topic up in the knowledge base. A plain ``def`` (publish is async): both kinds of tool body
    are killed and re-run by the scenarios below."""
    pass_gate_sync(f"lookup-{topic}")
    return f"{topic}: 3 sources"


@function_tool(needs_approval=True)
async def publish(text: str) -> dict[str, Any]:
    """Publish a post. Applies the effect, then passes its gate: a kill there leaves an effect unrecorded."""
    ledger = current_ledger()
    rid, key = perdure.run_id(), perdure.idempotency_key()
    ledger.record_call("publish", rid, key)
    first = ledger.apply_effect(key, "publish", rid)
    await ledger.checkpoint(f"{rid}:publish")
    return {"post": f"post-{len(text)}", "first_application": first}


async def _researcher(turn: Turn) -> Any:
    if not turn.called("lookup"):
        await pass_gate("model-plan")
        return [call("lookup", topic="durability"), call("lookup", topic="agents")]
    if not turn.called("publish"):
        await pass_gate("model-draft")
        return call("publish", text=" / ".join(turn.outputs("lookup")))
    await pass_gate("model-handoff")
    return call("transfer_to_writer")


async def _writer(turn: Turn) -> Any:
    await pass_gate("model-write")
    outcome = turn.outputs("publish")[-1]
    return f"summary of {len(turn.outputs('lookup'))} lookups; publish said: {outcome}"


register_model("conf.oai.researcher", ScriptedModel(_researcher))
register_model("conf.oai.writer", ScriptedModel(_writer))

writer = Agent(name="writer", instructions="Write the final summary.", model="conf.oai.writer")
researcher = register(Agent(
    name="researcher",
    instructions="Research the topic, publish a draft, then hand off to the writer.",
    model="conf.oai.researcher",
    tools=[lookup, publish],
    handoffs=[writer],
))


@perdure.workflow(name="conf.oai.research")
async def research(topic: str) -> dict[str, Any]:
    result = await DurableRunner.run(researcher, topic)
    return {"final": result.final_output, "last_agent": result.last_agent.name}


@perdure.workflow(name="conf.oai.research_streamed")
async def research_streamed(topic: str) -> dict[str, Any]:
    """The same agent through DurableRunner.run_streamed: what a consumer of the stream receives."""
    stream = DurableRunner.run_streamed(researcher, topic)
    deltas, items = [], []
    async for event in stream.stream_events():
        if event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
            deltas.append(event.data.delta)
        elif event.type == "run_item_stream_event":
            items.append(event.name)
    assert stream.final_result is not None
    return {"final": stream.final_result.final_output, "deltas": deltas, "items": items}


# --- scenarios ------------------------------------------------------------------------------------

INFLIGHT = (MODEL, LOOKUP, PUBLISH)


async def _finish(h: Harness, rid: str, *, approve: bool = True, **decision: Any) -> dict[str, Any]:
    """Decide the pending publish approval and return what the reviewer saw."""
    info = await h.wait_pending(rid)
    pending = info.pending_approval
    assert pending is not None
    if approve:
        await h.client.approve(rid, pending.approval_id, digest=pending.digest, **decision)
    else:
        await h.client.reject(rid, pending.approval_id, digest=pending.digest, **decision)
    return {"approval_id": pending.approval_id, "payload": pending.payload, "status": info.status.value}


def _calls_once(t: dict[str, Any], inflight: str | None) -> bool:
    """No completed model or tool call ran twice: every label once, the in-flight one at most twice."""
    return all(n == 1 or (label == inflight and n == 2) for label, n in t["calls"].items())


@scenario(16)
async def oai_agent_happy_path(h: Harness) -> dict[str, Any]:
    """Parallel tools, an approved publish, a handoff: every model and tool call runs once."""
    rid = h.new_run_id("oai-happy")
    await start(h, research, rid, topic="durable agents")
    seen = await _finish(h, rid, by="alice")
    t = await trace(h, rid)
    return {"run": t, "approval": seen, "once": _calls_once(t, None)}


@scenario(16)
async def oai_kill_during_model_call(h: Harness) -> dict[str, Any]:
    """SIGKILL inside the second model call (after two recorded lookups): only that call runs again."""
    rid = h.new_run_id("oai-kill-model")
    h.ledger.arm(f"{rid}:model-draft")
    await start(h, research, rid, topic="durable agents")
    await h.arrive(rid, "model-draft")
    await h.restart_worker()
    h.ledger.release(f"{rid}:model-draft")
    seen = await _finish(h, rid, by="alice")
    t = await trace(h, rid, inflight=INFLIGHT)
    return {"run": t, "approval": seen, "once": _calls_once(t, "model-draft")}


@scenario(16)
async def oai_kill_during_tool_call(h: Harness) -> dict[str, Any]:
    """SIGKILL inside one of two parallel tool calls once the other is recorded: only it runs again."""
    rid = h.new_run_id("oai-kill-tool")
    h.ledger.arm(f"{rid}:lookup-agents")
    await start(h, research, rid, topic="durable agents")
    await h.arrive(rid, "lookup-agents")
    await h.wait_step(rid, LOOKUP)  # lookup-durability is recorded
    await h.restart_worker()
    h.ledger.release(f"{rid}:lookup-agents")
    seen = await _finish(h, rid, by="alice")
    t = await trace(h, rid, inflight=INFLIGHT)
    return {"run": t, "approval": seen, "once": _calls_once(t, "lookup-agents")}


@scenario(16)
async def oai_kill_during_side_effect(h: Harness) -> dict[str, Any]:
    """SIGKILL after publish applied its effect, before its record: same key on re-run, one effect."""
    rid = h.new_run_id("oai-kill-publish")
    h.ledger.arm(f"{rid}:publish")
    await start(h, research, rid, topic="durable agents")
    seen = await _finish(h, rid, by="alice")
    await h.arrive(rid, "publish")
    await h.restart_worker()
    h.ledger.release(f"{rid}:publish")
    t = await trace(h, rid, inflight=INFLIGHT)
    keys = h.ledger.keys_seen(rid, "publish")
    return {
        "run": t, "approval": seen, "once": _calls_once(t, "publish"), "distinct_keys": len(keys),
        "key_is_call_id": [k.split(":", 1)[1] for k in keys],
    }


@scenario(16)
async def oai_kill_while_waiting_for_approval(h: Harness) -> dict[str, Any]:
    """SIGKILL while the publish call waits; approve while no worker runs; a new worker finishes the run."""
    rid = h.new_run_id("oai-approval")
    await start(h, research, rid, topic="durable agents")
    waiting = await h.wait_pending(rid)
    await h.kill_worker()
    seen = await _finish(h, rid, by="alice", comment="ship it")
    await h.start_worker()
    t = await trace(h, rid)
    records = [r for r in await h.client.steps(rid) if r.kind.value == "approval"]
    return {
        "run": t, "approval": seen, "status_while_waiting": waiting.status.value, "once": _calls_once(t, None),
        "decided": [r.status is StepStatus.COMPLETED for r in records],
        "second_decision": await refused(h.client.reject(rid, seen["approval_id"])),
    }


@scenario(16)
async def oai_reject(h: Harness) -> dict[str, Any]:
    """A rejected publish never runs; the model sees the rejection message and the writer reports it."""
    rid = h.new_run_id("oai-reject")
    await start(h, research, rid, topic="durable agents")
    seen = await _finish(h, rid, approve=False, by="bob", comment="not approved: needs sources")
    t = await trace(h, rid)
    return {"run": t, "approval": seen, "once": _calls_once(t, None)}


@scenario(16)
async def oai_kill_after_handoff(h: Harness) -> dict[str, Any]:
    """SIGKILL inside the writer's model call: the handoff replays and the writer agent resumes."""
    rid = h.new_run_id("oai-handoff")
    h.ledger.arm(f"{rid}:model-write")
    await start(h, research, rid, topic="durable agents")
    seen = await _finish(h, rid, by="alice")
    await h.arrive(rid, "model-write")
    await h.restart_worker()
    h.ledger.release(f"{rid}:model-write")
    t = await trace(h, rid, inflight=INFLIGHT)
    return {"run": t, "approval": seen, "once": _calls_once(t, "model-write")}


@scenario(16)
async def oai_streamed_kill_during_model_call(h: Harness) -> dict[str, Any]:
    """run_streamed, SIGKILL inside a model call: recorded calls are not repeated; the stream completes."""
    rid = h.new_run_id("oai-stream")
    h.ledger.arm(f"{rid}:model-draft")
    await start(h, research_streamed, rid, topic="durable agents")
    await h.arrive(rid, "model-draft")
    await h.restart_worker()
    h.ledger.release(f"{rid}:model-draft")
    seen = await _finish(h, rid, by="alice")
    t = await trace(h, rid, inflight=INFLIGHT)
    return {"run": t, "approval": seen, "once": _calls_once(t, "model-draft")}

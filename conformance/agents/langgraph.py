"""LangGraph agent conformance: workflows (scripted model, ledger tools) and scenarios, scenario 16.

Two graphs, run with :func:`perdure.integrations.langgraph.run_graph`:

* ``lg.support`` -- a support agent: the model looks up two orders (parallel tool calls), decides to
  refund one; a review node has the model summarize the refund and asks a human (``ask_approval``);
  approved, the refund tool runs (a side effect in the deduplicating ledger); rejected, the model is told
  so. The model answers.
* ``lg.fanout`` -- two parallel branches each ask the model, a third node combines their answers.

The scripted model picks its reply from the conversation, never from call order, so a re-executed call
gets the same answer. Every model and tool body records its call in the ledger under a label and passes
a gate with that label (``<run>:<label>``) where the suite holds it and kills the worker. The traces'
``calls`` prove that no completed model or tool call ran twice: only the one in flight at the kill did.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Annotated, Any, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command

import perdure
from perdure.integrations.langgraph import DurableToolNode, ask_approval, durable_model, run_graph

from ..ledger import current_ledger
from ..scenarios import refused, scenario, start, trace
from ..workflows import pass_gate, pass_gate_sync

if TYPE_CHECKING:
    from ..harness import Harness

MODEL = "langgraph.model.conf-lg"
LOOKUP = "langgraph.tool.lookup_order"
REFUND = "langgraph.tool.refund"


def _script(messages: list[BaseMessage]) -> tuple[str, AIMessage]:
    """(call label, reply), decided by the conversation only."""
    system = next((str(m.content) for m in messages if isinstance(m, SystemMessage)), "")
    if system.startswith("branch "):
        return f"model.{system.replace(' ', '_')}", AIMessage(content=f"{system}: 3 findings")
    if system == "combine":
        return "model.combine", AIMessage(content="combined: " + " + ".join(str(m.content) for m in messages[1:]))
    if system == "summarize":
        last = messages[-1]
        args = last.tool_calls[0]["args"] if isinstance(last, AIMessage) and last.tool_calls else {}
        return "model.summarize", AIMessage(content=f"refund {args.get('amount')} EUR on {args.get('order')}")
    results = {m.name: str(m.content) for m in messages if isinstance(m, ToolMessage)}
    if "refund" in results:
        return "model.answer", AIMessage(content=f"Done: {results['refund']}")
    if "lookup_order" in results:
        return "model.decide", AIMessage(content="", tool_calls=[
            {"name": "refund", "args": {"order": "A-1", "amount": 30}, "id": "call_refund"}])
    return "model.plan", AIMessage(content="", tool_calls=[
        {"name": "lookup_order", "args": {"order": "A-1"}, "id": "call_lookup_1"},
        {"name": "lookup_order", "args": {"order": "A-2"}, "id": "call_lookup_2"}])


class ScriptedModel(BaseChatModel):
    """A fake chat model for the conformance suite (no network)."""

    @property
    def _llm_type(self) -> str:
        return "perdure-conformance-scripted"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        raise NotImplementedError("the scripted model is async only")

    async def _agenerate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                         **kwargs: Any) -> ChatResult:
        label, reply = _script(messages)
        await pass_gate(label)
        return ChatResult(generations=[ChatGeneration(message=reply)])


model = durable_model(ScriptedModel(), name="conf-lg")


@tool
def lookup_order(order: str) -> str:
    """Look up an order. A plain def (refund is async): both kinds of tool body are killed and re-run."""
    pass_gate_sync(f"lookup-{order}")
    return f"order {order}: 2 items, paid 30 EUR"


@tool
async def refund(order: str, amount: int) -> str:
    """Refund an order: applies the effect first, then passes its gate (a kill there leaves an effect
    with no record, which the idempotency key makes harmless)."""
    ledger = current_ledger()
    rid, key = perdure.run_id(), perdure.idempotency_key()
    ledger.record_call("refund", rid, key)
    ledger.apply_effect(key, "refund", rid)
    await ledger.checkpoint(f"{rid}:refund")
    return f"refunded {amount} EUR on {order}"


# --- lg.support --------------------------------------------------------------------------------------
async def agent(state: MessagesState) -> dict[str, Any]:
    return {"messages": [await model.ainvoke(state["messages"])]}


def route(state: MessagesState) -> str:
    last = state["messages"][-1]
    if isinstance(last, AIMessage) and last.tool_calls:
        return "review" if any(c["name"] == "refund" for c in last.tool_calls) else "tools"
    return END


async def review(state: MessagesState) -> Command[Any]:
    """Summarize with the model, then ask a human. On resume this node runs again from the top: the
    summary is not asked of the model a second time."""
    last = state["messages"][-1]
    assert isinstance(last, AIMessage)
    summary = await model.ainvoke([SystemMessage(content="summarize"), last])
    decision = ask_approval("refund", {"summary": summary.content, "call": last.tool_calls[0]["args"]})
    if decision.approved:
        return Command(goto="tools")
    rejection = ToolMessage(content=f"rejected by {decision.by}: {decision.comment}", name="refund",
                            tool_call_id=last.tool_calls[0]["id"])
    return Command(goto="agent", update={"messages": [rejection]})


def _support_graph() -> Any:
    b = StateGraph(MessagesState)
    b.add_node("agent", agent)
    b.add_node("tools", DurableToolNode([lookup_order, refund]))
    b.add_node("review", review)
    b.add_edge(START, "agent")
    b.add_conditional_edges("agent", route, ["tools", "review", END])
    b.add_edge("tools", "agent")
    return b.compile()


support_graph = _support_graph()


def _transcript(messages: list[BaseMessage]) -> list[str]:
    out = []
    for m in messages:
        calls = getattr(m, "tool_calls", None)
        out.append(f"{m.type}:" + (",".join(c["name"] for c in calls) if calls else str(m.content)))
    return out


@perdure.workflow(name="lg.support")
async def support(request: str) -> dict[str, Any]:
    state = await run_graph(support_graph, {"messages": [HumanMessage(content=request)]})
    return {"answer": state["messages"][-1].content, "transcript": _transcript(state["messages"])}


# --- lg.fanout ---------------------------------------------------------------------------------------
class FanState(TypedDict):
    topic: str
    notes: Annotated[list[str], operator.add]
    answer: str


def _branch(name: str) -> Any:
    async def node(state: FanState) -> dict[str, Any]:
        reply = await model.ainvoke([SystemMessage(content=f"branch {name}"), HumanMessage(content=state["topic"])])
        return {"notes": [str(reply.content)]}

    return node


async def combine(state: FanState) -> dict[str, Any]:
    notes = sorted(state["notes"])
    reply = await model.ainvoke([SystemMessage(content="combine"), *(HumanMessage(content=n) for n in notes)])
    return {"answer": str(reply.content)}


def _fanout_graph() -> Any:
    b = StateGraph(FanState)
    b.add_node("branch_a", _branch("a"))
    b.add_node("branch_b", _branch("b"))
    b.add_node("combine", combine)
    b.add_edge(START, "branch_a")
    b.add_edge(START, "branch_b")
    b.add_edge(["branch_a", "branch_b"], "combine")
    b.add_edge("combine", END)
    return b.compile()


fanout_graph = _fanout_graph()


@perdure.workflow(name="lg.fanout")
async def fanout(topic: str) -> dict[str, Any]:
    state = await run_graph(fanout_graph, {"topic": topic, "notes": []})
    return {"answer": state["answer"], "notes": sorted(state["notes"])}


# --- scenarios ---------------------------------------------------------------------------------------

def _repeated(t: dict[str, Any], inflight: tuple[str, ...] = ()) -> dict[str, int]:
    """Model and tool calls that ran more than once, apart from the one in flight at the kill (which
    SEMANTICS.md allows to run again). Must be empty."""
    return {k: v for k, v in t["calls"].items() if v > 1 and k not in inflight}


async def _decide(h: Harness, rid: str, approve: bool, *, with_kill: bool) -> dict[str, Any]:
    info = await h.wait_pending(rid)
    assert info.pending_approval is not None
    if with_kill:
        await h.kill_worker()
    aid = info.pending_approval.approval_id
    if approve:
        await h.client.approve(rid, aid, by="alice", comment="ok")
    else:
        await h.client.reject(rid, aid, by="bob", comment="too much")
    if with_kill:
        await h.start_worker()
    shown = info.pending_approval.model_dump(exclude={"deadline"})
    return {"pending": shown, "status_while_waiting": info.status.value}


@scenario(16)
async def langgraph_kill_during_model_call(h: Harness) -> dict[str, Any]:
    """LangGraph: SIGKILL inside the model call that decides the refund; no completed call runs again."""
    rid = h.new_run_id("lg-model")
    h.ledger.arm(f"{rid}:model.decide")
    await start(h, support, rid, request="refund order A-1")
    await h.arrive(rid, "model.decide")
    await h.restart_worker()
    h.ledger.release(f"{rid}:model.decide")
    shown = await _decide(h, rid, True, with_kill=False)
    t = await trace(h, rid, inflight=(MODEL,))
    repeated = _repeated(t, ("model.decide",))
    assert not repeated, f"completed calls ran again: {repeated}"
    return {"run": t, **shown, "repeated": repeated}


@scenario(16)
async def langgraph_kill_during_tool_call(h: Harness) -> dict[str, Any]:
    """LangGraph: SIGKILL in one of two parallel tool calls, and after the refund's effect (same key, one effect)."""
    out: dict[str, Any] = {}
    for label, tool_step in (("lookup-A-2", LOOKUP), ("refund", REFUND)):
        rid = h.new_run_id(f"lg-{label}")
        h.ledger.arm(f"{rid}:{label}")
        await start(h, support, rid, request="refund order A-1")
        if label == "refund":
            await _decide(h, rid, True, with_kill=False)
        await h.arrive(rid, label)
        if label != "refund":  # the parallel lookup of A-1 is not held: kill once it is recorded
            await h.wait_step(rid, LOOKUP)
        await h.restart_worker()
        h.ledger.release(f"{rid}:{label}")
        if label != "refund":
            await _decide(h, rid, True, with_kill=False)
        t = await trace(h, rid, inflight=(tool_step,))
        repeated = _repeated(t, (label,))
        assert not repeated, f"completed calls ran again: {repeated}"
        out[label] = {"run": t, "repeated": repeated, "keys": len(h.ledger.keys_seen(rid, label))}
    return out


@scenario(16)
async def langgraph_kill_while_interrupted(h: Harness) -> dict[str, Any]:
    """LangGraph: SIGKILL while interrupt() waits; approved while no worker runs; nothing runs twice."""
    rid = h.new_run_id("lg-approve")
    await start(h, support, rid, request="refund order A-1")
    shown = await _decide(h, rid, True, with_kill=True)
    t = await trace(h, rid)
    repeated = _repeated(t)
    assert not repeated, f"completed calls ran again: {repeated}"
    assert shown["pending"] is not None
    again = await refused(h.client.approve(rid, shown["pending"]["approval_id"], by="mallory"))
    return {"run": t, **shown, "repeated": repeated, "second_decision": again}


@scenario(16)
async def langgraph_reject_while_interrupted(h: Harness) -> dict[str, Any]:
    """LangGraph: SIGKILL while interrupted, rejected while no worker runs: the refund never happens."""
    rid = h.new_run_id("lg-reject")
    await start(h, support, rid, request="refund order A-1")
    shown = await _decide(h, rid, False, with_kill=True)
    t = await trace(h, rid)
    repeated = _repeated(t)
    assert not repeated, f"completed calls ran again: {repeated}"
    assert "refund" not in t["calls"] and t["effects"] == 0
    return {"run": t, **shown, "repeated": repeated}


@scenario(16)
async def langgraph_parallel_branches(h: Harness) -> dict[str, Any]:
    """LangGraph: two parallel branches, SIGKILL in the second one's model call: replay is deterministic."""
    rid = h.new_run_id("lg-fanout")
    h.ledger.arm(f"{rid}:model.branch_b")
    await start(h, fanout, rid, topic="durable agents")
    await h.arrive(rid, "model.branch_b")
    await h.restart_worker()
    h.ledger.release(f"{rid}:model.branch_b")
    t = await trace(h, rid, inflight=(MODEL,))
    repeated = _repeated(t, ("model.branch_b",))
    assert not repeated, f"completed calls ran again: {repeated}"
    return {"run": t, "repeated": repeated}

"""The LangGraph integration's edges: tool errors and retries, reused tool-call ids, the prebuilt ReAct
agent, and what it refuses (checkpointers, graphs run without run_graph, injected-state tools)."""

from __future__ import annotations

import asyncio
import operator
import uuid
import warnings
from typing import Annotated, Any, TypedDict

import pytest

pytest.importorskip("langgraph")

from langchain_core.language_models import BaseChatModel  # noqa: E402
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage  # noqa: E402
from langchain_core.outputs import ChatGeneration, ChatResult  # noqa: E402
from langchain_core.tools import tool  # noqa: E402
from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402
from langgraph.graph import END, START, MessagesState, StateGraph  # noqa: E402
from langgraph.prebuilt import InjectedState, create_react_agent, tools_condition  # noqa: E402

import perdure  # noqa: E402
from perdure.integrations.langgraph import DurableToolNode, ask_approval, durable_model, run_graph  # noqa: E402

KEYS: list[tuple[str, str]] = []
ATTEMPTS: list[int] = []


class Misbehaving(BaseChatModel):
    """Turn 1: a tool that fails and a call with invalid arguments; turn 2: reuses the id "call_0"."""

    @property
    def _llm_type(self) -> str:
        return "misbehaving"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any) -> ChatResult:
        results = [m for m in messages if isinstance(m, ToolMessage)]
        if not results:
            calls = [{"name": "boom", "args": {"x": 1}, "id": "call_0"},
                     {"name": "typed", "args": {"n": "not a number"}, "id": "call_1"}]
            reply = AIMessage(content="", tool_calls=calls)
        elif len(results) == 2:
            reply = AIMessage(content="", tool_calls=[{"name": "typed", "args": {"n": 3}, "id": "call_0"}])
        else:
            reply = AIMessage(content=" | ".join(f"{m.status}:{m.content}" for m in results))
        return ChatResult(generations=[ChatGeneration(message=reply)])


misbehaving = durable_model(Misbehaving(), name="test-misbehaving")


@tool
async def boom(x: int) -> str:
    """Always fails."""
    KEYS.append(("boom", perdure.idempotency_key()))
    ATTEMPTS.append(perdure.current_step().attempt)
    raise ConnectionError("backend down")


@tool
def typed(n: int) -> str:
    """Needs an integer. A plain def: its durable body is a sync step (LangChain's invoke, no thread of
    its own), so the sync path's invalid-argument record and success are checked here."""
    KEYS.append(("typed", perdure.idempotency_key()))
    return f"n={n}"


FAST = perdure.RetryPolicy(max_attempts=2, initial_interval=0.0)


def _loop_graph(model: Any, tools: Any) -> Any:
    async def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    b = StateGraph(MessagesState)
    b.add_node("agent", agent)
    b.add_node("tools", tools)
    b.add_edge(START, "agent")
    b.add_conditional_edges("agent", tools_condition, ["tools", END])
    b.add_edge("tools", "agent")
    return b.compile()


ERRORS = _loop_graph(misbehaving, DurableToolNode([boom, typed], retry=FAST, handle_tool_errors=True))


@perdure.workflow(name="test_lg_edges.errors")
async def errors() -> str:
    state = await run_graph(ERRORS, {"messages": [HumanMessage(content="go")]})
    return str(state["messages"][-1].content)


def run(workflow: Any, *args: Any) -> tuple[Any, list[perdure.StepRecord], str]:
    async def main() -> tuple[Any, list[perdure.StepRecord], str]:
        async with perdure.Client(f"memory://lg-edges-{uuid.uuid4().hex[:8]}") as client:
            worker = asyncio.create_task(client.backend.serve())
            try:
                rid = await client.start(workflow, *args)
                try:
                    out = await client.result(rid, timeout=20)
                except perdure.RunFailedError as exc:
                    out = exc
                return out, await client.steps(rid), rid
            finally:
                worker.cancel()

    return asyncio.run(main())


def test_tool_failures_are_retried_then_handled_and_invalid_arguments_are_not_retried() -> None:
    KEYS.clear()
    ATTEMPTS.clear()
    out, records, rid = run(errors)
    boom_message, invalid, typed_ok = out.split(" | ")
    assert boom_message.startswith("error:") and "StepFailedError" in boom_message and "backend down" in boom_message
    assert invalid.startswith("error:Error: ToolInvocationError(\"Error invoking tool 'typed'")
    assert typed_ok == "success:n=3"
    assert ATTEMPTS == [1, 2]  # perdure's RetryPolicy, before ToolNode's handle_tool_errors sees the failure
    boom_record = next(r for r in records if r.name == "langgraph.tool.boom")
    assert (boom_record.status.value, boom_record.attempts, boom_record.error.type) == ("FAILED", 2, "ConnectionError")
    invalid_record = [r for r in records if r.name == "langgraph.tool.typed"][0]
    assert invalid_record.attempts == 1 and "invalid" in invalid_record.output
    # The model reused "call_0" in its second response: that call gets a key of its own.
    assert KEYS[-1] == ("typed", f"{rid}:call_0#2") and ("boom", f"{rid}:call_0") in KEYS


with warnings.catch_warnings():  # create_react_agent is deprecated in favour of langchain's create_agent
    warnings.simplefilter("ignore")
    REACT = create_react_agent(misbehaving, DurableToolNode([boom, typed], retry=FAST, handle_tool_errors=True))


@perdure.workflow(name="test_lg_edges.react")
async def react() -> str:
    state = await run_graph(REACT, {"messages": [HumanMessage(content="go")]})
    return str(state["messages"][-1].content)


def test_the_prebuilt_react_agent_runs_durably() -> None:
    out, records, _ = run(react)
    assert out.endswith("success:n=3")
    assert [r.name.rsplit(".", 1)[-1] for r in records] == [
        "test-misbehaving", "boom", "typed", "test-misbehaving", "typed", "test-misbehaving"]


# --- refusals ---------------------------------------------------------------------------------------
def _checkpointed() -> Any:
    b = StateGraph(MessagesState)
    b.add_node("agent", lambda s: {"messages": []})
    b.add_edge(START, "agent")
    return b.compile(checkpointer=InMemorySaver())


@perdure.workflow(name="test_lg_edges.checkpointed")
async def checkpointed() -> Any:
    return await run_graph(_checkpointed(), {"messages": []})


@perdure.workflow(name="test_lg_edges.direct")
async def direct() -> Any:
    return await ERRORS.ainvoke({"messages": [HumanMessage(content="go")]})


def test_refusals() -> None:
    out, _, _ = run(checkpointed)
    assert isinstance(out, perdure.RunFailedError) and out.error_type == "ConfigurationError"
    assert "without a checkpointer" in str(out)
    out, _, _ = run(direct)
    assert isinstance(out, perdure.RunFailedError) and out.error_type == "ConfigurationError"
    assert "run_graph" in str(out)

    @tool
    def reads_state(q: str, state: Annotated[dict, InjectedState]) -> str:
        """Needs the graph state."""
        return q

    with pytest.raises(perdure.RegistrationError, match="InjectedState"):
        DurableToolNode([reads_state])
    with pytest.raises(perdure.RegistrationError, match="awrap_tool_call"):
        DurableToolNode([typed], wrap_tool_call=lambda request, execute: execute(request))
    with pytest.raises(perdure.NotInWorkflowError):
        asyncio.run(misbehaving.ainvoke("hello"))
    with pytest.raises(perdure.RegistrationError, match="two different chat models"):
        durable_model(TwoCalls(), name="test-misbehaving")
    assert durable_model(Misbehaving(), name="test-misbehaving").model is not None  # re-import: allowed


# --- interrupts in subgraphs, and two in one node ----------------------------------------------------
class Log(TypedDict):
    log: Annotated[list[str], operator.add]


async def twice(state: Log) -> dict[str, Any]:
    first = ask_approval("first", {"q": 1})
    second = ask_approval("second", {"q": 2, "first": first.approved})
    return {"log": [f"first={first.approved}", f"second={second.approved}"]}


def _nested() -> Any:
    inner = StateGraph(Log)
    inner.add_node("twice", twice)
    inner.add_edge(START, "twice")
    outer = StateGraph(Log)
    outer.add_node("inner", inner.compile())
    outer.add_edge(START, "inner")
    return outer.compile()


NESTED = _nested()


@perdure.workflow(name="test_lg_edges.nested")
async def nested() -> list[str]:
    return list((await run_graph(NESTED, {"log": []}))["log"])


def test_two_approvals_in_one_node_of_a_subgraph() -> None:
    async def main() -> tuple[list[str], list[str]]:
        async with perdure.Client(f"memory://lg-edges-{uuid.uuid4().hex[:8]}") as client:
            worker = asyncio.create_task(client.backend.serve())
            try:
                rid = await client.start(nested)
                asked: list[str] = []
                while not (info := await client.status(rid)).status.terminal:
                    p = info.pending_approval
                    if p is not None and p.approval_id not in asked:
                        asked.append(p.approval_id)
                        if p.name == "first":
                            await client.approve(rid, p.approval_id)
                        else:
                            assert p.payload == {"q": 2, "first": True}
                            await client.reject(rid, p.approval_id)
                    await asyncio.sleep(0.005)
                return await client.result(rid), asked
            finally:
                worker.cancel()

    out, asked = asyncio.run(main())
    assert asked == ["first-0", "second-1"]
    assert out[-2:] == ["first=True", "second=False"]


# --- a user tool wrapper that delays one call cannot reorder the journal ---------------------------
class TwoCalls(BaseChatModel):
    @property
    def _llm_type(self) -> str:
        return "two-calls"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any) -> ChatResult:
        if any(isinstance(m, ToolMessage) for m in messages):
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content="done"))])
        calls = [{"name": "typed", "args": {"n": 1}, "id": "first"}, {"name": "typed", "args": {"n": 2}, "id": "second"}]
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="", tool_calls=calls))])


async def slow_first(request: Any, execute: Any) -> Any:
    if request.tool_call["id"] == "first":
        await asyncio.sleep(0.05)
    return await execute(request)


WRAPPED = _loop_graph(durable_model(TwoCalls(), name="test-two-calls"), DurableToolNode([typed], awrap_tool_call=slow_first))


@perdure.workflow(name="test_lg_edges.wrapped")
async def wrapped() -> str:
    return str((await run_graph(WRAPPED, {"messages": [HumanMessage(content="go")]}))["messages"][-1].content)


def test_a_tool_wrapper_that_delays_a_call_does_not_reorder_the_journal() -> None:
    out, records, _ = run(wrapped)
    assert out == "done"
    assert [r.output["message"]["data"]["tool_call_id"] for r in records[1:3]] == ["first", "second"]


class OneCall(BaseChatModel):
    """Calls ``tool_name`` once with the id "call_0" (as every fresh conversation of some models does),
    then answers with the tool's output."""

    endpoint: str = "https://a.example"
    tool_name: str = "typed"
    args: dict[str, Any] | None = None  # None: {"n": <messages so far>}

    @property
    def _llm_type(self) -> str:
        return "one-call"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any) -> ChatResult:
        results = [m for m in messages if isinstance(m, ToolMessage)]
        if results:
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content=str(results[-1].content)))])
        call = {"name": self.tool_name, "args": self.args or {"n": len(messages)}, "id": "call_0"}
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="", tool_calls=[call]))])


ONE_CALL = _loop_graph(durable_model(OneCall(), name="test-one-call"), DurableToolNode([typed], retry=FAST))


@perdure.workflow(name="test_lg_edges.two_graphs")
async def two_graphs() -> list[str]:
    out = []
    for customer in ("alice", "bob"):
        state = await run_graph(ONE_CALL, {"messages": [HumanMessage(content=f"invoice {customer}")]})
        out.append(str(state["messages"][-1].content))
    return out


def test_two_graphs_in_one_run_give_a_reused_tool_call_id_two_idempotency_keys() -> None:
    KEYS.clear()
    out, _, rid = run(two_graphs)
    assert out == ["n=1", "n=1"]
    # Counted per perdure run, not per run_graph: a payment API deduplicating by key charges both.
    assert KEYS == [("typed", f"{rid}:call_0"), ("typed", f"{rid}:call_0#2")]


def test_a_name_cannot_stand_for_two_different_tools_models_or_retry_policies() -> None:
    def make_lookup(tenant: str) -> Any:
        @tool("t_lg_tenant_lookup")
        async def lookup(key: str) -> str:
            """Look a key up in the tenant's store."""
            return f"{tenant}:{key}"

        return lookup

    DurableToolNode([make_lookup("acme")])
    DurableToolNode([make_lookup("acme")])  # the same tool again (a graph built twice): fine
    with pytest.raises(perdure.RegistrationError, match="made around different values"):
        DurableToolNode([make_lookup("globex")])  # would silently run acme's lookup for globex
    with pytest.raises(perdure.RegistrationError, match="already registered with"):
        DurableToolNode([typed], retry=perdure.RetryPolicy(max_attempts=7))
    durable_model(OneCall(), name="test-one-call")  # equal settings: the same model
    with pytest.raises(perdure.RegistrationError, match="two different chat models"):
        durable_model(OneCall(endpoint="https://b.example"), name="test-one-call")


@tool
async def asks_a_human(question: str) -> str:
    """Asks a human -- from inside a tool, which a durable tool cannot do."""
    from langgraph.types import interrupt

    return str(interrupt(question))


@tool
def asks_a_human_sync(question: str) -> str:
    """The same, from a plain def."""
    from langgraph.types import interrupt

    return str(interrupt(question))


ASKS = _loop_graph(durable_model(OneCall(tool_name="asks_a_human", args={"question": "ok?"}), name="test-asks-once"),
                   DurableToolNode([asks_a_human]))
ASKS_SYNC = _loop_graph(
    durable_model(OneCall(tool_name="asks_a_human_sync", args={"question": "ok?"}), name="test-asks-once-sync"),
    DurableToolNode([asks_a_human_sync]))


@perdure.workflow(name="test_lg_edges.asks")
async def asks() -> str:
    state = await run_graph(ASKS, {"messages": [HumanMessage(content="go")]})
    return str(state["messages"][-1].content)


@perdure.workflow(name="test_lg_edges.asks_sync")
async def asks_sync() -> str:
    state = await run_graph(ASKS_SYNC, {"messages": [HumanMessage(content="go")]})
    return str(state["messages"][-1].content)


@pytest.mark.parametrize(("flow", "tool_name"), [(asks, "asks_a_human"), (asks_sync, "asks_a_human_sync")])
def test_interrupt_inside_a_durable_tool_fails_at_once_pointing_to_ask_approval(flow: Any, tool_name: str) -> None:
    out, records, _ = run(flow)
    assert isinstance(out, perdure.RunFailedError) and "ask_approval" in str(out)
    (tool_record,) = [r for r in records if r.name == f"langgraph.tool.{tool_name}"]
    assert tool_record.status.value == "FAILED" and tool_record.attempts == 1  # not retried with backoff


def test_a_tool_with_only_a_sync_implementation_is_a_sync_step() -> None:
    from perdure.core.registry import get_step

    assert get_step("langgraph.tool.typed").is_async is False  # plain def
    assert get_step("langgraph.tool.boom").is_async is True  # async def

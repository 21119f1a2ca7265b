"""Graphs and workflows for the LangGraph integration tests (run on memory:// in the test process).

A scripted chat model answers from the conversation (never from call order); every model and tool body
appends to ``CALLS`` and can be held at a gate (``GATES``) so a test can crash the worker right there.
"""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, Any, TypedDict

from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command, Send, interrupt

import perdure
from perdure.integrations.langgraph import DurableToolNode, ask_approval, durable_model, run_graph

CALLS: list[tuple[str, str]] = []  # (label, idempotency key) of every model/tool body execution
EFFECTS: dict[str, str] = {}  # the deduplicating external system: idempotency key -> effect
GATES: dict[str, asyncio.Event] = {}  # armed gates; a body waits at its label until the event is set
ARRIVED: dict[str, asyncio.Event] = {}
VARIANT = {"prompt": "plan"}  # the nondeterminism test changes the code between crash and restart


def reset() -> None:
    CALLS.clear()
    EFFECTS.clear()
    GATES.clear()
    ARRIVED.clear()
    VARIANT["prompt"] = "plan"


def arm(label: str) -> None:
    GATES[label] = asyncio.Event()
    ARRIVED[label] = asyncio.Event()


async def _body(label: str) -> None:
    CALLS.append((label, perdure.idempotency_key()))
    if label in GATES:
        ARRIVED[label].set()
        await GATES[label].wait()


def calls(label: str) -> int:
    return sum(1 for name, _ in CALLS if name == label)


def _reply(messages: list[BaseMessage]) -> tuple[str, AIMessage]:
    system = next((str(m.content) for m in messages if isinstance(m, SystemMessage)), "")
    if system:
        return f"model.{system}", AIMessage(content=f"{system} says {messages[-1].content}")
    results = [m for m in messages if isinstance(m, ToolMessage)]
    if any(m.name == "charge" for m in results):
        return "model.answer", AIMessage(content="answer: " + "; ".join(str(m.content) for m in results))
    if results:
        return "model.decide", AIMessage(content="", tool_calls=[
            {"name": "charge", "args": {"amount": 30}, "id": "call_charge"}])
    return "model.plan", AIMessage(content="", tool_calls=[
        {"name": "lookup", "args": {"item": "a"}, "id": "call_a"},
        {"name": "lookup", "args": {"item": "b"}, "id": "call_b"}])


class Scripted(BaseChatModel):
    """A fake chat model: no network, replies depend only on the input."""

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any) -> ChatResult:
        raise NotImplementedError

    async def _agenerate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                         **kw: Any) -> ChatResult:
        label, reply = _reply(messages)
        await _body(label)
        return ChatResult(generations=[ChatGeneration(message=reply)])


model = durable_model(Scripted(), name="test-scripted")


@tool
async def lookup(item: str) -> str:
    """Look an item up."""
    await _body(f"lookup-{item}")
    await asyncio.sleep(0.02 if item == "a" else 0)  # a finishes after b: positions must not follow that
    return f"{item} costs 15"


@tool
async def charge(amount: int) -> str:
    """Charge a card: the effect happens before the gate, so a crash at the gate leaves it unrecorded."""
    key = perdure.idempotency_key()
    EFFECTS.setdefault(key, f"charged {amount}")
    await _body("charge")
    return f"charged {amount} once (key {key.split(':', 1)[1]})"


async def agent(state: MessagesState) -> dict[str, Any]:
    return {"messages": [await model.ainvoke(state["messages"])]}


def route(state: MessagesState) -> str:
    last = state["messages"][-1]
    if isinstance(last, AIMessage) and last.tool_calls:
        return "review" if last.tool_calls[0]["name"] == "charge" else "tools"
    return END


async def review(state: MessagesState) -> Command[Any]:
    last = state["messages"][-1]
    assert isinstance(last, AIMessage)
    summary = await model.ainvoke([SystemMessage(content="summarize"), HumanMessage(content="charge 30")])
    decision = ask_approval("charge", {"summary": summary.content})
    if decision.approved:
        return Command(goto="tools")
    no = ToolMessage(content=f"rejected: {decision.comment}", name="charge", tool_call_id=last.tool_calls[0]["id"])
    return Command(goto="agent", update={"messages": [no]})


def shop_graph() -> Any:
    b = StateGraph(MessagesState)
    b.add_node("agent", agent)
    b.add_node("tools", DurableToolNode([lookup, charge]))
    b.add_node("review", review)
    b.add_edge(START, "agent")
    b.add_conditional_edges("agent", route, ["tools", "review", END])
    b.add_edge("tools", "agent")
    return b.compile()


SHOP = shop_graph()


@perdure.workflow(name="test_lg.shop")
async def shop(request: str) -> list[str]:
    state = await run_graph(SHOP, {"messages": [HumanMessage(content=request)]})
    return [str(m.content) for m in state["messages"]]


# --- concurrent model calls inside one node ----------------------------------------------------------
class SlowStart(AsyncCallbackHandler):
    """Delays the *first* of two concurrent model calls before it reaches the model: without ordering,
    the second call would take the first journal position."""

    async def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        if "first" in str(messages[0][-1].content):
            await asyncio.sleep(0.05)


class Pair(TypedDict):
    topic: str
    answers: list[str]


async def ask_both(state: Pair) -> dict[str, Any]:
    config = {"callbacks": [SlowStart()]}
    first, second = await asyncio.gather(
        model.ainvoke([SystemMessage(content="one"), HumanMessage(content=f"first {state['topic']}")], config=config),
        model.ainvoke([SystemMessage(content="two"), HumanMessage(content=f"second {state['topic']}")], config=config),
    )
    return {"answers": [str(first.content), str(second.content)]}


def pair_graph() -> Any:
    b = StateGraph(Pair)
    b.add_node("ask_both", ask_both)
    b.add_edge(START, "ask_both")
    b.add_edge("ask_both", END)
    return b.compile()


PAIR = pair_graph()


@perdure.workflow(name="test_lg.pair")
async def pair(topic: str) -> list[str]:
    state = await run_graph(PAIR, {"topic": topic, "answers": []})
    then = await model.ainvoke([SystemMessage(content="after"), HumanMessage(content="done")])
    return [*state["answers"], str(then.content)]


# --- plain interrupts, two at once; a prompt that changes between deploys ------------------------------
class Votes(TypedDict):
    votes: Annotated[list[str], operator.add]


def voter(name: str) -> Any:
    async def node(state: Votes) -> dict[str, Any]:
        answer = interrupt({"voter": name})
        return {"votes": [f"{name}:{answer}"]}

    return node


def votes_graph() -> Any:
    b = StateGraph(Votes)
    b.add_node("alice", voter("alice"))
    b.add_node("bob", voter("bob"))
    b.add_edge(START, "alice")
    b.add_edge(START, "bob")
    b.add_edge("alice", END)
    b.add_edge("bob", END)
    return b.compile()


VOTES = votes_graph()


@perdure.workflow(name="test_lg.votes")
async def votes() -> list[str]:
    state = await run_graph(VOTES, {"votes": []}, resume=lambda d, value: "yes" if d.approved else "no")
    return sorted(state["votes"])


class Topic(TypedDict):
    topic: str
    notes: Annotated[list[str], operator.add]


async def think(state: Topic) -> dict[str, Any]:
    reply = await model.ainvoke([SystemMessage(content=VARIANT["prompt"]), HumanMessage(content=state["topic"])])
    return {"notes": [str(reply.content)]}


async def write(state: Topic) -> dict[str, Any]:
    reply = await model.ainvoke([SystemMessage(content="write"), HumanMessage(content=state["notes"][-1])])
    return {"notes": [str(reply.content)]}


def essay_graph() -> Any:
    b = StateGraph(Topic)
    b.add_node("think", think)
    b.add_node("write", write)
    b.add_edge(START, "think")
    b.add_edge("think", "write")
    b.add_edge("write", END)
    return b.compile()


ESSAY = essay_graph()


@perdure.workflow(name="test_lg.essay")
async def essay(topic: str) -> list[str]:
    state = await run_graph(ESSAY, {"topic": topic, "notes": []})
    return list(state["notes"])


# --- map-reduce with Send, a subgraph, a sync node ----------------------------------------------------
class Sub(TypedDict):
    topic: str
    notes: Annotated[list[str], operator.add]


def sub_graph() -> Any:
    b = StateGraph(Sub)
    b.add_node("deep", think)
    b.add_edge(START, "deep")
    b.add_edge("deep", END)
    return b.compile()


class Mapped(TypedDict):
    topic: Annotated[str, lambda old, new: old or new]  # subgraphs hand their topic back: keep the first
    notes: Annotated[list[str], operator.add]


def fan_out(state: Mapped) -> list[Send]:
    return [Send("research", {"topic": t, "notes": []}) for t in state["topic"].split(",")]


def summarize(state: Mapped) -> dict[str, Any]:
    """A sync node: LangGraph runs it in a thread; its model call goes to the workflow's loop."""
    reply = model.invoke([SystemMessage(content="sum"), HumanMessage(content=" | ".join(sorted(state["notes"])))])
    return {"notes": [str(reply.content)]}


def map_graph() -> Any:
    b = StateGraph(Mapped)
    b.add_node("research", sub_graph())
    b.add_node("summarize", summarize)
    b.add_conditional_edges(START, fan_out, ["research"])
    b.add_edge("research", "summarize")
    b.add_edge("summarize", END)
    return b.compile()


MAP = map_graph()


@perdure.workflow(name="test_lg.map")
async def map_reduce(topics: str) -> str:
    state = await run_graph(MAP, {"topic": topics, "notes": []})
    return str(state["notes"][-1])

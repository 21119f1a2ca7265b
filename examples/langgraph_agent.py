"""A LangGraph support agent with tools and a human approval, made durable by perdure -- crash included.

Run it (no API key, nothing leaves the machine: the chat model is scripted)::

    python -m perdure.examples.langgraph_agent                    # DBOS on SQLite if installed, else memory://
    python -m perdure.examples.langgraph_agent --engine temporal  # or restate, dbos+postgresql, memory
    python -m perdure.examples.langgraph_agent --reject           # the reviewer says no

What happens: a worker process starts the agent (model -> two lookups in parallel -> model decides a
refund -> review node: the model summarizes, a human approves -> refund tool -> model answers). While the
model is deciding, the worker is SIGKILLed. A second worker replays the run: recorded model and tool calls
return their recorded results, only the call in flight runs again, the approval is asked once, and the
refund happens once (its idempotency key is the model's tool_call id).

The graph is plain LangGraph; three things make it durable: ``durable_model(...)``, ``DurableToolNode``
and ``await run_graph(graph, input)`` inside a ``@perdure.workflow``. Workers serve it with
``perdure worker URL --app perdure.examples.langgraph_agent``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command

import perdure
from perdure.examples.workers import DemoWorker, until
from perdure.integrations.langgraph import DurableToolNode, ask_approval, durable_model, run_graph

APP = "perdure.examples.langgraph_agent"
EVENTS = "PERDURE_EXAMPLE_DIR"


def _log(call: str) -> None:
    """Append which worker ran which call (the report at the end reads it)."""
    folder = Path(os.environ.get(EVENTS, ".perdure-example"))
    folder.mkdir(parents=True, exist_ok=True)
    line = {"call": call, "worker": os.environ.get("PERDURE_EXAMPLE_WORKER", "?"), "t": time.time()}
    with open(folder / "events.log", "a") as f:
        f.write(json.dumps(line) + "\n")


# --- the agent -------------------------------------------------------------------------------------------
class ScriptedModel(BaseChatModel):
    """Stands in for a real chat model. Like a real one on replay, its answer depends only on its input."""

    @property
    def _llm_type(self) -> str:
        return "scripted-example"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any) -> ChatResult:
        raise NotImplementedError("async only")

    async def _agenerate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                         **kw: Any) -> ChatResult:
        done = {m.name: str(m.content) for m in messages if isinstance(m, ToolMessage)}
        if isinstance(messages[0], SystemMessage):  # the review node's summary
            label, reply = "model: summarize", AIMessage(content="Refund 30 EUR on order A-1 (damaged item).")
        elif "refund" in done:
            outcome = done["refund"]
            text = f"All set. {outcome}" if outcome.startswith("Refunded") else f"No refund for now. {outcome}"
            label, reply = "model: answer", AIMessage(content=text)
        elif done:
            label, reply = "model: decide", AIMessage(content="", tool_calls=[
                {"name": "refund", "args": {"order": "A-1", "amount": 30}, "id": "call_refund_a1"}])
        else:
            label, reply = "model: plan", AIMessage(content="", tool_calls=[
                {"name": "lookup_order", "args": {"order": "A-1"}, "id": "call_lookup_a1"},
                {"name": "lookup_order", "args": {"order": "A-2"}, "id": "call_lookup_a2"}])
        _log(label)
        await asyncio.sleep(0.8)  # thinking time: the demo kills the worker during "model: decide"
        return ChatResult(generations=[ChatGeneration(message=reply)])


model = durable_model(ScriptedModel(), name="example-support-model")


@tool
async def lookup_order(order: str) -> str:
    """Look up an order in the shop's database."""
    _log(f"tool: lookup_order {order}")
    return f"order {order}: 1 item, 30 EUR, delivered damaged" if order == "A-1" else f"order {order}: fine"


@tool
async def refund(order: str, amount: int) -> str:
    """Refund an order. The payment provider deduplicates on the idempotency key."""
    key = perdure.idempotency_key()
    _log(f"tool: refund {order}")
    ledger = Path(os.environ.get(EVENTS, ".perdure-example")) / "refunds.jsonl"
    seen = ledger.read_text().splitlines() if ledger.exists() else []
    if not any(json.loads(line)["key"] == key for line in seen):
        with open(ledger, "a") as f:
            f.write(json.dumps({"key": key, "order": order, "amount": amount}) + "\n")
    return f"Refunded {amount} EUR on {order}."


async def agent(state: MessagesState) -> dict[str, Any]:
    return {"messages": [await model.ainvoke(state["messages"])]}


def route(state: MessagesState) -> str:
    last = state["messages"][-1]
    if isinstance(last, AIMessage) and last.tool_calls:
        return "review" if any(c["name"] == "refund" for c in last.tool_calls) else "tools"
    return END


async def review(state: MessagesState) -> Command[Any]:
    """Money leaves the shop only with a human's approval (a perdure approval behind LangGraph's interrupt)."""
    last = state["messages"][-1]
    assert isinstance(last, AIMessage)
    summary = await model.ainvoke([SystemMessage(content="Summarize this refund for a reviewer."), last])
    decision = ask_approval("refund", {"summary": summary.content, "call": last.tool_calls[0]["args"]})
    if decision.approved:
        return Command(goto="tools")
    no = ToolMessage(content=f"The reviewer declined: {decision.comment}", name="refund",
                     tool_call_id=last.tool_calls[0]["id"])
    return Command(goto="agent", update={"messages": [no]})


builder = StateGraph(MessagesState)
builder.add_node("agent", agent)
builder.add_node("tools", DurableToolNode([lookup_order, refund]))
builder.add_node("review", review)
builder.add_edge(START, "agent")
builder.add_conditional_edges("agent", route, ["tools", "review", END])
builder.add_edge("tools", "agent")
graph = builder.compile()  # no checkpointer: perdure's journal is the durable record


@perdure.workflow(name="example.langgraph_support")
async def support(request: str) -> str:
    state = await run_graph(graph, {"messages": [HumanMessage(content=request)]})
    return str(state["messages"][-1].content)


# --- the demo: a worker, a SIGKILL, a second worker ---------------------------------------------------------
def _events(workdir: Path) -> list[dict[str, Any]]:
    path = workdir / "events.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def demo(url: str, workdir: Path, approve: bool) -> None:
    print(f"perdure + LangGraph on {url}\n")
    workers = DemoWorker(url, workdir, APP)
    try:
        async with perdure.Client(url) as client:
            print(f"started {await workers.start(1)}")
            run_id = await client.start("example.langgraph_support", run_id=f"refund-{int(time.time())}",
                                        request="My order A-1 arrived broken, can I get my money back?")
            print(f"started run {run_id}")

            async def deciding() -> bool:
                return any(e["call"] == "model: decide" for e in _events(workdir))

            await until(deciding, "the model's second call")
            await workers.kill()
            print("\n** SIGKILL: worker 1, while the model was deciding what to do **\n")
            done = [r for r in await client.steps(run_id) if r.status.value == "COMPLETED"]
            print("journal after the crash: " + ", ".join(r.name for r in done))
            print(f"started {await workers.start(2)} -- it replays the journal and goes on\n")

            async def pending() -> Any:
                info = await client.status(run_id)
                return info if info.pending_approval else None

            info = await until(pending, "the approval")
            p = info.pending_approval
            print(f"run is {info.status.value}: approval {p.approval_id!r} on {json.dumps(p.payload)}")
            verb = "approve" if approve else "reject"
            print(f"deciding as a reviewer would with: perdure {verb} {run_id} {p.approval_id} --by reviewer\n")
            if approve:
                await client.approve(run_id, p.approval_id, by="reviewer", digest=p.digest)
            else:
                await client.reject(run_id, p.approval_id, by="reviewer", comment="needs a photo first")
            answer = await client.result(run_id, timeout=120)
            records = await client.steps(run_id)
    finally:
        await workers.stop()
    print(f"the agent answered: {answer!r}\n")
    report(records, workdir)


def _content(record: perdure.StepRecord) -> str:
    """What a journal record holds, in a few words."""
    out = record.output or {}
    if record.kind.value == "approval":
        return f"{'approved' if out.get('approved') else 'rejected'} by {out.get('by')}"
    message = out.get("message", {}).get("data", {})
    calls = message.get("tool_calls") or []
    if calls:
        return "calls " + ", ".join(f"{c['name']}({', '.join(map(str, c['args'].values()))})" for c in calls)
    return repr(message.get("content", ""))[:60]


def report(records: list[perdure.StepRecord], workdir: Path) -> None:
    print(f"{'pos':>3}  {'journal record':<48} content")
    for r in records:
        print(f"{r.position:>3}  {r.kind.value + ' ' + r.name:<48} {_content(r)}")
    runs: dict[str, list[str]] = {}
    for e in _events(workdir):
        runs.setdefault(e["call"], []).append(f"worker {e['worker']}")
    print(f"\n{'call':<26} {'executed by':<22} ")
    for call, where in runs.items():
        note = "again: it was in flight at the kill" if len(where) > 1 else "once"
        print(f"{call:<26} {', '.join(where):<22} {note}")
    ledger = workdir / "refunds.jsonl"
    refunds = len(ledger.read_text().splitlines()) if ledger.exists() else 0
    print(f"\nrefunds at the payment provider: {refunds}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perdure.examples.langgraph_agent", description=__doc__.split("\n")[0])
    parser.add_argument("--engine", default=None,
                        help="memory, dbos+sqlite, dbos+postgresql, temporal or restate (a throwaway local engine); "
                        "default: dbos+sqlite if DBOS is installed, else memory")
    parser.add_argument("--reject", action="store_true", help="the reviewer rejects the refund")
    args = parser.parse_args(argv)
    import importlib.util

    from perdure.core.config import backend_class

    engine = args.engine or ("dbos+sqlite" if importlib.util.find_spec("dbos") else "memory")
    workdir = Path(tempfile.mkdtemp(prefix="perdure-lg-example-"))
    server = None
    if engine == "memory":
        url = "memory://example"
    else:
        server = backend_class(engine).dev_server(engine, workdir / "engine")
        assert server is not None, f"no local dev server for {engine}"
        url = server.start()
        os.environ.update(server.worker_env())
    try:
        asyncio.run(demo(url, workdir, approve=not args.reject))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

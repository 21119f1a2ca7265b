"""An agent-shaped workflow for ``perdure demo``: a scripted model, tools, and a human approval.

Every step body appends a line to ``$PERDURE_EXAMPLE_DIR/events.log`` naming the process that ran it, so
the demo can show which steps ran in which worker and which were replayed from the journal.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import perdure


def _log(event: str, **data: Any) -> None:
    folder = Path(os.environ.get("PERDURE_EXAMPLE_DIR", ".perdure"))
    folder.mkdir(parents=True, exist_ok=True)
    worker = os.environ.get("PERDURE_EXAMPLE_WORKER", str(os.getpid()))
    line = json.dumps({"event": event, "worker": worker, "pid": os.getpid(), "t": time.time(), **data})
    with open(folder / "events.log", "a") as f:
        f.write(line + "\n")


@perdure.step(name="demo.model")
async def model(prompt: str, turn: int) -> dict[str, Any]:
    """A scripted "LLM": the reply depends only on the input, like a real model on replay."""
    _log("ran", step=f"model (turn {turn})")
    await asyncio.sleep(0.6)  # thinking time: the demo kills the worker while a model call is in flight
    if turn == 1:
        return {"tool": "search", "args": {"query": prompt}}
    if turn == 2:
        return {"draft": f"Durable agents survive crashes: {prompt!r} -- 3 sources agree."}
    return {"final": "Published the post and filed the receipt."}


@perdure.tool(name="demo.search", description="Search the knowledge base.")
async def search(query: str) -> list[str]:
    _log("ran", step="search")
    return [f"{query}: source {i}" for i in range(1, 4)]


@perdure.tool(name="demo.publish", description="Publish a post (idempotent on the tool's key).")
async def publish(text: str) -> str:
    key = perdure.idempotency_key()
    _log("ran", step="publish", key=key)
    outbox = Path(os.environ.get("PERDURE_EXAMPLE_DIR", ".perdure")) / "outbox.jsonl"
    seen = outbox.read_text().splitlines() if outbox.exists() else []
    if not any(json.loads(line)["key"] == key for line in seen):  # the external system deduplicates
        with open(outbox, "a") as f:
            f.write(json.dumps({"key": key, "text": text}) + "\n")
    return f"post-{key[-8:]}"


@perdure.workflow(name="demo.research_agent")
async def research_agent(topic: str) -> dict[str, Any]:
    """Plan with the model, call a tool, draft, ask a human, publish, summarize."""
    plan = await model(topic, 1)
    sources = await search(**plan["args"])
    draft = await model(f"{topic} ({len(sources)} sources)", 2)
    decision = await perdure.approval("publish", {"draft": draft["draft"]}, timeout=3600)
    if not decision.approved:
        return {"published": False, "reason": decision.comment}
    post_id = await publish(draft["draft"])
    summary = await model(post_id, 3)
    return {"published": True, "post": post_id, "summary": summary["final"], "approved_by": decision.by}

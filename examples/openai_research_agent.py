"""A research agent built with the OpenAI Agents SDK, made durable by perdure -- with a crash in the middle.

    python -m perdure.examples.openai_research_agent            # scripted model, no network
    OPENAI_API_KEY=sk-... python -m perdure.examples.openai_research_agent     # a real model
    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=x OPENAI_MODEL=my-model python -m ...

The agent is a plain ``agents.Agent``: two search tools the model calls in parallel, and a ``publish``
tool marked ``needs_approval=True``. The workflow runs it with ``DurableRunner.run``. The script

1. starts a worker process and a run,
2. SIGKILLs the worker while the searches are in flight,
3. starts a second worker, which replays the journal (the recorded model call is not repeated) and
   re-runs only the calls that were in flight,
4. approves the publish call, as ``perdure approve RUN_ID publish-N`` would, and prints the result and
   which process ran each model and tool call.

Backend: ``--backend URL``, else DBOS on a SQLite file when DBOS is installed (real worker processes,
real SIGKILL), else ``memory://`` (the crash is simulated in-process). With ``OPENAI_API_KEY`` set the
model is real (``OPENAI_MODEL``, default gpt-4.1-mini; with ``OPENAI_BASE_URL``, any OpenAI-compatible
server through the Chat Completions API) and the agent may choose other tools than the script does.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from agents import Agent, ModelSettings, function_tool
from agents.models.interface import Model

import perdure
from perdure.examples.workers import DemoWorker, until
from perdure.integrations.openai_agents import (
    DurableRunner,
    ScriptedModel,
    Turn,
    call,
    register,
    register_model,
)

APP = "perdure.examples.openai_research_agent"
CORPUS = {
    "durable execution": "Durable execution records each step; a crashed worker resumes from the journal.",
    "agent frameworks": "Agent frameworks loop model calls and tool calls until the model answers.",
}


# --- the world the agent acts on ------------------------------------------------------------------
def _workdir() -> Path:
    path = Path(os.environ.get("PERDURE_EXAMPLE_DIR", ".perdure-openai-example"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def log(what: str, **data: Any) -> None:
    """Append who ran what (the report at the end reads it)."""
    line = {"what": what, "worker": os.environ.get("PERDURE_EXAMPLE_WORKER", "?"), "t": time.time(), **data}
    with open(_workdir() / "events.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")


@function_tool
async def search(query: str) -> str:
    """Search the knowledge base for a topic."""
    log(f"search({query!r})")
    await asyncio.sleep(1.5)  # slow enough for the demo to kill the worker in the middle
    return CORPUS.get(query.lower(), f"No notes on {query!r}; durable agents resume after crashes.")


@function_tool(needs_approval=True)
async def publish(title: str, body: str) -> str:
    """Publish the report. Needs a human's approval; idempotent on perdure's key for this call."""
    key = perdure.idempotency_key()
    log("publish", key=key)
    outbox = _workdir() / "outbox.jsonl"
    sent = outbox.read_text().splitlines() if outbox.exists() else []
    if not any(json.loads(line)["key"] == key for line in sent):  # the outside system deduplicates
        with open(outbox, "a") as f:
            f.write(json.dumps({"key": key, "title": title, "body": body}) + "\n")
    return f"published {title!r} as post-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


# --- the model: scripted (from the input, never from call order) or real ---------------------------
def script(turn: Turn) -> Any:
    if not turn.called("search"):
        log("model: plan the searches")
        return [call("search", query="durable execution"), call("search", query="agent frameworks")]
    if not turn.called("publish"):
        log("model: draft the report")
        notes = " ".join(turn.outputs("search"))
        return call("publish", title=f"Notes on {turn.user_text.removeprefix('Research: ')}", body=notes)
    log("model: answer")
    return f"Done: {turn.outputs('publish')[-1]}."


class LoggedModel(Model):
    """A real model that notes in the event log which worker called it."""

    def __init__(self, inner: Model) -> None:
        self.inner = inner

    async def get_response(self, *args: Any, **kwargs: Any) -> Any:
        log("model (real)")
        return await self.inner.get_response(*args, **kwargs)

    def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.stream_response(*args, **kwargs)


def make_model() -> Model:
    """Called once per worker process, in the step that calls the model (never in the workflow)."""
    if not os.environ.get("OPENAI_API_KEY"):
        return ScriptedModel(script)
    from agents import OpenAIChatCompletionsModel, OpenAIResponsesModel
    from openai import AsyncOpenAI

    client, name = AsyncOpenAI(), os.environ.get("OPENAI_MODEL", "gpt-4.1-mini")
    if os.environ.get("OPENAI_BASE_URL"):  # OpenAI-compatible servers speak Chat Completions
        return LoggedModel(OpenAIChatCompletionsModel(model=name, openai_client=client))
    return LoggedModel(OpenAIResponsesModel(model=name, openai_client=client))


register_model("research-model", make_model)

researcher = register(Agent(
    name="researcher",
    instructions=(
        "You research a topic: call `search` for 'durable execution' and 'agent frameworks' (in parallel), "
        "then call `publish` once with a short title and a two-sentence body, then answer in one sentence."
    ),
    model="research-model",
    model_settings=ModelSettings(temperature=0),
    tools=[search, publish],
))


@perdure.workflow(name="examples.openai_research")
async def research(topic: str) -> dict[str, Any]:
    """The durable workflow: the unchanged agent, run by DurableRunner."""
    result = await DurableRunner.run(researcher, f"Research: {topic}", approval_timeout=3600)
    return {"answer": result.final_output, "turns": len(result.raw_responses)}


# --- the demo: crash, resume, approve ---------------------------------------------------------------
def events(workdir: Path) -> list[dict[str, Any]]:
    path = workdir / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def demo(url: str, workdir: Path, topic: str) -> dict[str, Any]:
    print(f"backend: {url}\nmodel:   {'real (' + os.environ.get('OPENAI_MODEL', 'gpt-4.1-mini') + ')' if os.environ.get('OPENAI_API_KEY') else 'scripted'}\n")
    worker = DemoWorker(url, workdir, APP)
    client = perdure.Client(url)
    try:
        print(f"started {await worker.start(1)}")
        run_id = await client.start(research, topic, run_id=f"research-{int(time.time())}")
        print(f"started run {run_id}")

        async def searching() -> bool:
            return any(e["what"].startswith("search") for e in events(workdir))

        async def finished_or_waiting() -> Any:
            info = await client.status(run_id)
            return info if info.status.terminal or info.pending_approval else None

        killed = False
        try:
            await until(searching, "a search call", timeout=60)
            await worker.kill()
            killed = True
            print("\n** worker 1 killed (SIGKILL) while the searches were running **\n")
        except TimeoutError:
            print("(the model called no search tool; nothing to interrupt)")
        if killed:
            print(f"started {await worker.start(2)}: it replays the journal and resumes the run")
        while True:
            info = await until(finished_or_waiting, "the approval or the end of the run")
            if info.status.terminal:
                break
            pending = info.pending_approval
            print(f"\nrun is WAITING for approval {pending.approval_id}: {json.dumps(pending.payload)[:200]}")
            print(f"approving, as `perdure approve {run_id} {pending.approval_id} --by reviewer` would")
            await client.approve(run_id, pending.approval_id, by="reviewer", digest=pending.digest)
            await until(functools.partial(_not_waiting, client, run_id, pending.approval_id), "the decision to arrive")
        result = await client.result(run_id, timeout=120)
        records = await client.steps(run_id)
    finally:
        await worker.stop()
        await client.aclose()
    print(f"\nresult: {json.dumps(result)}\n\njournal:")
    for r in records:
        print(f"  {r.position:>2}  {r.kind.value:<8} {r.name:<32} {r.status.value}")
    print("\nwho ran what (a call in flight at the kill runs again; nothing recorded does):")
    ran: dict[str, list[str]] = {}
    for e in events(workdir):
        ran.setdefault(e["what"], []).append(e["worker"])
    for what, workers in ran.items():
        again = "  <- in flight at the kill, ran again" if len(set(workers)) > 1 else ""
        print(f"  {what:<36} worker {', '.join(workers)}{again}")
    outbox = workdir / "outbox.jsonl"
    print(f"\nposts published: {len(outbox.read_text().splitlines()) if outbox.exists() else 0}")
    return {"run_id": run_id, "result": result, "records": [r.model_dump(mode="json") for r in records]}


async def _not_waiting(client: perdure.Client, run_id: str, approval_id: str) -> bool:
    info = await client.status(run_id)
    return info.pending_approval is None or info.pending_approval.approval_id != approval_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", help="backend URL (default: DBOS on SQLite if installed, else memory://)")
    parser.add_argument("--workdir", default=".perdure-openai-example", help="where logs and the database go")
    parser.add_argument("--topic", default="durable agents")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    for name in ("events.jsonl", "outbox.jsonl"):
        (workdir / name).unlink(missing_ok=True)
    os.environ["PERDURE_EXAMPLE_DIR"] = str(workdir)
    url = args.backend
    if url is None:
        url = (f"dbos+sqlite:///{workdir / 'example.sqlite'}" if importlib.util.find_spec("dbos") else "memory://example")
    asyncio.run(demo(url, workdir, args.topic))
    return 0


if __name__ == "__main__":
    sys.exit(main())

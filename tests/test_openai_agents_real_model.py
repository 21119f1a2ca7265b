"""The real-model path, offline: the SDK's own OpenAI Chat Completions model against a local
OpenAI-compatible server (stdlib HTTP, on 127.0.0.1), inside durable steps.

This is the code path a user with ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` takes: the model step builds
the SDK's real model, it makes HTTP calls, and the provider's response is recorded and restored. The
server counts requests, so a test can show that a crash does not repeat a completed model call.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("agents")

from agents import Agent, OpenAIChatCompletionsModel, function_tool  # noqa: E402
from openai import AsyncOpenAI  # noqa: E402

import perdure  # noqa: E402
from perdure.adapters.memory import engine_for  # noqa: E402
from perdure.integrations.openai_agents import DurableRunner, register_model  # noqa: E402


class CompatServer(ThreadingHTTPServer):
    """An OpenAI-compatible ``/v1/chat/completions`` whose answer depends only on the messages."""

    requests: list[dict[str, Any]]


class Handler(BaseHTTPRequestHandler):
    server: CompatServer

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.server.requests.append(body)
        offered = [t["function"]["name"] for t in body.get("tools", [])]
        done = [m for m in body["messages"] if m["role"] == "tool"]
        called = {c["function"]["name"] for m in body["messages"] for c in m.get("tool_calls") or []}
        n = sum(len(m.get("tool_calls") or []) for m in body["messages"])
        message: dict[str, Any] = {"role": "assistant", "content": None}
        if "search" in offered and "search" not in called:
            message["tool_calls"] = [
                {"id": f"call_{n + i}", "type": "function",
                 "function": {"name": "search", "arguments": json.dumps({"query": q})}}
                for i, q in enumerate(["durable execution", "agent frameworks"])
            ]
        elif "publish" in offered and "publish" not in called:
            message["tool_calls"] = [{"id": f"call_{n}", "type": "function", "function": {
                "name": "publish", "arguments": json.dumps({"title": "Notes", "body": done[0]["content"]})}}]
        else:
            message["content"] = "final: " + " | ".join(str(m["content"])[:40] for m in done)
        reply = {
            "id": f"chatcmpl-{len(body['messages'])}", "object": "chat.completion", "created": 0,
            "model": body["model"], "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def server() -> Iterator[CompatServer]:
    srv = CompatServer(("127.0.0.1", 0), Handler)
    srv.requests = []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


held: dict[str, Any] = {}
searches: list[str] = []


@function_tool
async def search(query: str) -> str:
    """Search the notes."""
    searches.append(query)
    release = held.get("event")
    if query == "agent frameworks" and isinstance(release, asyncio.Event):
        await release.wait()
    return f"notes on {query}"


compat = Agent(name="compat", model="t.oai.compat", tools=[search])


@perdure.workflow(name="t.oai.compat")
async def compat_flow() -> dict[str, Any]:
    result = await DurableRunner.run(compat, "research")
    return {"final": result.final_output, "usage": result.context_wrapper.usage.total_tokens}


def test_a_real_sdk_model_behind_an_openai_compatible_server_is_recorded_and_not_called_again(
    server: CompatServer,
) -> None:
    base = f"http://127.0.0.1:{server.server_address[1]}/v1"
    register_model("t.oai.compat", lambda: OpenAIChatCompletionsModel(
        model="compat-model", openai_client=AsyncOpenAI(base_url=base, api_key="test-key", max_retries=0)))
    server.requests.clear()

    async def main() -> Any:
        url = f"memory://compat-{uuid.uuid4().hex[:6]}"
        held["event"] = asyncio.Event()
        asyncio.get_running_loop().create_task(perdure.serve(url))
        client = perdure.Client(url)
        rid = await client.start(compat_flow)
        while searches.count("agent frameworks") < 1:
            await asyncio.sleep(0.01)
        engine_for(url.split("://", 1)[1]).crash_workers()  # one search recorded, the other in flight
        asyncio.get_running_loop().create_task(perdure.serve(url))
        while searches.count("agent frameworks") < 2:
            await asyncio.sleep(0.01)
        held["event"].set()  # type: ignore[union-attr]
        return await client.result(rid, timeout=30)

    out = asyncio.run(main())
    assert out["final"] == "final: notes on durable execution | notes on agent frameworks"
    assert len(server.requests) == 2  # the first model call was recorded before the crash: not repeated
    assert out["usage"] == 20
    assert searches.count("durable execution") == 1 and searches.count("agent frameworks") == 2


def test_the_example_runs_against_an_openai_compatible_server(server: CompatServer, tmp_path: Path) -> None:
    server.requests.clear()
    env = {
        **os.environ, "OPENAI_API_KEY": "test-key", "OPENAI_MODEL": "compat-model",
        "OPENAI_BASE_URL": f"http://127.0.0.1:{server.server_address[1]}/v1",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "perdure.examples.openai_research_agent", "--backend", "memory://example",
         "--workdir", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "model:   real (compat-model)" in proc.stdout
    assert "killed" in proc.stdout and "posts published: 1" in proc.stdout
    assert len(server.requests) == 3  # plan, publish, answer: none repeated by the crash

"""The agent-turn workflow benchmark workers serve (``--app bench_agent``, benchmarks/ on PYTHONPATH).

``perf.agent_turns`` runs one agent turn (model call -> tool call -> model call; scripted model, zero
latency) ``k`` times per contender, interleaved and timed inside the run: the non-durable
``Runner.run``, perdure's ``DurableRunner`` and, where it installs, the engine's own agent runner
(``PERDURE_BENCH_NATIVE=dbos|restate``). ``tool="async"`` gives every contender a tool over an
``async def``, ``tool="sync"`` one over a plain ``def`` (made durable each engine's documented way).

Timings taken inside a workflow are wall-clock reads, not durable values: they are only valid for a run
that is never replayed, which is how the benchmark runs them (Temporal with its workflow cache on).
"""

from __future__ import annotations

import os
import time
from typing import Any

from agents import Agent, Runner, function_tool, set_tracing_disabled

import perdure
from perdure.integrations.openai_agents import DurableRunner, ScriptedModel, Turn, call, register

set_tracing_disabled(True)  # perdure's runner disables tracing too: the contenders do the same work
NATIVE = os.environ.get("PERDURE_BENCH_NATIVE", "")
# The non-durable Runner.run runs inside the workflow; the SDK hands a plain-def tool to asyncio.to_thread,
# which Temporal's deterministic workflow loop refuses (perdure's tool runs in an activity): no plain
# contender for that tool on Temporal.
PLAIN_RUNS_SYNC_TOOLS = os.environ.get("PERDURE_BENCH_SCHEME") != "temporal"


TOOLS = {"async": "lookup", "sync": "lookup_sync"}  # tool kind -> the tool's name


def replies(tool: str) -> Any:
    def reply(turn: Turn) -> Any:
        """Call the tool once, then answer with its output (chosen from the input, so replays agree)."""
        outputs = turn.outputs()
        return f"answer: {outputs[0]}" if outputs else call(TOOLS[tool], city="Paris")

    return reply


async def lookup(city: str) -> str:
    """Look up the weather in a city."""
    return f"sunny in {city}"


def lookup_sync(city: str) -> str:
    """Look up the weather in a city."""
    return f"sunny in {city}"


agents = {kind: register(Agent(name=f"perf-agent-{kind}", instructions="Answer.", model=ScriptedModel(replies(kind)),
                               tools=[function_tool(fn)]))
          for kind, fn in (("async", lookup), ("sync", lookup_sync))}


def _native_dbos() -> Any:
    """DBOS's own runner (``dbos-openai-agents``): the model call is a DBOS step; a tool is durable when
    its body is a ``@DBOS.step``, as DBOS documents."""
    from dbos import DBOS
    from dbos_openai_agents import DBOSRunner

    @DBOS.step(name="perf.native_lookup")
    async def native_lookup(city: str) -> str:
        """Look up the weather in a city."""
        return f"sunny in {city}"

    @DBOS.step(name="perf.native_lookup_sync")
    def native_lookup_sync(city: str) -> str:
        """Look up the weather in a city."""
        return f"sunny in {city}"

    native = {kind: Agent(name=f"perf-agent-{kind}", instructions="Answer.", model=ScriptedModel(replies(kind)),
                          tools=[function_tool(fn, name_override=TOOLS[kind])])
              for kind, fn in (("async", native_lookup), ("sync", native_lookup_sync))}
    return lambda kind, text: DBOSRunner.run(native[kind], text)


def _native_restate() -> Any:
    """Restate's own runner (``restate.ext.openai.DurableRunner``): the model call is a ``ctx.run``; a tool
    is durable when its body runs in ``ctx.run``, as Restate documents.

    Its runner journals only models it resolves by *name* through its model provider (a ``Model``
    instance would bypass its journal), so the scripted model is offered under the prefix ``perf/``.
    """
    from agents.models.interface import ModelProvider
    from agents.models.multi_provider import MultiProviderMap
    from restate import RunOptions
    from restate.ext.openai import DurableRunner as RestateRunner
    from restate.ext.openai import restate_context, runner_wrapper

    class Scripted(ModelProvider):
        def get_model(self, model_name: str | None) -> Any:
            return ScriptedModel(replies(model_name or "async"))

    class ModelCalls(runner_wrapper.DurableModelCalls):
        def __init__(self, state: Any, llm_retry_opts: Any) -> None:
            super().__init__(state, llm_retry_opts)
            self.provider_map = MultiProviderMap()
            self.provider_map.add_provider("perf", Scripted())

    runner_wrapper.DurableModelCalls = ModelCalls  # type: ignore[misc]  # benchmark-only: see docstring

    async def body(city: str) -> str:
        return f"sunny in {city}"

    def body_sync(city: str) -> str:
        return f"sunny in {city}"

    async def native_lookup(city: str) -> str:
        """Look up the weather in a city."""
        return await restate_context().run_typed("lookup", body, RunOptions(type_hint=str), city)

    async def native_lookup_sync(city: str) -> str:
        """Look up the weather in a city (a Restate tool is async: its plain-def body runs in ctx.run)."""
        return await restate_context().run_typed("lookup", body_sync, RunOptions(type_hint=str), city)

    native = {kind: Agent(name=f"perf-agent-{kind}", instructions="Answer.", model=f"perf/{kind}",
                          tools=[function_tool(fn, name_override=TOOLS[kind])])
              for kind, fn in (("async", native_lookup), ("sync", native_lookup_sync))}
    return lambda kind, text: RestateRunner.run(native[kind], text)


_NATIVE_RUNNERS = {"dbos": _native_dbos, "restate": _native_restate}
native_run = _NATIVE_RUNNERS[NATIVE]() if NATIVE else None


@perdure.workflow(name="perf.agent_turns")
async def agent_turns(k: int, tool: str = "async") -> dict[str, list[float]]:
    """``k`` rounds; each round times one agent turn per contender, in rotating order."""
    agent = agents[tool]
    contenders: dict[str, Any] = {
        "plain": lambda text: Runner.run(agent, text),  # register() left the agent unchanged
        "perdure": lambda text: DurableRunner.run(agent, text),
    }
    if tool == "sync" and not PLAIN_RUNS_SYNC_TOOLS:
        del contenders["plain"]
    if native_run is not None:
        contenders["native"] = lambda text: native_run(tool, text)
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(k):
        for j in range(len(names)):
            name = names[(i + j) % len(names)]
            t0 = time.perf_counter()
            result = await contenders[name](f"weather {i}?")
            times[name].append(time.perf_counter() - t0)
            assert result.final_output == "answer: sunny in Paris", result.final_output
    return times

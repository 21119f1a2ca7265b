"""The agent-turn workflow benchmark workers serve (``--app bench_agent``, benchmarks/ on PYTHONPATH).

``perf.agent_turns`` runs one agent turn (model call -> tool call -> model call; scripted model, zero
latency) ``k`` times per contender, interleaved and timed inside the run: the non-durable
``Runner.run``, perdure's ``DurableRunner`` and, where it installs, the engine's own agent runner
(``PERDURE_BENCH_NATIVE=dbos|restate``).

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


def reply(turn: Turn) -> Any:
    """Call the tool once, then answer with its output (chosen from the input, so replays agree)."""
    outputs = turn.outputs()
    return f"answer: {outputs[0]}" if outputs else call("lookup", city="Paris")


async def lookup(city: str) -> str:
    """Look up the weather in a city."""
    return f"sunny in {city}"


MODEL = ScriptedModel(reply)
agent = register(Agent(name="perf-agent", instructions="Answer.", model=MODEL, tools=[function_tool(lookup)]))


def _native_dbos() -> Any:
    """DBOS's own runner (``dbos-openai-agents``): the model call is a DBOS step; a tool is durable when
    its body is a ``@DBOS.step``, as DBOS documents."""
    from dbos import DBOS
    from dbos_openai_agents import DBOSRunner

    @DBOS.step(name="perf.native_lookup")
    async def native_lookup(city: str) -> str:
        """Look up the weather in a city."""
        return f"sunny in {city}"

    tool = function_tool(native_lookup, name_override="lookup")
    native = Agent(name="perf-agent", instructions="Answer.", model=ScriptedModel(reply), tools=[tool])
    return lambda text: DBOSRunner.run(native, text)


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
            return ScriptedModel(reply)

    class ModelCalls(runner_wrapper.DurableModelCalls):
        def __init__(self, state: Any, llm_retry_opts: Any) -> None:
            super().__init__(state, llm_retry_opts)
            self.provider_map = MultiProviderMap()
            self.provider_map.add_provider("perf", Scripted())

    runner_wrapper.DurableModelCalls = ModelCalls  # type: ignore[misc]  # benchmark-only: see docstring

    async def body(city: str) -> str:
        return f"sunny in {city}"

    async def native_lookup(city: str) -> str:
        """Look up the weather in a city."""
        return await restate_context().run_typed("lookup", body, RunOptions(type_hint=str), city)

    native = Agent(name="perf-agent", instructions="Answer.", model="perf/scripted",
                   tools=[function_tool(native_lookup, name_override="lookup")])
    return lambda text: RestateRunner.run(native, text)


_NATIVE_RUNNERS = {"dbos": _native_dbos, "restate": _native_restate}
native_run = _NATIVE_RUNNERS[NATIVE]() if NATIVE else None


@perdure.workflow(name="perf.agent_turns")
async def agent_turns(k: int) -> dict[str, list[float]]:
    """``k`` rounds; each round times one agent turn per contender, in rotating order."""
    contenders: dict[str, Any] = {
        "plain": lambda text: Runner.run(agent, text),  # register() left the agent unchanged
        "perdure": lambda text: DurableRunner.run(agent, text),
    }
    if native_run is not None:
        contenders["native"] = native_run
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

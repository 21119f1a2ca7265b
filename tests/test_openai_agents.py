"""The OpenAI Agents SDK integration on the reference engine: serialization, replay, crashes, approvals.

Crashes here are the reference engine's in-process simulation (``crash_workers``); the same agent
scenarios with real SIGKILLed worker processes on DBOS, Restate and Temporal are in
``test_conformance_engines.py`` (the oai_* scenarios).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

pytest.importorskip("agents")

from agents import (  # noqa: E402
    Agent,
    ComputerTool,
    FunctionTool,
    Handoff,
    ModelSettings,
    RunConfig,
    RunContextWrapper,
    WebSearchTool,
    function_tool,
    handoff,
)
from agents.agent_output import AgentOutputSchema  # noqa: E402
from agents.items import ModelResponse  # noqa: E402
from agents.models.interface import ModelProvider, ModelTracing  # noqa: E402
from agents.retry import ModelRetrySettings  # noqa: E402
from agents.testing import assistant_message, function_call  # noqa: E402
from agents.tool import ToolOutputText  # noqa: E402
from agents.usage import Usage  # noqa: E402
from openai.types.responses import ResponseReasoningItem  # noqa: E402
from openai.types.responses.response_reasoning_item import Summary  # noqa: E402
from pydantic import BaseModel, ValidationError  # noqa: E402

import perdure  # noqa: E402
from perdure.adapters.memory import MemoryBackend, engine_for  # noqa: E402
from perdure.adapters.memory.engine import MemoryEngine, MemoryJournal  # noqa: E402
from perdure.core.errors import ConfigurationError, NotInWorkflowError, PermanentError  # noqa: E402
from perdure.core.types import RunStatus, StepCall  # noqa: E402
from perdure.integrations.openai_agents import (  # noqa: E402
    DurableRunner,
    ScriptedModel,
    Turn,
    call,
    register_model,
)
from perdure.integrations.openai_agents.model import (  # noqa: E402
    decode_request,
    dump_response,
    encode_request,
    load_response,
)
from perdure.integrations.openai_agents.scripted import build_response  # noqa: E402
from perdure.integrations.openai_agents.tools import decode_output, encode_output  # noqa: E402

# --- serialization --------------------------------------------------------------------------------


def test_model_response_round_trip_is_exact() -> None:
    response = ModelResponse(
        output=[
            ResponseReasoningItem(id="rs_1", summary=[Summary(text="think", type="summary_text")], type="reasoning"),
            function_call("search", {"q": "x", "n": [1, 2]}, call_id="call_a"),
            assistant_message("hello", item_id="msg_1"),
        ],
        usage=Usage(requests=1, input_tokens=10, output_tokens=5, total_tokens=15),
        response_id="resp_1",
        request_id="req_1",
    )
    data = dump_response(response)
    restored = load_response(perdure.core.codec.to_jsonable(data, where="test"))
    assert restored == response
    assert [type(i) for i in restored.output] == [type(i) for i in response.output]
    assert dump_response(restored) == data


def test_a_response_record_decodes_by_its_item_tags_and_a_broken_one_fails_typed() -> None:
    from perdure.integrations.openai_agents import model

    # This SDK's items carry a `type` tag: records decode through the tagged path, not the ~30-way union.
    assert model._TAGGED
    response = ModelResponse(output=[assistant_message("hello", item_id="msg_1")], usage=Usage(requests=1),
                             response_id="resp_1")
    data = perdure.core.codec.to_jsonable(dump_response(response), where="test")
    restored = load_response(data)
    assert restored == response and dump_response(restored) == data
    # Records the tagged path refuses go to the plain validator, which fails as pydantic does (typed).
    with pytest.raises(ValidationError):
        load_response({k: v for k, v in data.items() if k != "usage"})
    with pytest.raises(ValidationError):
        load_response({**data, "output": [{"type": "no_such_item"}]})


class Report(BaseModel):
    title: str
    score: int


def test_model_request_round_trip_keeps_what_the_real_model_needs() -> None:
    @function_tool
    def lookup(topic: str, depth: int = 1) -> str:
        """Look a topic up."""
        return topic

    writer = Agent(name="writer")
    settings = ModelSettings(temperature=0.2, tool_choice="auto", extra_body={"x": 1})
    schema = AgentOutputSchema(Report)
    h: Handoff[Any, Any] = handoff(writer)
    data = encode_request(
        "be brief", [{"role": "user", "content": "hi"}], settings, [lookup, WebSearchTool()], schema, [h],
        ModelTracing.DISABLED, None, "conv_1", None,
    )
    back = decode_request(perdure.core.codec.to_jsonable(data, where="test"))
    assert back["model_settings"] == settings
    tool, web = back["tools"]
    assert isinstance(tool, FunctionTool) and tool.params_json_schema == lookup.params_json_schema
    assert tool.description == "Look a topic up." and isinstance(web, WebSearchTool)
    assert back["handoffs"][0].tool_name == "transfer_to_writer"
    assert back["output_schema"].json_schema() == schema.json_schema()
    assert back["output_schema"].name() == schema.name() and back["conversation_id"] == "conv_1"


def test_tool_outputs_are_recorded_as_the_model_sees_them() -> None:
    @function_tool
    def plain() -> str:
        return ""

    class Thing(BaseModel):
        a: int

    for value, expected in [
        ("text", "text"),
        ({"a": [1, "b"]}, {"a": [1, "b"]}),
        (Thing(a=1), "a=1"),  # the SDK sends str(value) for objects it does not know
        ((1, 2), "(1, 2)"),
    ]:
        assert decode_output(plain, encode_output(plain, value)) == expected
    structured = ToolOutputText(text="hi")
    assert decode_output(plain, encode_output(plain, structured)) == structured
    assert decode_output(plain, encode_output(plain, [structured, structured])) == [structured, structured]


def test_the_scripted_model_replies_from_the_input_not_the_call_order() -> None:
    def reply(turn: Turn) -> Any:
        return "done" if turn.outputs("search") else [call("search", q="a"), call("search", q="b")]

    model = ScriptedModel(reply)

    async def ask(items: list[dict[str, Any]]) -> ModelResponse:
        return await model.get_response(
            None, items, ModelSettings(), [], None, [], ModelTracing.DISABLED,
            previous_response_id=None, conversation_id=None, prompt=None,
        )

    first = [{"role": "user", "content": "go"}]
    a, b = asyncio.run(ask(first)), asyncio.run(ask(first))
    assert a == b and [o.call_id for o in a.output] == ["call_0_search", "call_1_search"]
    later = first + [o.model_dump(exclude_unset=True) for o in a.output] + [
        {"type": "function_call_output", "call_id": "call_0_search", "output": "x"},
    ]
    assert asyncio.run(ask(later)).output[0].content[0].text == "done"
    turn = ScriptedModel.turn(None, later, [], [])
    assert build_response(turn, "done") == asyncio.run(ask(later))


# --- durable runs on the reference engine ---------------------------------------------------------
gates: dict[str, asyncio.Event] = {}
arrived: dict[str, int] = {}
ran: list[str] = []


async def gate(label: str) -> None:
    """Count a call; if a test armed ``label``, wait until it is released (or the worker 'dies')."""
    ran.append(label)
    arrived[label] = arrived.get(label, 0) + 1
    event = gates.get(label)
    if event is not None:
        await event.wait()


def on_memory(body: Callable[[perdure.Client, str], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        url = f"memory://oai-{uuid.uuid4().hex[:8]}"
        worker = asyncio.create_task(perdure.serve(url))
        try:
            return await body(perdure.Client(url), url)
        finally:
            worker.cancel()

    gates.clear()
    arrived.clear()
    ran.clear()
    return asyncio.run(main())


async def arrive(label: str, count: int = 1) -> None:
    for _ in range(4000):
        if arrived.get(label, 0) >= count:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{label} never reached")


async def restart(url: str) -> None:
    """Crash every worker of ``url`` (their tasks are cancelled where they stand) and start a new one."""
    engine_for(url.split("://", 1)[1]).crash_workers()
    asyncio.get_running_loop().create_task(perdure.serve(url))


@function_tool
async def fetch(source: str) -> str:
    """Fetch one source; the first source is the slowest, so calls finish in reverse order."""
    await gate(f"fetch-{source}")
    await asyncio.sleep({"a": 0.06, "b": 0.03, "c": 0.0}[source])
    return f"<{source}>"


async def _fetcher(turn: Turn) -> Any:
    if not turn.called("fetch"):
        await gate("model-plan")
        return [call("fetch", source=s) for s in "abc"]
    await gate("model-answer")
    return " ".join(turn.outputs("fetch"))


register_model("t.oai.fetcher", ScriptedModel(_fetcher))
fetcher = Agent(name="fetcher", model="t.oai.fetcher", tools=[fetch])


async def _fetch_with(agent: Agent[Any]) -> str:
    result = await DurableRunner.run(agent, "fetch everything")
    return str(result.final_output)


@perdure.workflow(name="t.oai.fetch")
async def fetch_all() -> str:
    return await _fetch_with(fetcher)


def test_parallel_tool_calls_replay_in_the_order_the_model_listed_them() -> None:
    async def body(client: perdure.Client, url: str) -> Any:
        gates["model-answer"] = asyncio.Event()
        rid = await client.start(fetch_all)
        await arrive("model-answer")
        await restart(url)  # all three fetches are recorded, the answer is in flight
        await arrive("model-answer", 2)
        gates["model-answer"].set()
        return await client.result(rid, timeout=10), await client.steps(rid)

    out, records = on_memory(body)
    assert out == "<a> <b> <c>"
    assert ran.count("model-plan") == 1 and sorted(ran).count("fetch-a") == 1 and ran.count("model-answer") == 2
    tools = [r.output["call_id"] for r in records if r.kind.value == "tool"]
    assert tools == ["call_0_fetch", "call_1_fetch", "call_2_fetch"]


def test_a_replay_that_pairs_a_tool_call_with_another_call_s_record_fails_loudly() -> None:
    async def body(client: perdure.Client, url: str) -> Any:
        gates["model-answer"] = asyncio.Event()
        rid = await client.start(fetch_all)
        await arrive("model-answer")
        run = engine_for(url.split("://", 1)[1]).runs[rid]
        first, second = run.journal[1].envelope, run.journal[2].envelope
        run.journal[1].envelope, run.journal[2].envelope = second, first  # as if replayed out of order
        await restart(url)
        gates["model-answer"].set()
        return await client.backend.wait(rid, 10)

    info = on_memory(body)
    assert info.status is RunStatus.FAILED
    assert info.error is not None and info.error.type == "NonDeterminismError", info.error


class _ElsewhereJournal(MemoryJournal):
    """Executes each step from its JSON alone, as an engine that sends the call to another process does
    (a Temporal activity): the body never sees the workflow's in-process arguments."""

    async def step(self, call: StepCall) -> str:
        return await super().step(
            StepCall(call.run_id, call.position, call.name, call.kind, call.args_json, call.idempotency_key)
        )


class _ElsewhereBackend(MemoryBackend):
    engine_class = type("ElsewhereEngine", (MemoryEngine,), {"journal_class": _ElsewhereJournal})


requests_seen: list[tuple[str, str]] = []


class _RecordingModel(ScriptedModel):
    """Notes what the real model was handed: the run's own tool objects, or stubs rebuilt from JSON."""

    async def get_response(self, system_instructions: Any, input: Any, model_settings: Any, tools: Any,
                           *args: Any, **kwargs: Any) -> ModelResponse:
        requests_seen.append((tools[0].on_invoke_tool.__qualname__.split(".")[0], type(model_settings).__name__))
        return await super().get_response(system_instructions, input, model_settings, tools, *args, **kwargs)


register_model("t.oai.recording", _RecordingModel(_fetcher))
recorded_fetcher = Agent(name="fetcher", model="t.oai.recording", tools=[fetch])


@perdure.workflow(name="t.oai.fetch_recorded")
async def fetch_recorded() -> str:
    return await _fetch_with(recorded_fetcher)


def test_the_model_step_gets_the_request_in_memory_and_encoded_only_where_the_call_leaves_the_process() -> None:
    async def run(backend: perdure.Backend) -> tuple[Any, list[Any]]:
        worker = asyncio.create_task(backend.serve())
        try:
            client = perdure.Client(backend)
            rid = await client.start(fetch_recorded)
            return await client.result(rid, timeout=10), await client.steps(rid)
        finally:
            worker.cancel()

    outcomes = []
    for backend_cls in (MemoryBackend, _ElsewhereBackend):
        requests_seen.clear()
        gates.clear()
        outcomes.append(asyncio.run(run(backend_cls(f"memory://oai-req-{uuid.uuid4().hex[:8]}"))))
        outcomes[-1] += (list(requests_seen),)
    (out, steps, seen), (out_elsewhere, steps_elsewhere, seen_elsewhere) = outcomes
    # In the workflow's process: the SDK's own request objects (the run's tool copies), nothing encoded.
    assert seen == [("DurableInvoker", "ModelSettings")] * 2
    # Sent elsewhere: the request travelled as JSON and was rebuilt (tool stubs that cannot be invoked).
    assert seen_elsewhere == [("_never", "ModelSettings")] * 2
    assert out == out_elsewhere == "<a> <b> <c>"
    assert [(r.name, r.output) for r in steps] == [(r.name, r.output) for r in steps_elsewhere]


live_responses: list[ModelResponse] = []


class _KeepingModel(ScriptedModel):
    """Keeps the response objects it returns, to compare with what the SDK is handed."""

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        response = await super().get_response(*args, **kwargs)
        live_responses.append(response)
        return response


register_model("t.oai.keeping", _KeepingModel(_fetcher))
keeping_fetcher = Agent(name="fetcher", model="t.oai.keeping", tools=[fetch])


@perdure.workflow(name="t.oai.handed")
async def handed_responses() -> list[list[bool]]:
    result = await DurableRunner.run(keeping_fetcher, "fetch everything")
    return [[handed is live, handed == live, type(handed.output[0]) is type(live.output[0])]
            for handed, live in zip(result.raw_responses, live_responses, strict=True)]


def test_the_sdk_is_handed_each_response_restored_from_its_record_on_the_first_run_too() -> None:
    async def body(client: perdure.Client, url: str) -> Any:
        return await client.result(await client.start(handed_responses), timeout=10)

    live_responses.clear()
    # Not the model's own objects (a replay could never hand those over), but equal ones of the same types.
    assert on_memory(body) == [[False, True, True], [False, True, True]]


flaky_budget: dict[str, int] = {}


@function_tool
async def charge(amount: int) -> str:
    """Charge a card."""
    key = perdure.idempotency_key()
    ran.append(f"charge:{key}")
    if amount < 0:
        raise PermanentError("negative amount")
    if flaky_budget.get("charge", 0) > 0:
        flaky_budget["charge"] -= 1
        raise ConnectionError("gateway unreachable")
    return f"charged {amount}"


def _charger(turn: Turn) -> Any:
    if not turn.called("charge"):
        return call("charge", amount=int(turn.user_text))
    return f"model saw: {turn.outputs('charge')[-1]}"


register_model("t.oai.charger", ScriptedModel(_charger))
charger = Agent(name="charger", model="t.oai.charger", tools=[charge])


@perdure.workflow(name="t.oai.charge")
async def charge_flow(amount: int) -> str:
    return str((await DurableRunner.run(charger, str(amount))).final_output)


def test_tool_failures_are_retried_by_perdure_then_formatted_for_the_model_like_the_sdk_does() -> None:
    async def body(client: perdure.Client, url: str) -> Any:
        flaky_budget["charge"] = 1
        ok = await client.result(await client.start(charge_flow, 5), timeout=30)
        rid = await client.start(charge_flow, -1)
        bad = await client.result(rid, timeout=30)
        return ok, bad, await client.steps(rid)

    ok, bad, records = on_memory(body)
    assert ok == "model saw: charged 5"
    assert bad == "model saw: An error occurred while running the tool. Please try again."  # the SDK's text
    tool = [r for r in records if r.kind.value == "tool"][0]
    assert tool.status.value == "FAILED" and tool.error is not None and tool.error.type == "PermanentError"
    keys = [r for r in ran if r.startswith("charge:")]
    assert len(keys) == 3 and keys[0] == keys[1] and keys[0].endswith(":call_0_charge")  # retry: same key


@perdure.workflow(name="t.oai.charge_twice")
async def charge_twice() -> list[str]:
    return [str((await DurableRunner.run(charger, str(n))).final_output) for n in (1, 2)]


def test_every_tool_call_of_a_run_keeps_its_own_key_even_when_call_ids_repeat() -> None:
    async def body(client: perdure.Client, url: str) -> Any:
        return await client.result(await client.start(charge_twice), timeout=10)

    assert on_memory(body) == ["model saw: charged 1", "model saw: charged 2"]
    keys = [r.split(":", 1)[1] for r in ran if r.startswith("charge:")]
    assert [k.split(":", 1)[1] for k in keys] == ["call_0_charge", "call_0_charge#2"]


def test_two_different_tools_with_one_name_are_refused() -> None:
    from perdure.integrations.openai_agents import register

    @function_tool(name_override="charge")
    def other(amount: int) -> str:
        return "not the same tool"

    with pytest.raises(perdure.RegistrationError):
        register(Agent(name="clash", tools=[other]))


def test_one_name_never_stands_for_two_tools_models_or_retry_policies() -> None:
    """Tools and models are found by name where the step runs: a second, different object under a name
    would make one run call the other's (a tenant's tool, a model with another endpoint)."""
    from perdure.integrations.openai_agents import register

    def make_balance(tenant: str) -> Any:
        async def balance() -> str:
            """The tenant's balance."""
            return f"{tenant}: 100"

        return function_tool(balance, name_override="t_oai_balance")

    register(Agent(name="acme", tools=[make_balance("acme")]))
    register(Agent(name="acme", tools=[make_balance("acme")]))  # the same tool built again: fine
    with pytest.raises(perdure.RegistrationError, match="made around different values"):
        register(Agent(name="globex", tools=[make_balance("globex")]))
    with pytest.raises(perdure.RegistrationError, match="already registered with"):
        register(Agent(name="acme", tools=[make_balance("acme")]),
                 tool_retry=perdure.RetryPolicy(max_attempts=9))

    def answer(text: str) -> Any:
        return lambda turn: text

    first = ScriptedModel(answer("A"))
    register_model("t.oai.writer", first)
    register_model("t.oai.writer", first)  # the same instance again: fine
    with pytest.raises(perdure.RegistrationError, match="two different models"):
        register_model("t.oai.writer", ScriptedModel(answer("B")))
    # An agent's unregistered model instance is registered under the agent's name: a second agent of that
    # name with another model is refused, pointing to register_model.
    register(Agent(name="t-oai-assistant", model=ScriptedModel(answer("A"))))
    with pytest.raises(perdure.RegistrationError, match="register_model"):
        register(Agent(name="t-oai-assistant", model=ScriptedModel(answer("B"))))


class Customer(BaseModel):
    name: str
    tier: int


@function_tool
async def greet(ctx: RunContextWrapper[Customer]) -> str:
    """Greet the customer of the run context."""
    c = ctx.context
    return f"{type(c).__name__}:{c.name}:{c.tier}"


def _greeter(turn: Turn) -> Any:
    return turn.outputs("greet")[-1] if turn.called("greet") else call("greet")


register_model("t.oai.greeter", ScriptedModel(_greeter))
greeter = Agent(name="greeter", model="t.oai.greeter", tools=[greet])


@perdure.workflow(name="t.oai.greet")
async def greet_flow() -> str:
    return str((await DurableRunner.run(greeter, "hi", context=Customer(name="ada", tier=2))).final_output)


def test_the_run_context_reaches_tool_bodies_with_its_type() -> None:
    async def body(client: perdure.Client, url: str) -> Any:
        return await client.result(await client.start(greet_flow), timeout=10)

    assert on_memory(body) == "Customer:ada:2"


def _local_customer() -> Any:
    class Customer(BaseModel):  # defined in a function: no name another process could import it by
        name: str

    return Customer(name="ada")


@perdure.workflow(name="t.oai.greet_local")
async def greet_local_flow() -> str:
    try:
        await DurableRunner.run(greeter, "hi", context=_local_customer())
    except perdure.SerializationError as exc:
        return str(exc)
    return "accepted"


def test_a_run_context_whose_class_cannot_be_imported_is_refused_before_any_call() -> None:
    async def body(client: perdure.Client, url: str) -> Any:
        rid = await client.start(greet_local_flow)
        return await client.result(rid, timeout=10), await client.steps(rid)

    message, records = on_memory(body)
    assert "cannot be imported by its name" in message and "_local_customer.<locals>.Customer" in message
    assert records == []  # refused before the model was called, not as a dict inside a retried tool


def _reporter(turn: Turn) -> Any:
    return '{"title": "t", "score": 3}'


register_model("t.oai.reporter", ScriptedModel(_reporter))
reporter = Agent(name="reporter", model="t.oai.reporter", output_type=Report)


@perdure.workflow(name="t.oai.report")
async def report_flow() -> dict[str, Any]:
    result = await DurableRunner.run(reporter, "report")
    return result.final_output_as(Report).model_dump()


def test_structured_final_output() -> None:
    async def body(client: perdure.Client, url: str) -> Any:
        return await client.result(await client.start(report_flow), timeout=10)

    assert on_memory(body) == {"title": "t", "score": 3}


@function_tool(needs_approval=True)
async def wire(amount: int) -> str:
    """Wire money."""
    return f"wired {amount}"


def _wirer(turn: Turn) -> Any:
    return turn.outputs("wire")[-1] if turn.called("wire") else call("wire", amount=10)


register_model("t.oai.wirer", ScriptedModel(_wirer))
wirer = Agent(name="wirer", model="t.oai.wirer", tools=[wire])


@perdure.workflow(name="t.oai.wire")
async def wire_flow() -> str:
    try:
        return str((await DurableRunner.run(wirer, "go", approval_timeout=0.2)).final_output)
    except perdure.ApprovalTimeoutError:
        return "nobody approved in time"


def test_an_approval_timeout_reaches_the_workflow() -> None:
    async def body(client: perdure.Client, url: str) -> Any:
        return await client.result(await client.start(wire_flow), timeout=10)

    assert on_memory(body) == "nobody approved in time"


@perdure.workflow(name="t.oai.stream")
async def stream_flow() -> dict[str, Any]:
    stream = DurableRunner.run_streamed(fetcher, "fetch everything")
    kinds: list[str] = []
    deltas = []
    async for event in stream.stream_events():
        kinds.append(event.type)
        if event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
            deltas.append(event.data.delta)
    assert stream.final_result is not None
    return {"final": stream.final_result.final_output, "deltas": deltas, "kinds": sorted(set(kinds))}


def test_streaming_records_each_model_call_whole_and_survives_a_crash() -> None:
    async def body(client: perdure.Client, url: str) -> Any:
        gates["model-answer"] = asyncio.Event()
        rid = await client.start(stream_flow)
        await arrive("model-answer")
        await restart(url)
        await arrive("model-answer", 2)
        gates["model-answer"].set()
        return await client.result(rid, timeout=10), await client.steps(rid)

    out, records = on_memory(body)
    assert out["final"] == "<a> <b> <c>" and out["deltas"] == ["<a> <b> <c>"]
    assert out["kinds"] == ["agent_updated_stream_event", "raw_response_event", "run_item_stream_event"]
    assert ran.count("model-plan") == 1 and ran.count("fetch-a") == 1 and ran.count("model-answer") == 2
    assert [r.name for r in records].count("openai_agents.model") == 2


@perdure.workflow(name="t.oai.misconfigured")
async def misconfigured(case: str) -> str:
    try:
        if case == "session":
            await DurableRunner.run(fetcher, "x", session=object())
        elif case == "computer":
            await DurableRunner.run(Agent(name="c", tools=[ComputerTool(computer=object())]), "x")  # type: ignore[arg-type]
        elif case == "provider":

            class Custom(ModelProvider):
                def get_model(self, model_name: str | None) -> Any:
                    raise AssertionError

            await DurableRunner.run(fetcher, "x", run_config=RunConfig(model_provider=Custom()))
        elif case == "unknown_setting":
            await DurableRunner.run(fetcher, "x", run_config={"workflow_name": "w", "not_a_setting": 1})
        elif case == "model_timeout":  # timed by the SDK in workflow code: a replay would not time out alike
            await DurableRunner.run(fetcher.clone(model_settings=ModelSettings(timeout=5.0)), "x")
        elif case == "run_config_model_timeout":
            await DurableRunner.run(fetcher, "x", run_config={"model_settings": ModelSettings(timeout=5.0)})
    except ConfigurationError as exc:
        if "timeout" in case:
            assert "AsyncOpenAI(timeout=...)" in str(exc), str(exc)
        if case == "unknown_setting":
            assert "not_a_setting" in str(exc) and "workflow_name" not in str(exc), str(exc)
        return type(exc).__name__
    return "accepted"


def test_configurations_that_cannot_be_durable_are_refused() -> None:
    async def body(client: perdure.Client, url: str) -> Any:
        return [await client.result(await client.start(misconfigured, c), timeout=10)
                for c in ("session", "computer", "provider", "unknown_setting", "model_timeout",
                          "run_config_model_timeout")]

    assert on_memory(body) == ["ConfigurationError"] * 6
    with pytest.raises(NotInWorkflowError):
        asyncio.run(DurableRunner.run(fetcher, "outside any workflow"))


register_model("t.oai.overriding", ScriptedModel(lambda turn: "from the run_config model"))


@perdure.workflow(name="t.oai.dict_config")
async def dict_config_flow() -> str:
    agent = Agent(name="plain", model="t.oai.reporter")
    return str((await DurableRunner.run(agent, "x", run_config={"model": "t.oai.overriding"})).final_output)


def test_a_run_config_given_as_a_dict_is_honoured_as_the_sdk_runner_honours_it() -> None:
    async def body(client: perdure.Client, url: str) -> Any:
        rid = await client.start(dict_config_flow)
        return await client.result(rid, timeout=10), await client.steps(rid)

    out, records = on_memory(body)
    assert out == "from the run_config model"
    assert [r.name for r in records] == ["openai_agents.model"]


# --- the agent conformance scenarios on the reference engine, with explicit expectations -----------
def test_agent_conformance_scenarios_prove_no_completed_call_is_repeated() -> None:
    from perdure.conformance.harness import MemoryHarness
    from perdure.conformance.runner import run_harness
    from perdure.conformance.scenarios import SCENARIOS

    chosen = [s for s in SCENARIOS if s.name.startswith("oai_")]
    assert len(chosen) == 8
    h = MemoryHarness()
    h.setup()
    try:
        results = asyncio.run(run_harness(h, chosen))
    finally:
        h.teardown()
    for name, (got, error, _) in results.items():
        assert error is None, f"{name}: {error}"
        assert got["once"] is True, name
        assert got["run"]["status"] == "SUCCEEDED", name
    once = {"model-plan": 1, "lookup-durability": 1, "lookup-agents": 1, "model-draft": 1, "publish": 1,
            "model-handoff": 1, "model-write": 1}
    assert results["oai_agent_happy_path"][0]["run"]["calls"] == once
    assert results["oai_kill_during_model_call"][0]["run"]["calls"] == {**once, "model-draft": 2}
    assert results["oai_kill_during_tool_call"][0]["run"]["calls"] == {**once, "lookup-agents": 2}
    assert results["oai_kill_after_handoff"][0]["run"]["calls"] == {**once, "model-write": 2}
    streamed = results["oai_streamed_kill_during_model_call"][0]["run"]
    assert streamed["calls"] == {**once, "model-draft": 2}
    assert streamed["output"]["deltas"] == [streamed["output"]["final"]]
    assert "handoff_occured" in streamed["output"]["items"]
    effect = results["oai_kill_during_side_effect"][0]
    assert effect["run"]["calls"] == {**once, "publish": 2} and effect["run"]["effects"] == 1
    assert effect["distinct_keys"] == 1 and effect["key_is_call_id"] == ["call_2_publish"]
    waiting = results["oai_kill_while_waiting_for_approval"][0]
    assert waiting["second_decision"] == "ApprovalAlreadyDecidedError" and waiting["decided"] == [True]
    assert waiting["approval"]["payload"]["tool"] == "publish" and waiting["approval"]["approval_id"] == "publish-4"
    rejected = results["oai_reject"][0]["run"]
    assert "publish" not in rejected["calls"] and rejected["effects"] == 0
    assert rejected["output"]["final"].endswith("not approved: needs sources")
    assert results["oai_kill_after_handoff"][0]["run"]["output"]["last_agent"] == "writer"
    names = [s["name"] for s in results["oai_agent_happy_path"][0]["run"]["steps"]]
    assert names == [
        "openai_agents.model", "openai_agents.tool.lookup", "openai_agents.tool.lookup", "openai_agents.model",
        "publish", "openai_agents.tool.publish", "openai_agents.model", "openai_agents.model",
    ]


# --- tool timeouts and the errors the SDK handled -------------------------------------------------------
@function_tool(timeout=0.2, timeout_behavior="raise_exception", name_override="t_oai_slow_strict")
async def slow_strict() -> str:
    """Never answers in time."""
    await asyncio.sleep(30)
    return "never"


@function_tool(timeout=0.2, name_override="t_oai_slow_custom",
               timeout_error_function=lambda ctx, err: f"CUSTOM: {err.tool_name} gave up after {err.timeout_seconds}")
async def slow_custom() -> str:
    """Never answers in time."""
    await asyncio.sleep(30)
    return "never"


def _saw(tool: str) -> Any:
    return lambda turn: f"model saw: {turn.outputs(tool)[-1]}" if turn.called(tool) else call(tool)


slow_agents = {
    "strict": Agent(name="strict", model=ScriptedModel(_saw("t_oai_slow_strict")), tools=[slow_strict]),
    "custom": Agent(name="custom", model=ScriptedModel(_saw("t_oai_slow_custom")), tools=[slow_custom]),
}


@perdure.workflow(name="t.oai.slow")
async def slow_flow(which: str) -> str:
    try:
        return str((await DurableRunner.run(slow_agents[which], "go")).final_output)
    except Exception as exc:  # what the SDK's own Runner.run raises, for the workflow to see
        return f"raised {type(exc).__name__}: {exc}"


def test_tool_timeouts_behave_as_the_sdk_documents() -> None:
    async def body(client: perdure.Client, url: str) -> Any:
        out = {}
        for which in ("strict", "custom"):
            rid = await client.start(slow_flow, which)
            out[which] = (await client.result(rid, timeout=30),
                          [(r.status.value, r.attempts) for r in await client.steps(rid) if r.kind.value == "tool"])
        return out

    out = on_memory(body)
    # raise_exception: the run fails with the SDK's ToolTimeoutError at once -- not retried (each retry
    # would wait the whole timeout again), not turned into text for the model.
    assert out["strict"] == ("raised ToolTimeoutError: Tool 't_oai_slow_strict' timed out after 0.2 seconds.",
                             [("FAILED", 1)])
    # The tool's timeout_error_function words what the model sees, as in the SDK.
    assert out["custom"] == ("model saw: CUSTOM: t_oai_slow_custom gave up after 0.2", [("COMPLETED", 1)])


model_calls = {"n": 0}


def _hiccup_once(turn: Turn) -> Any:
    model_calls["n"] += 1
    if model_calls["n"] == 1:
        raise PermanentError("provider hiccup")
    return "done" if turn.called("t_oai_noop") else call("t_oai_noop")  # a second turn: over max_turns=1


@function_tool(name_override="t_oai_noop")
def noop() -> str:
    """Nothing."""
    return "ok"


hiccup = Agent(name="hiccup", model=ScriptedModel(_hiccup_once), tools=[noop],
               model_settings=ModelSettings(retry=ModelRetrySettings(max_retries=2, policy=lambda ctx: True)))


@perdure.workflow(name="t.oai.hiccup")
async def hiccup_flow() -> str:
    try:
        await DurableRunner.run(hiccup, "go", max_turns=1)
    except Exception as exc:
        return type(exc).__name__
    return "no error"


def test_an_error_the_sdk_handled_is_not_raised_in_place_of_a_later_one() -> None:
    """The model step fails once for good and the SDK's own model retry succeeds; the run then ends with
    the SDK's MaxTurnsExceeded, which is what the workflow sees (not the handled StepFailedError)."""

    async def body(client: perdure.Client, url: str) -> Any:
        model_calls["n"] = 0
        return await client.result(await client.start(hiccup_flow), timeout=30)

    assert on_memory(body) == "MaxTurnsExceeded"

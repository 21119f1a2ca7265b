"""How recorded values are decoded: as JSON text under their annotation, once, the same way every time.

* Decoding validates the JSON text in pydantic's JSON mode, so a strict model's ``datetime`` (an ISO
  string in JSON) decodes -- it used to be parsed first and validated as Python data, which refused it.
* ``Annotated`` constraints (``Field(gt=0)``) hold on step arguments and outputs.
* A body that runs in the workflow's process hands the workflow its output decoded from the envelope it
  made (``StepCall.ran``): equal, of the same types, to what decoding the journal's text gives, and never
  the body's own object; an engine that returns other text gets that text decoded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import pydantic_core
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field

import perdure
from perdure.core.codec import NOT_DECODED, CallCodec
from perdure.core.context import _run
from perdure.core.runtime import Journal, RunContext, execute_step
from perdure.core.types import ApprovalRequest, StepCall


class Stamp(BaseModel):
    model_config = ConfigDict(strict=True)
    at: dt.datetime
    n: int


AT = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


@perdure.step(name="decoding.stamp")
async def stamp(n: int) -> Stamp:
    return Stamp(at=AT, n=n)


@perdure.step(name="decoding.echo_stamp")
async def echo_stamp(s: Stamp) -> Stamp:
    return s


@perdure.step(name="decoding.positive")
async def positive(x: Annotated[int, Field(gt=0)]) -> int:
    return x


@perdure.step(name="decoding.claims_positive")
async def claims_positive(x: int) -> Annotated[int, Field(gt=0)]:
    return x


SHARED = {"items": [1, 2]}


@perdure.step(name="decoding.shared")
async def shared() -> dict[str, Any]:
    return SHARED


@perdure.workflow(name="decoding.strict")
async def strict_flow() -> Stamp:
    first = await stamp(1)
    return await echo_stamp(first)  # a model argument: encoded, then decoded for the body


@perdure.workflow(name="decoding.constraints")
async def constraints_flow(x: int) -> list[str]:
    out = []
    for call in (positive, claims_positive):
        try:
            out.append(str(await call(x)))
        except perdure.SerializationError as exc:
            out.append(str(exc).splitlines()[0])
    return out


@perdure.workflow(name="decoding.isolated")
async def isolated_flow() -> dict[str, Any]:
    got = await shared()
    got["items"].append(3)  # the workflow's value is its own: the body's object is untouched
    return got


def on_memory(body: Callable[[perdure.Client], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        url = f"memory://dec-{uuid.uuid4().hex[:8]}"
        ready = asyncio.Event()
        worker = asyncio.create_task(perdure.serve(url, ready=ready.set))
        await ready.wait()
        try:
            return await body(perdure.Client(url))
        finally:
            worker.cancel()

    return asyncio.run(main())


def test_a_strict_model_with_a_datetime_round_trips_as_output_argument_and_workflow_result() -> None:
    async def body(client: perdure.Client) -> Any:
        return await client.result(await client.start(strict_flow), timeout=10)

    out = on_memory(body)
    assert out == Stamp(at=AT, n=1) and type(out) is Stamp


def test_annotated_constraints_hold_for_arguments_and_outputs() -> None:
    async def body(client: perdure.Client) -> Any:
        return [await client.result(await client.start(constraints_flow, x), timeout=10) for x in (5, -1)]

    ok, bad = on_memory(body)
    assert ok == ["5", "5"]
    assert bad[0].startswith("cannot decode argument 'x' of step 'decoding.positive': 1 validation error")
    assert bad[1].startswith("cannot decode output of step 'decoding.claims_positive' as typing.Annotated[int")


def test_the_workflow_never_gets_the_body_s_own_object() -> None:
    async def body(client: perdure.Client) -> Any:
        return await client.result(await client.start(isolated_flow), timeout=10)

    assert on_memory(body) == {"items": [1, 2, 3]}
    assert SHARED == {"items": [1, 2]}


# --- StepCall.ran against the journal's own text --------------------------------------------------------


class _Journal(Journal):
    """Runs each step in this process; ``rewrite`` turns the envelope into the text the engine returns."""

    def __init__(self, rewrite: Callable[[str], str] = lambda text: text) -> None:
        self.rewrite = rewrite
        self.calls: list[StepCall] = []

    async def step(self, call: StepCall) -> str:
        self.calls.append(call)
        return self.rewrite(await execute_step(call))

    async def approval(self, request: ApprovalRequest) -> str:
        raise NotImplementedError

    async def sleep(self, position: int, seconds: float) -> str:
        raise NotImplementedError


def _in_run(journal: Journal, steps: Callable[[], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        token = _run.set(RunContext("run-1", journal))
        try:
            return await steps()
        finally:
            _run.reset(token)

    return asyncio.run(main())


def test_an_in_process_call_hands_over_its_decoded_output_and_other_text_is_decoded_itself() -> None:
    same, reformatted = _Journal(), _Journal(lambda text: pydantic_core.to_json(pydantic_core.from_json(text),
                                                                                indent=2).decode())
    a = _in_run(same, lambda: stamp(7))
    b = _in_run(reformatted, lambda: stamp(7))
    assert a == b == Stamp(at=AT, n=7)
    (call,) = same.calls
    assert call.in_process and call.ran is not None and call.ran[1] is a  # handed over, not decoded again
    assert reformatted.calls[0].ran is not None and reformatted.calls[0].ran[1] is not b  # decoded from its text


def test_a_call_rebuilt_elsewhere_does_not_decode_its_output_in_the_body() -> None:
    class Elsewhere(_Journal):
        async def step(self, call: StepCall) -> str:
            rebuilt = StepCall(call.run_id, call.position, call.name, call.kind, call.args_json, call.idempotency_key)
            self.calls.append(rebuilt)
            return await execute_step(rebuilt)

    journal = Elsewhere()
    assert _in_run(journal, lambda: stamp(2)) == Stamp(at=AT, n=2)
    assert not journal.calls[0].in_process and journal.calls[0].ran is None


# --- property: the in-process decode and the journal's decode agree ---------------------------------------


def f_any(a):  # type: ignore[no-untyped-def]  # unannotated: plain JSON
    return a


def f_stamp() -> Stamp | None:
    return None


def f_list() -> list[float | int]:
    return []


def f_tuple() -> tuple[int, str] | dict[str, int]:
    return {}


CODECS = [CallCodec(f, label=f.__name__) for f in (f_any, f_stamp, f_list, f_tuple)]
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text()),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(codec=st.sampled_from(CODECS), value=json_values)
def test_decoding_the_output_and_decoding_the_envelope_agree(codec: CallCodec, value: Any) -> None:
    output = codec.encode_result(value)
    envelope = f'{{"name":"s","kind":"step","ok":true,"output":{output},"error":null,"attempts":1}}'
    try:
        direct = codec.decode_result(output)
    except perdure.SerializationError:
        assert codec.decode_ok_envelope(envelope, "s", "step") is NOT_DECODED
        return
    via_envelope = codec.decode_ok_envelope(envelope, "s", "step")
    assert direct == via_envelope and type(direct) is type(via_envelope)
    assert codec.decode_ok_envelope(envelope, "other", "step") is NOT_DECODED


@pytest.mark.parametrize("text", [
    '{"name":"s","kind":"step","ok":false,"output":null,"error":{"type":"E","message":"m"},"attempts":1}',
    '{"name":"s","kind":"tool","ok":true,"output":1,"error":null,"attempts":1}',
    "not json",
])
def test_anything_but_a_decodable_success_of_this_step_is_left_to_the_slow_path(text: str) -> None:
    assert CallCodec(f_any, label="f").decode_ok_envelope(text, "s", "step") is NOT_DECODED

"""How recorded values are decoded: as JSON text under their annotation, once, the same way every time.

(What a workflow sees -- strict models, ``Annotated`` constraints, values that are its own -- is tested on
the reference engine in test_core_api.py.)

* A body that runs in the workflow's process hands the workflow its output decoded from the envelope it
  made (``StepCall.ran``): equal, of the same types, to what decoding the journal's text gives, and never
  the body's own object; an engine that returns other text gets that text decoded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import pydantic_core
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import perdure
from perdure.core.codec import NOT_DECODED, CallCodec
from perdure.core.context import _run
from perdure.core.runtime import Journal, RunContext, execute_step
from perdure.core.types import ApprovalRequest, StepCall


class Point(BaseModel):
    x: int
    y: float


@perdure.step(name="decoding.days")
async def days(n: int) -> list[dt.date]:
    return [dt.date(2026, 1, d) for d in range(1, n + 1)]


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
    a = _in_run(same, lambda: days(3))
    b = _in_run(reformatted, lambda: days(3))
    assert a == b == [dt.date(2026, 1, 1), dt.date(2026, 1, 2), dt.date(2026, 1, 3)]
    (call,) = same.calls
    assert call.in_process and call.ran is not None and call.ran[1] is a  # handed over, not decoded again
    assert reformatted.calls[0].ran is not None and reformatted.calls[0].ran[1] is not b  # decoded from its text


def test_a_call_rebuilt_elsewhere_hands_nothing_over_and_still_checks_its_output() -> None:
    class Elsewhere(_Journal):
        async def step(self, call: StepCall) -> str:
            rebuilt = StepCall(call.run_id, call.position, call.name, call.kind, call.args_json, call.idempotency_key)
            self.calls.append(rebuilt)
            return await execute_step(rebuilt)

    journal = Elsewhere()
    assert _in_run(journal, lambda: days(1)) == [dt.date(2026, 1, 1)]
    assert not journal.calls[0].in_process and journal.calls[0].ran is None
    # A body whose workflow is elsewhere (a Temporal activity) checks its output against the annotation
    # too: the failure is the step's, wherever it runs.
    with pytest.raises(perdure.SerializationError, match="does not match its return annotation list"):
        _in_run(Elsewhere(), lambda: wrong_days(1))


@perdure.step(name="decoding.wrong_days")
async def wrong_days(n: int) -> list[dt.date]:
    return [f"day {d}" for d in range(n)]  # type: ignore[misc]  # not dates


# --- property: the in-process decode and the journal's decode agree ---------------------------------------


def f_any(a):  # type: ignore[no-untyped-def]  # unannotated: plain JSON
    return a


def f_point() -> Point | None:
    return None


def f_list() -> list[float | int]:
    return []


def f_tuple() -> tuple[int, str] | dict[str, int]:
    return {}


CODECS = [CallCodec(f, label=f.__name__) for f in (f_any, f_point, f_list, f_tuple)]
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

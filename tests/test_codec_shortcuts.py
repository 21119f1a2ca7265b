"""The codec's two shortcuts: arguments and outputs handed over without their JSON round trip.

``CallCodec.passes_unchanged`` / ``result_passes_unchanged`` may only say yes where the round trip would
give back the very value, of the very type, and could not have failed (unserializable, over the payload
limit). The property tests check that against the round trip itself; test_core_api.py checks what a step
body and a workflow see on the reference engine, with and without the shortcut.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import perdure
from perdure.core.codec import MIN_MAX_PAYLOAD_BYTES, CallCodec
from perdure.core.context import _run
from perdure.core.runtime import Journal, RunContext, execute_step
from perdure.core.types import ApprovalRequest, StepCall

# --- property: a shortcut is only taken where the round trip is the identity -----------------------------


def f_any(a, b=None):  # type: ignore[no-untyped-def]  # unannotated: plain JSON
    return a


def f_scalars(n: int, x: float, s: str, flag: bool, opt: int | None = None) -> int:
    return n


def f_mixed(tags: list[str], when: str, n: int | str = 0) -> str:
    return when


CODECS = [CallCodec(f, label=f.__name__) for f in (f_any, f_scalars, f_mixed)]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=300),
    st.text(alphabet=st.characters(codec="ascii"), max_size=300),
)
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=5), scalars, max_size=3))


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


@settings(max_examples=400, deadline=None)
@given(codec=st.sampled_from(CODECS), args=st.lists(values, min_size=0, max_size=6))
def test_arguments_pass_unchanged_only_when_the_round_trip_gives_them_back(codec: CallCodec, args: list[Any]) -> None:
    if not codec.passes_unchanged(tuple(args), {}):
        return
    text = codec.encode_args(tuple(args), {})  # never fails, never near the smallest limit
    assert len(text.encode()) <= MIN_MAX_PAYLOAD_BYTES
    decoded, kwargs = codec.decode_args(text)
    assert kwargs == {} and len(decoded) == len(args)
    assert all(_same(d, a) for d, a in zip(decoded, args, strict=True)), (args, decoded)


@settings(max_examples=400, deadline=None)
@given(codec=st.sampled_from(CODECS), value=values)
def test_outputs_pass_unchanged_only_when_decoding_gives_them_back(codec: CallCodec, value: Any) -> None:
    try:
        text = codec.encode_result(value)
    except perdure.SerializationError:
        return  # a failed encode never reaches the shortcut
    if codec.result_passes_unchanged(value):
        assert _same(codec.decode_result(text), value)


@pytest.mark.parametrize(("args", "expected"), [
    ((3, 1.5, "a", True), True),
    ((3, 1.5, "a", True, None), True),
    ((3, 1.5, "a", True, 7), True),
    ((3, 2, "a", True), False),                  # int for a float: the round trip makes it 2.0
    ((True, 1.5, "a", True), False),             # bool for an int: validated, not handed over
    ((3, 1.5, "é", True), False),                # non-ASCII text takes the round trip
    ((3, 1.5, "a" * 200, True), False),          # could reach the smallest payload limit encoded
    ((3, float("nan"), "a", True), False),       # NaN does not compare equal to itself
    ((2**63, 1.5, "a", True), False),            # beyond the integers the size bound covers
    ((3, 1.5, "a"), False),                      # a required argument missing: the codec reports it
])
def test_passes_unchanged_cases(args: tuple[Any, ...], expected: bool) -> None:
    codec = CallCodec(f_scalars, label="f")
    assert codec.passes_unchanged(args, {}) is expected
    assert codec.passes_unchanged(args[:4], {"opt": 1}) is False  # keyword arguments: always the round trip


def test_containers_and_models_never_pass_unchanged() -> None:
    codec = CallCodec(f_mixed, label="f")
    assert not codec.passes_unchanged((["a"], "2026-01-01"), {})
    assert codec.result_passes_unchanged("x")
    assert not CallCodec(f_scalars, label="f").result_passes_unchanged(True)  # -> int: True would become 1


# --- what engines that run the body elsewhere still get -----------------------------------------------


@perdure.step(name="shortcut.scale")
async def scale(x: float, label: str, times: int = 2) -> float:
    return x * times


class _Capture(Journal):
    """Runs each step in this process, as DBOS, Restate and the reference engine do, keeping the calls."""

    def __init__(self) -> None:
        self.calls: list[StepCall] = []

    async def step(self, call: StepCall) -> str:
        self.calls.append(call)
        return await execute_step(call)

    async def approval(self, request: ApprovalRequest) -> str:
        raise NotImplementedError

    async def sleep(self, position: int, seconds: float) -> str:
        raise NotImplementedError


def test_shortcut_arguments_are_still_encoded_for_engines_that_send_the_call_elsewhere() -> None:
    journal = _Capture()

    async def main() -> list[Any]:
        token = _run.set(RunContext("run-1", journal))
        try:
            return [await scale(1.5, "a"), await scale(3, "b")]
        finally:
            _run.reset(token)

    assert asyncio.run(main()) == [3.0, 6.0]
    fast, slow = journal.calls
    assert fast.local == ((1.5, "a"), {}) and slow.local is None
    # What a Temporal activity would receive: the same JSON as the round trip's, made when first read.
    assert fast.args_json == '{"x":1.5,"label":"a"}' and slow.args_json == '{"x":3,"label":"b"}'
    assert fast.ran is not None and fast.ran[1] == 3.0  # the output decodes to itself: no decode needed

"""The core API on the reference engine: values, retries, approvals, and every bad input's typed error."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

import perdure
from perdure import (
    ApprovalAlreadyDecidedError,
    ApprovalMismatchError,
    ApprovalNotFoundError,
    InvalidArgumentError,
    NotInStepError,
    NotInWorkflowError,
    RegistrationError,
    ResultTimeoutError,
    RetryPolicy,
    RunFailedError,
    RunNotFoundError,
    RunStatus,
    SerializationError,
    SignatureMismatchError,
)


def on_memory(body: Callable[[perdure.Client], Awaitable[Any]]) -> Any:
    """Run ``body(client)`` with a worker serving a fresh memory:// engine."""

    async def main() -> Any:
        url = f"memory://t-{uuid.uuid4().hex[:8]}"
        ready = asyncio.Event()
        worker = asyncio.create_task(perdure.serve(url, ready=ready.set))
        await ready.wait()
        try:
            return await body(perdure.Client(url))
        finally:
            worker.cancel()

    return asyncio.run(main())


class Quote(BaseModel):
    symbol: str
    price: float


@dataclass
class Point:
    x: int
    y: int


@perdure.step(name="t.quote")
async def quote(symbol: str) -> Quote:
    return Quote(symbol=symbol, price=1.5)


@perdure.step(name="t.when")
def when(days: int) -> dt.datetime:  # a sync step: runs in a thread
    return dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=days)


@perdure.step(name="t.point")
async def point(p: Point, scale: int = 1) -> Point:
    return Point(p.x * scale, p.y * scale)


@perdure.workflow(name="t.typed")
async def typed(symbol: str) -> dict[str, Any]:
    q = await quote(symbol)
    w = await when(3)
    p = await point(Point(1, 2), scale=3)
    return {"quote_type": type(q).__name__, "price": q.price, "day": w.day, "tz": str(w.tzinfo), "p": [p.x, p.y],
            "uuid_v4": perdure.uuid4().version, "rand": 0 <= perdure.random() < 1}


def test_values_round_trip_through_the_codec_with_their_types() -> None:
    async def body(client: perdure.Client) -> Any:
        rid = await client.start(typed, "ACME")
        return await client.result(rid, timeout=10), await client.steps(rid)

    out, records = on_memory(body)
    assert out == {"quote_type": "Quote", "price": 1.5, "day": 4, "tz": "UTC", "p": [3, 6], "uuid_v4": 4, "rand": True}
    assert [r.output for r in records] == [{"symbol": "ACME", "price": 1.5}, "2026-01-04T00:00:00Z", {"x": 3, "y": 6}]


# Scalars skip the codec's round trip where it would give them back unchanged (test_codec_shortcuts.py);
# what bodies and workflows see must not show whether it was skipped.
seen: list[tuple[str, Any]] = []


@perdure.step(name="t.scale")
async def scale(x: float, label: str, times: int = 2) -> float:
    seen.append(("x", x))
    return x * times  # an int * int is an int: the -> float annotation makes it a float


@perdure.step(name="t.echo")
async def echo(value: Any) -> Any:
    seen.append(("value", value))
    return value


@perdure.workflow(name="t.shortcuts")
async def shortcuts() -> list[Any]:
    out = [await scale(1.5, "a"), await scale(3, "b"), await echo(7), await echo("x" * 900)]
    return [(type(v).__name__, v if not isinstance(v, str) else len(v)) for v in out]


def test_bodies_and_workflows_see_the_decoded_types_with_or_without_the_shortcut() -> None:
    seen.clear()

    async def body(client: perdure.Client) -> Any:
        rid = await client.start(shortcuts)
        return await client.result(rid, timeout=10), await client.steps(rid)

    out, records = on_memory(body)
    # scale(3, ...) takes the round trip (int under a float annotation): the body gets 3.0, not 3.
    assert [(k, type(v).__name__) for k, v in seen] == [("x", "float"), ("x", "float"), ("value", "int"),
                                                       ("value", "str")]
    # 6 from 3.0 * 2 is a float either way; the output shortcut never turns a float into an int.
    assert out == [["float", 3.0], ["float", 6.0], ["int", 7], ["str", 900]]
    assert [r.output for r in records][:3] == [3.0, 6.0, 7]


def test_a_workflow_parameter_cannot_take_the_name_client_start_reserves_for_the_run_id() -> None:
    async def order(run_id: str) -> str:
        return run_id

    # Registered, client.start(order, run_id="A-1") would silently name the run "A-1" and pass nothing.
    with pytest.raises(perdure.RegistrationError, match="parameter named 'run_id'.*perdure.run_id"):
        perdure.workflow(name="t.reserved")(order)
    from perdure.core.registry import workflows

    assert "t.reserved" not in workflows()


def test_one_step_name_cannot_stand_for_functions_a_factory_made_around_different_values() -> None:
    def make_fetch(tenant: str, limit: int = 10) -> Any:
        async def fetch() -> str:
            return f"{tenant}:{limit}"

        return perdure.step(name="t.fetch_for_tenant")(fetch)

    make_fetch("acme")
    make_fetch("acme")  # the same definition around the same values (a module imported twice): fine
    with pytest.raises(perdure.RegistrationError, match="made around different values"):
        make_fetch("globex")  # a worker finding the step by name would fetch acme's data for globex


def test_same_definition_tells_apart_what_a_name_would_confuse() -> None:
    import functools

    from perdure.core.registry import equivalent, same_definition

    def get(tenant: str, key: str) -> str:
        return f"{tenant}:{key}"

    assert same_definition(functools.partial(get, "acme"), functools.partial(get, "acme"))
    assert not same_definition(functools.partial(get, "acme"), functools.partial(get, "globex"))

    class Slotted:
        __slots__ = ("endpoint",)

        def __init__(self, endpoint: str) -> None:
            self.endpoint = endpoint

    assert equivalent(Slotted("a"), Slotted("a")) and not equivalent(Slotted("a"), Slotted("b"))
    assert equivalent(Quote(symbol="X", price=1), Quote(symbol="X", price=1))
    assert not equivalent(Quote(symbol="X", price=1), Quote(symbol="X", price=2))


@perdure.step(name="t.mistyped")
async def mistyped(calls: list[int]) -> int:
    calls.append(1)
    return "twelve"  # type: ignore[return-value]  # the bug under test


def test_a_step_output_that_does_not_fit_its_annotation_fails_the_step_not_the_later_read() -> None:
    @perdure.workflow(name="t.reads_mistyped")
    async def reads_mistyped() -> list[str]:
        try:
            await mistyped([])
        except SerializationError as exc:
            return [type(exc).__name__, str(exc)]
        return ["no error"]

    async def body(client: perdure.Client) -> Any:
        run_id = await client.start(reads_mistyped)
        return await client.result(run_id, timeout=10), await client.steps(run_id)

    (error_type, message), records = on_memory(body)
    assert error_type == "SerializationError"
    assert "output of step 't.mistyped' does not match its return annotation int: got str" in message
    # Recorded as the failure it is (once: permanent), never as a success no replay could read back.
    assert [(r.name, r.status.value, r.attempts, r.output) for r in records] == [("t.mistyped", "FAILED", 1, None)]
    assert records[0].error is not None and records[0].error.type == "SerializationError"


def test_a_workflow_result_that_does_not_fit_its_annotation_fails_the_run() -> None:
    @perdure.workflow(name="t.mistyped_result")
    async def mistyped_result() -> Quote:
        return {"symbol": "X"}  # type: ignore[return-value]  # no price

    @perdure.workflow(name="t.coerced_result")
    async def coerced_result() -> Quote:
        return {"symbol": "X", "price": 2}  # type: ignore[return-value]  # fits: read back as a Quote

    async def body(client: perdure.Client) -> Any:
        ok = await client.result(await client.start(coerced_result), timeout=10)
        with pytest.raises(RunFailedError) as failed:
            await client.result(await client.start(mistyped_result), timeout=10)
        return ok, failed.value

    ok, failed = on_memory(body)
    assert ok == Quote(symbol="X", price=2.0)
    assert failed.error_type == "SerializationError"
    assert "output of workflow 't.mistyped_result' does not match its return annotation Quote" in str(failed)


def test_arguments_over_the_payload_limit_still_fail_with_the_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERDURE_MAX_PAYLOAD_BYTES", "1024")

    @perdure.workflow(name="t.too_big")
    async def too_big() -> str:
        try:
            await echo("y" * 1100)
        except perdure.PayloadTooLargeError as exc:
            return type(exc).__name__
        return "no error"

    async def body(client: perdure.Client) -> Any:
        return await client.result(await client.start(too_big), timeout=10)

    assert on_memory(body) == "PayloadTooLargeError"


attempts_seen: list[int] = []


@perdure.tool(name="t.flaky", retry=RetryPolicy(max_attempts=4, initial_interval=0.01, backoff=2, max_interval=0.02,
                                                 non_retryable=(KeyError,)))
async def flaky(fail_times: int, kind: str = "transient") -> str:
    info = perdure.current_step()
    attempts_seen.append(info.attempt)
    if kind == "nonretryable":
        raise KeyError("missing")
    if info.attempt <= fail_times:
        raise TimeoutError(f"attempt {info.attempt}")
    return perdure.idempotency_key()


@perdure.workflow(name="t.retries")
async def retries(fail_times: int, kind: str = "transient") -> Any:
    try:
        return await flaky(fail_times, kind)
    except perdure.StepFailedError as exc:
        return [exc.error_type, exc.error_message, exc.attempts]


def test_retry_policy_retries_transient_and_stops_at_non_retryable() -> None:
    async def body(client: perdure.Client) -> Any:
        ok = await client.result(await client.start(retries, 2, run_id="r-ok"), timeout=10)
        out = await client.result(await client.start(retries, 9), timeout=10)
        nr = await client.result(await client.start(retries, 0, "nonretryable"), timeout=10)
        return ok, out, nr

    attempts_seen.clear()
    ok, exhausted, nonretryable = on_memory(body)
    assert ok == "r-ok:0"  # the idempotency key: run id and position, the same on every attempt
    assert exhausted == ["TimeoutError", "attempt 4", 4]
    assert nonretryable == ["KeyError", "'missing'", 1]
    assert attempts_seen == [1, 2, 3, 1, 2, 3, 4, 1]


def test_retry_policy_delays_and_validation() -> None:
    p = RetryPolicy(max_attempts=5, initial_interval=1, backoff=3, max_interval=5)
    assert [p.delay(n) for n in (1, 2, 3)] == [1, 3, 5]
    for bad in ({"max_attempts": 0}, {"backoff": 0.5}, {"initial_interval": -1}):
        with pytest.raises(RegistrationError):
            RetryPolicy(**bad)
    assert "PermanentError" in p.to_dict()["non_retryable"]


@perdure.workflow(name="t.approve")
async def needs_approval(item: str) -> Any:
    d = await perdure.approval("publish", {"item": item})
    return {"approved": d.approved, "by": d.by, "data": d.data}


def test_approval_errors_are_typed_and_nothing_is_lost() -> None:
    async def body(client: perdure.Client) -> Any:
        rid = await client.start(needs_approval, "post")
        while (info := await client.status(rid)).pending_approval is None:
            await asyncio.sleep(0.005)
        pending = info.pending_approval
        assert info.status is RunStatus.WAITING and pending.approval_id == "publish-0"
        assert pending.payload == {"item": "post"}
        with pytest.raises(RunNotFoundError):
            await client.approve("no-such-run", "publish-0")
        with pytest.raises(ApprovalNotFoundError, match="waits for 'publish-0'"):
            await client.approve(rid, "publish-7")
        with pytest.raises(ApprovalMismatchError):
            await client.approve(rid, "publish-0", digest="0" * 64)
        with pytest.raises(SerializationError):
            await client.approve(rid, "publish-0", data=object())
        await client.approve(rid, "publish-0", by="ann", data={"n": 1}, digest=pending.digest)
        with pytest.raises(ApprovalAlreadyDecidedError):
            await client.reject(rid, "publish-0")
        return await client.result(rid, timeout=10)

    assert on_memory(body) == {"approved": True, "by": "ann", "data": {"n": 1}}


@perdure.workflow(name="t.badapproval")
async def bad_approval(name: str, timeout: float | None) -> str:
    await perdure.approval(name, None, timeout=timeout)
    return "unreachable"


@pytest.mark.parametrize("name,timeout", [("", None), ("has space", None), ("ok", 0), ("ok", -1), ("ok", float("inf"))])
def test_bad_approval_arguments_fail_the_run_with_a_typed_error(name: str, timeout: float | None) -> None:
    async def body(client: perdure.Client) -> Any:
        rid = await client.start(bad_approval, name, timeout)
        with pytest.raises(RunFailedError) as err:
            await client.result(rid, timeout=10)
        return err.value.error_type

    assert on_memory(body) == "InvalidArgumentError"


@perdure.workflow(name="t.badsleep")
async def bad_sleep(seconds: float) -> str:
    await perdure.sleep(seconds)
    return "unreachable"


def test_an_endless_durable_sleep_fails_the_run_with_a_typed_error() -> None:
    async def body(client: perdure.Client) -> Any:
        with pytest.raises(RunFailedError) as err:
            await client.result(await client.start(bad_sleep, float("inf")), timeout=10)
        return err.value.error_type, str(err.value)

    error_type, message = on_memory(body)
    assert error_type == "InvalidArgumentError" and "finite" in message


def test_unserializable_start_arguments_start_nothing() -> None:
    async def body(client: perdure.Client) -> Any:
        with pytest.raises(SerializationError, match="arguments of workflow 't.approve'"):
            await client.start(needs_approval, object())
        # Arguments that do not fit the signature: typed, and still the TypeError a plain call raises.
        for args, kwargs in (((), {}), (("a", "b"), {}), (("a",), {"extra": 1})):
            with pytest.raises(SignatureMismatchError, match="t.approve") as err:
                await client.start(needs_approval, *args, **kwargs)
            assert isinstance(err.value, TypeError)
        # The wrong type is refused at start, naming the parameter, not when a worker takes the run.
        with pytest.raises(SerializationError, match="argument 'item'"):
            await client.start(needs_approval, 5)
        for bad_id in ("", "   ", "a\nb", "x" * 201):
            with pytest.raises(InvalidArgumentError, match="run_id"):
                await client.start(needs_approval, "a", run_id=bad_id)
        with pytest.raises(InvalidArgumentError, match="blank"):
            await client.start(" ", item="a")
        return await client.runs()

    assert on_memory(body) == []


@perdure.workflow(name="t.defaults")
async def with_default(x: int, times: int = 2) -> int:
    return x * times


def test_an_argument_no_parameter_takes_fails_the_run_naming_it() -> None:
    """A client that cannot see the workflow (a CLI without --app, another service) sends arguments by
    name unchecked: a misspelt one must not be dropped while the parameter's default silently applies."""

    async def body(client: perdure.Client) -> Any:
        await client.backend.start("t.defaults", '{"x": 3, "times": 5}', "spelt")
        assert await client.result("spelt", timeout=10) == 15
        await client.backend.start("t.defaults", '{"x": 3, "tims": 5}', "misspelt")
        with pytest.raises(RunFailedError) as err:
            await client.result("misspelt", timeout=10)
        return err.value.error_type, str(err.value)

    error_type, message = on_memory(body)
    assert error_type == "SerializationError" and "argument 'tims'" in message


def test_bad_client_arguments_are_refused_with_a_typed_error() -> None:
    async def body(client: perdure.Client) -> Any:
        rid = await client.start(needs_approval, "post")
        for timeout in (float("nan"), -1.0):  # NaN would wait forever
            with pytest.raises(InvalidArgumentError, match="timeout"):
                await client.result(rid, timeout=timeout)
        for limit in (0, -1, "3"):
            with pytest.raises(InvalidArgumentError, match="limit"):
                await client.runs(limit)  # type: ignore[arg-type]
        while (await client.status(rid)).pending_approval is None:
            await asyncio.sleep(0.01)
        for digest in ("deadbeef", ""):
            with pytest.raises(InvalidArgumentError, match="64 lowercase hex"):
                await client.approve(rid, "publish-0", digest=digest)
        await client.cancel(rid)
        return len(await client.runs(1))

    assert on_memory(body) == 1


def test_unregistered_workflow_fails_the_run_and_positional_args_need_registration() -> None:
    async def body(client: perdure.Client) -> Any:
        with pytest.raises(InvalidArgumentError, match="by keyword"):
            await client.start("nowhere.flow", 1)
        rid = await client.start("nowhere.flow", x=1)
        with pytest.raises(RunFailedError) as err:
            await client.result(rid, timeout=10)
        return err.value.error_type, err.value.message

    error_type, message = on_memory(body)
    assert error_type == "WorkflowNotFoundError" and "nowhere.flow" in message


def test_result_timeout_leaves_the_run_going() -> None:
    async def body(client: perdure.Client) -> Any:
        rid = await client.start(needs_approval, "slow")
        with pytest.raises(ResultTimeoutError):
            await client.result(rid, timeout=0.05)
        return (await client.status(rid)).status

    assert on_memory(body) in (RunStatus.RUNNING, RunStatus.WAITING)


def test_durable_operations_outside_a_workflow_raise() -> None:
    with pytest.raises(NotInWorkflowError, match="client.start"):
        asyncio.run(quote("X"))
    with pytest.raises(NotInWorkflowError):
        asyncio.run(perdure.approval("x", None))
    with pytest.raises(NotInWorkflowError):
        asyncio.run(perdure.now())
    with pytest.raises(NotInWorkflowError):
        perdure.uuid4()
    with pytest.raises(NotInStepError):
        perdure.idempotency_key()
    with pytest.raises(NotInWorkflowError):
        asyncio.run(typed("X"))


@perdure.step(name="t.nested")
async def nested() -> str:
    return await quote("inner")  # type: ignore[return-value]


@perdure.workflow(name="t.nests")
async def nests() -> str:
    return await nested()


def test_a_step_cannot_call_a_step() -> None:
    async def body(client: perdure.Client) -> Any:
        return await client.result(await client.start(nests), timeout=10)

    with pytest.raises(RunFailedError) as err:
        on_memory(body)
    assert "inside a step" in err.value.message


def test_registration_errors() -> None:
    with pytest.raises(RegistrationError, match="async"):
        perdure.workflow(lambda: None)

    def other() -> None: ...

    with pytest.raises(RegistrationError, match="two different steps"):
        perdure.step(name="t.quote")(other)
    with pytest.raises(RegistrationError, match="generator"):

        @perdure.step
        async def gen():  # type: ignore[no-untyped-def]
            yield 1

    with pytest.raises(RegistrationError, match="RetryPolicy"):
        perdure.step(retry={"max_attempts": 2})(other)  # type: ignore[arg-type]


def test_tool_metadata_for_agent_frameworks() -> None:
    @perdure.tool(name="t.search", description="Search the web.")
    async def search(query: str, limit: int = 5) -> list[str]:
        return []

    assert search.description == "Search the web."
    schema = search.parameters_schema
    assert schema["required"] == ["query"] and schema["properties"]["limit"]["default"] == 5


def test_payload_limit_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from perdure.core.codec import encode

    monkeypatch.setenv("PERDURE_MAX_PAYLOAD_BYTES", "2000")
    encode("x" * 1990, where="test value")
    with pytest.raises(perdure.PayloadTooLargeError, match="over the limit of 2000 bytes"):
        encode("x" * 2000, where="test value")  # 2002 bytes with the quotes
    monkeypatch.setenv("PERDURE_MAX_PAYLOAD_BYTES", "100")
    with pytest.raises(SerializationError, match="must be at least 1024"):
        encode("x" * 2000, where="test value")
    monkeypatch.setenv("PERDURE_MAX_PAYLOAD_BYTES", "lots")
    with pytest.raises(SerializationError, match="must be an integer"):
        encode("x" * 2000, where="test value")
    with pytest.raises(SerializationError, match="must be an integer"):  # found at start, before any value
        perdure.Client("memory://")


# --- decoding: JSON text under the annotation (strict models, Annotated constraints), never shared --------


class StrictStamp(BaseModel):
    model_config = ConfigDict(strict=True)
    at: dt.datetime
    n: int


STAMPED_AT = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


@perdure.step(name="t.decoding.stamp")
async def strict_stamp(n: int) -> StrictStamp:
    return StrictStamp(at=STAMPED_AT, n=n)


@perdure.step(name="t.decoding.echo_stamp")
async def echo_stamp(s: StrictStamp) -> StrictStamp:
    return s


@perdure.step(name="t.decoding.positive")
async def positive(x: Annotated[int, Field(gt=0)]) -> int:
    return x


@perdure.step(name="t.decoding.claims_positive")
async def claims_positive(x: int) -> Annotated[int, Field(gt=0)]:
    return x


SHARED = {"items": [1, 2]}


@perdure.step(name="t.decoding.shared")
async def shared() -> dict[str, Any]:
    return SHARED


@perdure.workflow(name="t.decoding.strict")
async def strict_flow() -> StrictStamp:
    first = await strict_stamp(1)
    return await echo_stamp(first)  # a model argument: encoded, then decoded for the body


@perdure.workflow(name="t.decoding.constraints")
async def constraints_flow(x: int) -> list[str]:
    out = []
    for call in (positive, claims_positive):
        try:
            out.append(str(await call(x)))
        except perdure.SerializationError as exc:
            out.append(str(exc).splitlines()[0])
    return out


@perdure.workflow(name="t.decoding.isolated")
async def isolated_flow() -> dict[str, Any]:
    got = await shared()
    got["items"].append(3)  # the workflow's value is its own: the body's object is untouched
    return got


def test_a_strict_model_with_a_datetime_round_trips_as_output_argument_and_workflow_result() -> None:
    async def body(client: perdure.Client) -> Any:
        return await client.result(await client.start(strict_flow), timeout=10)

    out = on_memory(body)
    assert out == StrictStamp(at=STAMPED_AT, n=1) and type(out) is StrictStamp


def test_annotated_constraints_hold_for_arguments_and_outputs() -> None:
    async def body(client: perdure.Client) -> Any:
        return [await client.result(await client.start(constraints_flow, x), timeout=10) for x in (5, -1)]

    ok, bad = on_memory(body)
    assert ok == ["5", "5"]
    assert bad[0].startswith("cannot decode argument 'x' of step 't.decoding.positive': 1 validation error")
    # The output breaking its constraint fails the step that returned it (a permanent SerializationError).
    assert bad[1].startswith("output of step 't.decoding.claims_positive' does not match its return annotation "
                             "Annotated[int")
    assert bad[1].endswith("got int (Input should be greater than 0)")


def test_the_workflow_never_gets_the_body_s_own_object() -> None:
    async def body(client: perdure.Client) -> Any:
        return await client.result(await client.start(isolated_flow), timeout=10)

    assert on_memory(body) == {"items": [1, 2, 3]}
    assert SHARED == {"items": [1, 2]}


# --- step timeout (the bound Temporal and Restate put on each attempt) --------------------------------
@perdure.step(name="core.sleepy", retry=perdure.RetryPolicy(max_attempts=2))
async def _sleepy(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@perdure.step(name="core.sleepy_sync", retry=perdure.RetryPolicy(max_attempts=2))
def _sleepy_sync(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


@perdure.step(name="core.own_timeout", retry=perdure.RetryPolicy(max_attempts=2, non_retryable=["StepTimeoutError"]))
async def _own_timeout() -> None:
    raise TimeoutError("the upstream API timed out")


def _call(step: Any, *args: Any) -> Any:
    from perdure.core.types import StepCall, StepKind

    return StepCall("run", 0, step.name, StepKind.STEP, step.codec.encode_args(args, {}), "run:0")


@pytest.mark.parametrize("step", [_sleepy, _sleepy_sync], ids=["async", "sync"])
def test_an_attempt_past_the_step_timeout_fails_with_step_timeout_error_under_the_retry_policy(step: Any) -> None:
    from perdure.core.runtime import execute_attempt

    async def main() -> Any:
        return (await execute_attempt(_call(step, 0.01), 1, timeout=5.0),
                await execute_attempt(_call(step, 0.5), 1, timeout=0.05),
                await execute_attempt(_call(step, 0.5), 2, timeout=0.05))

    ok, first, last = asyncio.run(main())
    assert ok.error is None and '"output":0.01' in ok.envelope
    assert first.error is not None and first.error.type == "StepTimeoutError" and first.retry
    assert f"step {step.name!r}: the attempt ran past the step timeout of 0.05 s" in first.error.message
    assert last.error is not None and not last.retry  # the policy's 2 attempts are spent


def test_a_timeout_error_raised_by_the_body_itself_is_its_own_not_the_step_timeout() -> None:
    from perdure.core.runtime import execute_attempt

    outcome = asyncio.run(execute_attempt(_call(_own_timeout), 1, timeout=5.0))
    assert outcome.error is not None and outcome.error.type == "TimeoutError"
    assert outcome.error.message == "the upstream API timed out" and outcome.retry  # non_retryable names the other

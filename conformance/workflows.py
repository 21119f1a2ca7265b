"""The workflows the conformance scenarios run. Worker processes import this module (``--app``).

Every step body records its call in the ledger and passes a checkpoint (a gate the suite may arm), so the
suite can hold a worker inside any step and kill it there. Names are explicit and stable: they appear in
the traces compared across engines.

``VARIANT`` selects a code version at import (``PERDURE_CONFORMANCE_VARIANT``): the nondeterminism
scenario restarts workers on ``reordered`` code, as a deploy between a crash and a restart would.
"""

from __future__ import annotations

import os
from typing import Any

import perdure
from perdure import (
    ApprovalTimeoutError,
    PayloadTooLargeError,
    PermanentError,
    RetryPolicy,
    SerializationError,
    StepFailedError,
)
from perdure.core.codec import max_payload_bytes

from .ledger import current_ledger

VARIANT = os.environ.get("PERDURE_CONFORMANCE_VARIANT", "base")
FAST_RETRY = RetryPolicy(max_attempts=3, initial_interval=0.05, backoff=1.0, max_interval=0.05)


async def pass_gate(label: str) -> None:
    """What every conformance step body (core and agent scenarios) does first: count the call in the
    ledger and pass its checkpoint, where the suite may hold it and kill the worker."""
    ledger = current_ledger()
    rid = perdure.run_id()
    ledger.record_call(label, rid, perdure.current_step().idempotency_key)
    await ledger.checkpoint(f"{rid}:{label}")


def pass_gate_sync(label: str) -> None:
    """:func:`pass_gate` for a sync step body (engines run it in a thread)."""
    ledger = current_ledger()
    rid = perdure.run_id()
    ledger.record_call(label, rid, perdure.current_step().idempotency_key)
    ledger.checkpoint_sync(f"{rid}:{label}")


@perdure.step(name="conf.a")
async def a(x: str) -> str:
    await pass_gate("a")
    return f"{x}>a"


@perdure.step(name="conf.b")
async def b(x: str) -> str:
    await pass_gate("b")
    return f"{x}>b"


@perdure.step(name="conf.c")
def c(x: str) -> str:
    """A sync body: every engine runs it in a thread (DBOS as a sync DBOS step), and a kill inside it
    must behave as inside an async one."""
    pass_gate_sync("c")
    return f"{x}>c"


@perdure.step(name="conf.d")
async def d(x: str) -> str:
    await pass_gate("d")
    return f"{x}>d"


@perdure.workflow(name="conf.pipeline")
async def pipeline(x: str) -> str:
    if VARIANT == "reordered":  # a deploy that swapped two steps
        return await c(await a(await b(x)))
    if VARIANT == "replaced":  # a deploy that replaced the second step
        return await c(await d(await a(x)))
    return await c(await b(await a(x)))


@perdure.tool(name="conf.charge", description="Charge a card through the deduplicating ledger.")
async def charge(amount: int) -> dict[str, Any]:
    """Apply the effect first, then pass the checkpoint: a kill there leaves an effect with no record."""
    ledger = current_ledger()
    rid, key = perdure.run_id(), perdure.idempotency_key()
    ledger.record_call("charge", rid, key)
    new = ledger.apply_effect(key, "charge", rid)
    await ledger.checkpoint(f"{rid}:charge")
    return {"amount": amount, "first_application": new}


@perdure.workflow(name="conf.payment")
async def payment(amount: int) -> dict[str, Any]:
    receipt = await charge(amount)
    await c("paid")
    return {"charged": receipt["amount"]}


@perdure.tool(name="conf.flaky_charge", retry=FAST_RETRY)
async def flaky_charge(amount: int) -> int:
    """Fails while its failure budget lasts, then passes its checkpoint and applies the effect once."""
    ledger = current_ledger()
    rid, key = perdure.run_id(), perdure.idempotency_key()
    ledger.record_call("flaky_charge", rid, key)
    if ledger.take_failure(f"{rid}:flaky_charge"):
        raise ConnectionError("payment gateway unreachable")
    await ledger.checkpoint(f"{rid}:flaky_charge")
    ledger.apply_effect(key, "flaky_charge", rid)
    return amount


@perdure.workflow(name="conf.flaky_payment")
async def flaky_payment(amount: int) -> int:
    return await flaky_charge(amount)


@perdure.step(name="conf.fragile", retry=FAST_RETRY)
async def fragile(mode: str) -> str:
    ledger = current_ledger()
    rid = perdure.run_id()
    ledger.record_call("fragile", rid)
    if mode == "permanent":
        raise PermanentError("card declined")
    if ledger.take_failure(f"{rid}:fragile"):
        raise ConnectionError(f"transient failure in {mode} mode")
    return f"ok after {perdure.current_step().attempt} attempt(s)"


@perdure.step(name="conf.compensate")
async def compensate(error_type: str) -> str:
    current_ledger().record_call("compensate", perdure.run_id())
    return f"compensated {error_type}"


@perdure.workflow(name="conf.retrying")
async def retrying(mode: str) -> dict[str, Any]:
    try:
        return {"result": await fragile(mode)}
    except StepFailedError as exc:
        undo = await compensate(exc.error_type)
        return {"failed": exc.error_type, "message": exc.error_message, "attempts": exc.attempts, "undo": undo}


@perdure.workflow(name="conf.approval")
async def approval_flow(item: str, timeout: float | None = None) -> dict[str, Any]:
    draft = await a(item)
    try:
        decision = await perdure.approval("publish", {"draft": draft}, timeout=timeout)
    except ApprovalTimeoutError:
        await c("expired")
        return {"timed_out": True}
    if decision.approved:
        await b(draft)
    else:
        await c("discarded")
    return {"approved": decision.approved, "by": decision.by, "comment": decision.comment, "data": decision.data}


@perdure.workflow(name="conf.sleeper")
async def sleeper(seconds: float) -> dict[str, Any]:
    await a("before")
    t0 = await perdure.now()
    await perdure.sleep(seconds)
    t1 = await perdure.now()
    await b("after")
    return {"slept_enough": (t1 - t0).total_seconds() >= seconds}


@perdure.step(name="conf.unserializable")
async def unserializable() -> Any:
    return object()


@perdure.step(name="conf.oversized")
async def oversized() -> str:
    return "x" * (max_payload_bytes() + 1)


@perdure.step(name="conf.echo")
async def echo(value: Any) -> Any:
    return value


@perdure.workflow(name="conf.serialization")
async def serialization() -> dict[str, str]:
    seen = {}
    for name, call in (("output", unserializable), ("oversized", oversized), ("argument", lambda: echo(object()))):
        try:
            await call()
            seen[name] = "no error"
        except (SerializationError, PayloadTooLargeError) as exc:
            seen[name] = type(exc).__name__
    await c("still running")
    return seen


@perdure.step(name="conf.remember")
async def remember(now: str, uid: str, rnd: float) -> list[Any]:
    await pass_gate("remember")
    return [now, uid, rnd]


@perdure.workflow(name="conf.clock")
async def clock() -> dict[str, bool]:
    t, u, r = await perdure.now(), perdure.uuid4(), perdure.random()
    recorded = await remember(t.isoformat(), str(u), r)
    await b("after-remember")  # the suite kills the worker here; the replay must see the same values
    return {"stable": recorded == [t.isoformat(), str(u), r]}


@perdure.workflow(name="conf.inspection")
async def inspection() -> str:
    await a("x")
    await charge(7)
    decision = await perdure.approval("ship", {"items": [1, 2]})
    await perdure.sleep(0.2)
    try:
        await fragile("permanent")
    except StepFailedError:
        pass
    return f"approved={decision.approved}"


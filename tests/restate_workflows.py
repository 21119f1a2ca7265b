"""Workflows the Restate engine tests run in real worker processes (``--app restate_workflows``).

Steps leave a trace in files under ``$RESTATE_TEST_DIR`` (one line per call) and can be held at a *gate*:
while ``gate-<run>-<label>`` exists the step waits, after touching ``arrived-<run>-<label>``, so a test
can SIGKILL the worker inside the step. ``RESTATE_TEST_VARIANT`` selects a code version at import, the
way a deploy between a crash and a restart would.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import perdure
from perdure import ApprovalTimeoutError, RetryPolicy, StepFailedError

VARIANT = os.environ.get("RESTATE_TEST_VARIANT", "base")
FAST = RetryPolicy(max_attempts=3, initial_interval=0.05, backoff=1.0, max_interval=0.05)


def _dir() -> Path:
    return Path(os.environ["RESTATE_TEST_DIR"])


async def _visit(label: str, gate_label: str | None = None) -> None:
    """Count the call, then wait at the gate (``gate_label``, default ``label``) if the test armed one."""
    rid = perdure.run_id()
    with open(_dir() / f"calls-{rid}", "a") as f:
        f.write(f"{label} {perdure.current_step().idempotency_key}\n")
    gate_label = gate_label or label
    gate = _dir() / f"gate-{rid}-{gate_label}"
    if gate.exists():
        (_dir() / f"arrived-{rid}-{gate_label}").touch()
        while gate.exists():
            await asyncio.sleep(0.01)


@perdure.step(name="rt.a")
async def a(x: str) -> str:
    await _visit("a")
    return f"{x}>a"


@perdure.step(name="rt.b")
async def b(x: str) -> str:
    await _visit("b")
    return f"{x}>b"


@perdure.step(name="rt.c")
async def c(x: str) -> str:
    await _visit("c")
    return f"{x}>c"


@perdure.workflow(name="rt.pipeline")
async def pipeline(x: str) -> str:
    if VARIANT == "reordered":
        return await c(await a(await b(x)))
    if VARIANT == "shorter":  # a deploy that dropped the last steps
        return await a(x)
    if VARIANT == "sleep-first":  # a durable sleep where a step was recorded
        await perdure.sleep(0.01)
    return await c(await b(await a(x)))


@perdure.step(name="rt.flaky", retry=FAST)
async def flaky(failures: int) -> str:
    """Fails ``failures`` times (counted in the trace file), then succeeds. Gate: ``flaky-<attempt>``."""
    await _visit("flaky", f"flaky-{perdure.current_step().attempt}")
    calls = (_dir() / f"calls-{perdure.run_id()}").read_text().split().count("flaky")
    if calls <= failures:
        raise ConnectionError(f"transient failure {calls}")
    return f"ok after {perdure.current_step().attempt} attempt(s)"


@perdure.workflow(name="rt.retrying")
async def retrying(failures: int) -> dict[str, Any]:
    try:
        return {"result": await flaky(failures)}
    except StepFailedError as exc:
        return {"failed": exc.error_type, "attempts": exc.attempts}


@perdure.workflow(name="rt.approval")
async def approval_flow(item: str, timeout: float | None = None) -> dict[str, Any]:
    draft = await a(item)
    try:
        decision = await perdure.approval("publish", {"draft": draft}, timeout=timeout)
    except ApprovalTimeoutError:
        return {"timed_out": True}
    return {"approved": decision.approved, "by": decision.by}


@perdure.workflow(name="rt.sleeper")
async def sleeper(seconds: float) -> float:
    t0 = await perdure.now()
    await perdure.sleep(seconds)
    t1 = await perdure.now()
    return (t1 - t0).total_seconds()


@perdure.workflow(name="rt.broken")
async def broken(message: str) -> None:
    await a("x")
    raise LookupError(message)


@perdure.workflow(name="rt.fanout")
async def fanout(items: list[str]) -> list[str]:
    """Steps awaited together: positions are taken in call order, results recorded as they come."""
    return list(await asyncio.gather(*(a(x) for x in items)))


@perdure.step(name="rt.slow_sync")
def slow_sync(x: str, seconds: float) -> str:
    """A plain def: the engine runs it in a thread, so it finishes at a moment of its own."""
    time.sleep(seconds)
    return f"{x}>s"


@perdure.workflow(name="rt.staggered")
async def staggered(rounds: int) -> list[str]:
    """Rounds of steps awaited together that finish at different moments, each round after the last."""
    out: list[str] = []
    for i in range(rounds):
        out += await asyncio.gather(slow_sync(f"{i}", 0.01), slow_sync(f"{i}", 0.05), slow_sync(f"{i}", 0.1))
    return out


@perdure.workflow(name="rt.race")
async def race() -> str:
    """A step raced with a long durable sleep: the step wins, the sleep is cancelled, the run goes on."""
    step = asyncio.ensure_future(slow_sync("r", 0.05))
    timer = asyncio.ensure_future(perdure.sleep(600))
    done, pending = await asyncio.wait({step, timer}, return_when=asyncio.FIRST_COMPLETED)
    for p in pending:
        p.cancel()
    won = await step if step in done else "timeout"
    return f"{won}|{await slow_sync('after', 0)}"


@perdure.step(name="rt.slow", retry=RetryPolicy(max_attempts=2, initial_interval=0.05))
async def slow(seconds: float) -> float:
    await _visit("slow")
    await asyncio.sleep(seconds)
    return seconds


@perdure.workflow(name="rt.slow")
async def slow_step(seconds: float) -> dict[str, Any]:
    """One step that sleeps ``seconds``; a step that fails for good is reported, not raised."""
    try:
        return {"ok": await slow(seconds)}
    except StepFailedError as exc:
        return {"error_type": exc.error_type, "attempts": exc.attempts, "message": exc.error_message}

"""Workflows for the Temporal engine tests, imported by worker processes (``--app temporal_app``).

Light on purpose (perdure only): a worker must start in well under a second so the tests measure
Temporal's recovery, not imports. Step bodies pass *gates*: files under ``$PERDURE_TT_DIR`` that let a
test hold a worker inside a step, SIGKILL it there and let the re-run through. Every arrival is a line
``<pid> <time>`` in ``arrivals/<run_id>:<label>``, so a test sees which process ran a step and when.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import perdure

VARIANT = os.environ.get("PERDURE_TT_VARIANT", "base")


def _root() -> Path:
    return Path(os.environ["PERDURE_TT_DIR"])


def arm(root: Path, gate: str) -> None:
    (root / "armed").mkdir(parents=True, exist_ok=True)
    (root / "armed" / gate).touch()


def release(root: Path, gate: str) -> None:
    (root / "armed" / gate).unlink(missing_ok=True)


def arrivals(root: Path, gate: str) -> list[tuple[int, float]]:
    path = root / "arrivals" / gate
    if not path.exists():
        return []
    return [(int(p), float(t)) for p, t in (line.split() for line in path.read_text().splitlines() if line)]


async def gate(label: str) -> None:
    """Record this arrival; wait while the gate ``<run_id>:<label>`` is armed."""
    root, name = _root(), f"{perdure.run_id()}:{label}"
    (root / "arrivals").mkdir(parents=True, exist_ok=True)
    with open(root / "arrivals" / name, "a") as f:
        f.write(f"{os.getpid()} {time.time()}\n")
    while (root / "armed" / name).exists():
        await asyncio.sleep(0.005)


@perdure.step(name="tt.a")
async def a(x: str) -> str:
    await gate("a")
    return f"{x}>a"


@perdure.step(name="tt.b")
async def b(x: str) -> str:
    await gate("b")
    return f"{x}>b"


@perdure.tool(name="tt.note")
def note(text: str) -> dict[str, str]:
    """A sync tool (runs in a thread) that returns its idempotency key."""
    return {"text": text, "key": perdure.idempotency_key()}


@perdure.step(name="tt.flaky", retry=perdure.RetryPolicy(max_attempts=3, initial_interval=0.01, backoff=1.0))
async def flaky(fail_times: int) -> int:
    attempt = perdure.current_step().attempt
    if attempt <= fail_times:
        raise ConnectionError(f"attempt {attempt} failed")
    return attempt


@perdure.step(name="tt.d")
async def d(x: str) -> str:
    await gate("d")
    return f"{x}>d"


@perdure.workflow(name="tt.pipeline")
async def pipeline(x: str) -> str:
    if VARIANT == "changed":  # a deploy that replaced the second step
        return await d(await a(x))
    return await b(await a(x))


@perdure.workflow(name="tt.every_kind")
async def every_kind(x: str) -> dict[str, Any]:
    """One of each record: step, tool, retried step, failed step (caught), sleep, approval, now, uuid."""
    first = await a(x)
    noted = await note(first)
    attempts = await flaky(2)
    try:
        await flaky(5)
        exhausted = None
    except perdure.StepFailedError as exc:
        exhausted = [exc.error_type, exc.error_message, exc.attempts]
    await perdure.sleep(0.05)
    started = await perdure.now()
    decision = await perdure.approval("review", {"draft": first}, timeout=60)
    return {
        "noted": noted, "attempts": attempts, "exhausted": exhausted, "approved": decision.approved,
        "by": decision.by, "uuid": str(perdure.uuid4()), "random": perdure.random(), "aware": started.tzinfo is not None,
    }


@perdure.workflow(name="tt.sleeper")
async def sleeper(seconds: float) -> str:
    """The ``changed`` variant swaps the sleep for a step: Temporal's own history check fails the replay."""
    await a("before")
    if VARIANT == "changed":
        await b("instead of sleeping")
    else:
        await perdure.sleep(seconds)
    return await b("after")


@perdure.workflow(name="tt.broken")
async def broken(message: str) -> None:
    await a("x")
    raise ValueError(message)


@perdure.workflow(name="tt.approval")
async def approval(timeout: float | None = None) -> dict[str, Any]:
    try:
        d = await perdure.approval("ship", {"n": 1}, timeout=timeout)
    except perdure.ApprovalTimeoutError:
        return {"timed_out": True}
    await b("after-decision")
    return {"approved": d.approved, "by": d.by}


@perdure.step(name="tt.noop")
async def noop(i: int) -> int:
    return i


@perdure.step(name="tt.blocks_once")
async def blocks_once(seconds: float) -> int:
    """Blocks its event loop (sync sleep inside ``async def``) on its first attempt only."""
    await gate("blocks_once")
    arrivals = len((_root() / "arrivals" / f"{perdure.run_id()}:blocks_once").read_text().splitlines())
    if arrivals == 1:
        time.sleep(seconds)  # noqa: ASYNC251 -- the point of this step
    return arrivals


@perdure.workflow(name="tt.blocking")
async def blocking(seconds: float) -> int:
    return await blocks_once(seconds)


@perdure.workflow(name="tt.steps")
async def steps(n: int) -> int:
    """``n`` trivial steps: the benchmark's workload."""
    total = 0
    for i in range(n):
        total += await noop(i)
    return total


@perdure.step(name="tt.count")
async def count(i: int) -> int:
    await gate(f"count{i}")  # never armed: records that this call ran, and in which process
    return i


@perdure.workflow(name="tt.counted")
async def counted(n: int) -> dict[str, Any]:
    """``n`` counted steps, then ``b``: with a small ``continue_as_new_after`` the run continues as new
    (several times) before ``b``, where a test kills its worker."""
    seen = [await count(i) for i in range(n)]
    return {"seen": seen, "b": await b("end"), "uuid": str(perdure.uuid4())}


@perdure.workflow(name="tt.carried_then_wait")
async def carried_then_wait() -> str:
    """A step, then an approval. With ``continue_as_new_after=1`` the step is carried into the second
    Temporal run; the ``changed`` variant calls another step there (nondeterminism at a carried position)."""
    first = await (b("x") if VARIANT == "changed" else a("x"))
    await perdure.approval("ship", {"first": first})
    return first


@perdure.step(name="tt.length")
async def length(text: str) -> int:
    return len(text)


@perdure.workflow(name="tt.wide")
async def wide(n: int, size: int) -> list[int]:
    """``n`` steps started together, each with a ``size``-character argument: one workflow task sends
    them all to the server at once (over its gRPC message limit when large enough)."""
    return list(await asyncio.gather(*(length(str(i % 10) * size) for i in range(n))))


@perdure.workflow(name="tt.two_approvals")
async def two_approvals() -> list[bool]:
    """Two approvals pending at once."""
    decisions = await asyncio.gather(perdure.approval("first", 1), perdure.approval("second", 2))
    return [d.approved for d in decisions]


@perdure.workflow(name="tt.race")
async def race(loser: str) -> dict[str, Any]:
    """A sleep races a step and the loser's task is cancelled (``loser="step"``: a test holds the step's
    gate). With ``continue_as_new_after=2`` the run continues as new at ``b`` (position 2), right after."""
    sleep = asyncio.ensure_future(perdure.sleep(3600 if loser == "sleep" else 0.01))  # position 0
    work = asyncio.ensure_future(a("race"))  # position 1
    done, pending = await asyncio.wait({sleep, work}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.wait(pending)
    return {"winner": "step" if work in done else "sleep", "loser_cancelled": all(t.cancelled() for t in pending),
            "then": await b("end")}


@perdure.workflow(name="tt.race_approval")
async def race_approval() -> str:
    """An approval loses a race to a step and is cancelled; then another approval, then ``b``."""
    slow = asyncio.ensure_future(perdure.approval("slow", 0))  # position 0
    work = asyncio.ensure_future(a("race"))  # position 1
    await asyncio.wait({slow, work}, return_when=asyncio.FIRST_COMPLETED)
    slow.cancel()
    await perdure.approval("next", 1)  # position 2
    return await b(await work)


SLOW_RETRY = perdure.RetryPolicy(max_attempts=2, initial_interval=0.05, backoff=1.0)


@perdure.step(name="tt.slow", retry=SLOW_RETRY)
async def slow(seconds: float) -> float:
    await gate("slow")
    await asyncio.sleep(seconds)
    return seconds


@perdure.step(name="tt.slow_sync", retry=SLOW_RETRY)
def slow_sync(seconds: float) -> float:
    """A sync body: its thread cannot be cancelled, only abandoned."""
    asyncio.run(gate("slow_sync"))
    time.sleep(seconds)
    return seconds


@perdure.workflow(name="tt.slow")
async def slow_steps(seconds: float, sync: bool = False) -> dict[str, Any]:
    """One step that sleeps ``seconds``; a step that fails for good is reported, not raised."""
    try:
        return {"ok": await (slow_sync if sync else slow)(seconds)}
    except perdure.StepFailedError as exc:
        return {"error_type": exc.error_type, "attempts": exc.attempts, "message": exc.error_message}

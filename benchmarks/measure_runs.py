"""Benchmark families 2-5 on one :class:`~engines.Deployment`: agent turn, recovery, resume cost vs
history length, throughput and memory per waiting run. Each returns plain JSON-able numbers (seconds,
bytes); run.py turns them into tables.

Recovery and resume are one experiment (:func:`kill_and_resume`): a run records ``n`` steps and enters
the gate step; the worker holding it is SIGKILLed, the gate is released, and a new worker (or a standby
one already running) takes over. The gate runs again (recovery: the in-flight step re-executes), then
``perf.after`` -- the first step that never ran before the kill -- starts after the run's whole history
was replayed (resume cost).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from engines import Deployment, wait_marks
from stats import paired_ratio_ci, ratio_of_medians


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


# --- 2. agent turn ----------------------------------------------------------------------------------------


async def agent_turn(dep: Deployment, turns: int, rounds: int) -> dict[str, Any]:
    """Median seconds of one agent turn per contender over ``rounds`` runs of ``perf.agent_turns``, for a
    tool over an ``async def`` and one over a plain ``def`` (their runs alternate), under ``by_tool``.

    Ratios pool every turn: the i-th turn of each contender in a run ran back to back with the others'
    i-th (in rotating order), so they are paired -- the ratio of medians and its bootstrap interval
    resample those pairs (benchmarks/stats.py)."""
    await dep.spawn(apps=("bench_agent",))
    client = dep.client
    kinds = ("async", "sync")
    for tool in kinds:  # warm-up
        await client.result(await client.start("perf.agent_turns", k=2, tool=tool), timeout=300)
    pooled: dict[str, dict[str, list[float]]] = {tool: {} for tool in kinds}
    per_round: dict[str, dict[str, list[float]]] = {tool: {} for tool in kinds}
    for _ in range(rounds):
        for tool in kinds:
            times = await client.result(await client.start("perf.agent_turns", k=turns, tool=tool), timeout=900)
            for name, xs in times.items():
                pooled[tool].setdefault(name, []).extend(xs)
                per_round[tool].setdefault(name, []).append(med(xs))
    await dep.kill_all()
    by_tool = {}
    for tool, times in pooled.items():
        others = [name for name in times if name != "perdure"]
        by_tool[tool] = {
            "turn_s": {name: med(xs) for name, xs in times.items()},
            "ratios": {f"perdure/{n}": ratio_of_medians(times["perdure"], times[n]) for n in others},
            "ratio_ci": {f"perdure/{n}": paired_ratio_ci(times["perdure"], times[n]) for n in others},
            "rounds": per_round[tool],
        }
    return {"by_tool": by_tool, "turns": turns}


# --- 3./4. recovery and resume ----------------------------------------------------------------------------


async def kill_and_resume(dep: Deployment, n: int, *, standby: bool = False, patience: float = 120.0) -> dict[str, Any]:
    """One kill: see the module docstring. Times (seconds) are measured from the kill and from the moment
    the replacement worker was ready (for a standby worker: the kill)."""
    marks = dep.marks(f"h{n}")
    holder = dep.workers[0] if dep.workers else await dep.spawn()
    if standby and len(dep.workers) < 2:
        await dep.spawn()
    t_start = time.time()
    run_id = await dep.client.start("perf.history", n=n, marks=str(marks))
    try:
        (t_gate, pid), = await wait_marks(marks / "gate", 1, patience + n * 0.2)
    except TimeoutError:  # the history could not even be built (see run.py, RESUME_SIZES)
        return {"n": n, "recovered": False, "built": False, "build_s": time.time() - t_start}
    holder = next((w for w in dep.workers if w.pid == pid), holder)
    t_kill = time.time()
    await dep.kill(holder)
    (marks / "release").touch()  # the re-executed gate passes at once
    if standby:
        t_ready = t_kill
        new = None
    else:
        new = await dep.spawn(wait=False)
    try:
        if new is not None:
            t_ready = await dep.wait_ready(new)
        gates = await wait_marks(marks / "gate", 2, patience)
        (t_after, _), = await wait_marks(marks / "after", 1, patience)
    except TimeoutError:
        return {"n": n, "recovered": False, "build_s": t_gate - t_start}
    await dep.client.result(run_id, timeout=patience)
    return {
        "n": n,
        "recovered": True,
        "build_s": t_gate - t_start,  # start -> gate entered: n steps recorded
        "kill_to_gate_s": gates[1][0] - t_kill,
        "ready_to_gate_s": gates[1][0] - t_ready,
        "kill_to_after_s": t_after - t_kill,
        "ready_to_after_s": t_after - t_ready,
        "startup_s": t_ready - t_kill,
    }


async def recovery(dep: Deployment, repeats: int, history: int = 3, standby: bool = False) -> dict[str, Any]:
    samples = []
    for _ in range(repeats):
        samples.append(await kill_and_resume(dep, history, standby=standby, patience=30.0 if standby else 120.0))
        if not samples[-1]["recovered"]:
            break  # the engine does not hand a dead worker's run to a running one: no point repeating
    await dep.kill_all()
    return summarize(samples)


async def resume(dep: Deployment, sizes: list[int], repeats: int) -> dict[str, Any]:
    """Resume cost for each history length; large histories are measured once (building them is slow)."""
    out = {}
    for n in sizes:
        samples = [await kill_and_resume(dep, n) for _ in range(repeats if n <= 1000 else 1)]
        out[str(n)] = summarize(samples)
        await dep.kill_all()
        if not out[str(n)]["recovered"]:
            break  # longer histories will not do better
    return out


def summarize(samples: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [s for s in samples if s["recovered"]]
    keys = [k for k in samples[0] if k.endswith("_s")] if samples else []
    summary: dict[str, Any] = {k: med([s[k] for s in ok if k in s]) for k in keys}
    summary["worst_kill_to_gate_s"] = max((s["kill_to_gate_s"] for s in ok), default=float("nan"))
    summary["samples"] = len(samples)
    summary["recovered"] = len(ok)
    summary["built"] = sum(1 for s in samples if s.get("built", True))
    return summary


# --- 5. throughput and memory -----------------------------------------------------------------------------


async def throughput(dep: Deployment, concurrency: int, rounds: int) -> dict[str, Any]:
    """Runs of ``perf.short`` (3 steps) per second through one worker, ``concurrency`` started at once."""
    await dep.spawn()
    client = dep.client
    for rid in [await client.start("perf.short") for _ in range(5)]:  # warm-up
        await client.result(rid, timeout=300)
    rates = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        ids = await asyncio.gather(*(client.start("perf.short") for _ in range(concurrency)))
        for rid in ids:  # one at a time: concurrent pollers would load the machine they measure
            await client.result(rid, timeout=600)
        rates.append(concurrency / (time.perf_counter() - t0))
    await dep.kill_all()
    return {"runs_per_s": med(rates), "rounds": rates, "concurrency": concurrency}


async def memory_per_run(dep: Deployment, batch: int, batches: int) -> dict[str, Any]:
    """Worker RSS growth per run waiting on an approval, ``batch`` runs at a time."""
    worker = await dep.spawn()
    client = dep.client

    async def all_waiting(ids: list[str]) -> None:
        deadline = time.monotonic() + 300
        for rid in ids:
            while (await client.status(rid)).pending_approval is None:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{rid} never waited for its approval")
                await asyncio.sleep(0.05)

    warm = [await client.start("perf.waiting") for _ in range(3)]  # first-use imports and caches
    await all_waiting(warm)
    for rid in warm:
        await client.approve(rid, "go-0")
        await client.result(rid, timeout=120)
    await asyncio.sleep(1.0)
    rss = [dep.rss(worker)]
    for _ in range(batches):
        ids = await asyncio.gather(*(client.start("perf.waiting") for _ in range(batch)))
        await all_waiting(list(ids))
        await asyncio.sleep(1.0)  # let the worker settle (buffers freed, tasks parked)
        rss.append(dep.rss(worker))
    await dep.kill_all()
    deltas = [(b - a) / batch for a, b in zip(rss, rss[1:], strict=False)]
    return {"bytes_per_run": med(deltas), "rss": rss, "batch": batch, "rss_base": rss[0]}


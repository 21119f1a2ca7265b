"""Benchmark family 1, per-step overhead: perdure next to the raw SDK, through each engine's own
micro-benchmark (bench_memory.py, bench_dbos.py, bench_temporal.py, bench_restate.py), which stay
runnable alone. Here their measurements are called and their numbers put in one shape:

    {"comparisons": [{"raw": label, "raw_ms": .., "perdure": label, "perdure_ms": .., "ratio": ..}], ...}

Each micro-benchmark already measures both sides side by side in one process (interleaved, same engine,
same noise); see their docstrings for how.
"""

from __future__ import annotations

import statistics
from typing import Any

from engines import Deployment
from stats import paired_ratio_ci, ratio_of_medians


def comparison(raw: str, raw_s: float, perdure: str, perdure_s: float, **extra: Any) -> dict[str, Any]:
    return {"raw": raw, "raw_ms": raw_s * 1e3, "perdure": perdure, "perdure_ms": perdure_s * 1e3,
            "ratio": perdure_s / raw_s, **extra}


async def memory_steps(steps: int, rounds: int) -> dict[str, Any]:
    import bench_memory

    plain, durable = [], []
    for _ in range(rounds):
        plain.append(await bench_memory.plain(steps) / steps)
        durable.append(await bench_memory.durable(steps) / steps)
    p, d = statistics.median(plain), statistics.median(durable)
    # A bare await is ~0.1 us: the ratio says little, the absolute overhead is the number to read.
    return {"comparisons": [comparison("plain async function", p, "perdure step (memory://)", d,
                                       overhead_us=(d - p) * 1e6)]}


async def dbos_steps(dep: Deployment, steps: int, rounds: int) -> dict[str, Any]:
    import bench_dbos

    kinds = await bench_dbos.measure(dep.url, steps, rounds)
    labels = {"async": ("@DBOS.step", "perdure step"), "sync": ("sync @DBOS.step", "perdure sync step")}
    return {"comparisons": [
        comparison(labels[kind][0], r["raw_ms"] / 1e3, labels[kind][1], r["perdure_ms"] / 1e3,
                   mean_ratio=r["mean_ratio"], n=r["n"], ci=r["ci"])
        for kind, r in kinds.items()
    ]}


async def temporal_steps(dep: Deployment, calls: int, rounds: int) -> dict[str, Any]:
    """bench_temporal's ``compare`` (perdure step and raw activity / local activity alternating in one run,
    production profile) ``rounds`` times. The ratio and its interval pool every call, the i-th perdure call
    paired with the raw one it alternated with, as on the other engines; the per-run ratios are kept too
    (runs differ more than the two sides of one run)."""
    import bench_temporal

    address = dep.server.address  # type: ignore[attr-defined]
    pooled: dict[str, dict[str, list[float]]] = {}
    per_run: dict[str, list[float]] = {}
    for _ in range(rounds):
        for mode, sides in (await bench_temporal.compare(address, "production", calls)).items():
            for side, xs in sides.items():
                pooled.setdefault(mode, {}).setdefault(side, []).extend(xs)
            per_run.setdefault(mode, []).append(ratio_of_medians(sides["perdure"], sides["raw"]))

    def compared(mode: str, raw: str, ours: str) -> dict[str, Any]:
        xs, ys = pooled[mode]["perdure"], pooled[mode]["raw"]
        return comparison(raw, statistics.median(ys), ours, statistics.median(xs), n=len(xs),
                          mean_ratio=statistics.fmean(xs) / statistics.fmean(ys), ci=paired_ratio_ci(xs, ys),
                          per_run_ratios=per_run[mode])

    return {
        "comparisons": [compared("activity", "activity", "perdure step (activity)"),
                        compared("local", "local activity", "perdure step (local)")],
        "profile": "production",
    }


async def restate_steps(dep: Deployment, steps: int, rounds: int) -> dict[str, Any]:
    """bench_restate's ``bench.compare`` workflow, served by a worker process like its own script does."""
    await dep.spawn(apps=("bench_restate",))
    client = dep.client
    await client.result(await client.start("bench.compare", steps=10, rounds=1), timeout=300)  # warm-up
    result = await client.result(await client.start("bench.compare", steps=steps, rounds=rounds), timeout=900)
    await dep.kill_all()
    ours, raw = result["perdure"], result["raw"]
    return {"comparisons": [comparison("ctx.run", statistics.median(raw), "perdure step", statistics.median(ours),
                                       mean_ratio=statistics.fmean(ours) / statistics.fmean(raw), n=len(ours),
                                       ci=paired_ratio_ci(ours, raw))]}


async def step_overhead(dep: Deployment, steps: int, rounds: int) -> dict[str, Any]:
    if dep.scheme == "memory":
        return await memory_steps(steps, rounds)
    if dep.scheme.startswith("dbos"):
        return await dbos_steps(dep, steps, rounds)
    if dep.scheme == "temporal":
        return await temporal_steps(dep, steps, rounds)
    if dep.scheme == "restate":
        return await restate_steps(dep, steps, rounds)
    raise ValueError(f"no per-step benchmark for {dep.scheme}")

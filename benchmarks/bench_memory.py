"""Per-step overhead of the reference engine (memory://) against a plain async function call.

Both are measured side by side in one run: N awaits of the bare function, then a workflow that awaits the
same function N times as a @perdure.step. Prints microseconds per step and the overhead (goal: well under
50 us per step). Run: python benchmarks/bench_memory.py [--steps N] [--repeats R]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import perdure


async def work(i: int) -> int:
    return i + 1


step_work = perdure.step(name="bench.work")(work)


@perdure.workflow(name="bench.loop")
async def loop(n: int) -> int:
    total = 0
    for i in range(n):
        total += await step_work(i)
    return total


async def plain(n: int) -> float:
    t0 = time.perf_counter()
    total = 0
    for i in range(n):
        total += await work(i)
    return time.perf_counter() - t0


async def durable(n: int) -> float:
    url = f"memory://bench-{uuid.uuid4().hex[:6]}"
    ready = asyncio.Event()
    worker = asyncio.create_task(perdure.serve(url, ready=ready.set))
    await ready.wait()
    client = perdure.Client(url)
    t0 = time.perf_counter()
    await client.result(await client.start(loop, n), timeout=600)
    elapsed = time.perf_counter() - t0
    worker.cancel()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    plain_t, durable_t = [], []
    for _ in range(args.repeats):
        plain_t.append(asyncio.run(plain(args.steps)))
        durable_t.append(asyncio.run(durable(args.steps)))
    p = statistics.median(plain_t) / args.steps * 1e6
    d = statistics.median(durable_t) / args.steps * 1e6
    print(f"memory:// per-step, median of {args.repeats} x {args.steps} steps")
    print(f"  plain async call   {p:8.2f} us")
    print(f"  perdure step       {d:8.2f} us")
    print(f"  overhead           {d - p:8.2f} us per step   (goal < 50 us)   ratio {d / p:.0f}x a bare call")


if __name__ == "__main__":
    main()

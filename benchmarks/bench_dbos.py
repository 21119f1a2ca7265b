"""Per-step cost of perdure on DBOS against a raw ``@DBOS.step``, side by side in the same run.

For each engine (a SQLite file, and a throwaway Postgres cluster started by the DBOS dev server), DBOS is
launched the way a perdure worker launches it (same serializer, same database). One perdure workflow run
then alternates, step by step, a raw ``@DBOS.step`` and a ``@perdure.step`` with the same trivial body --
once with an async body, once with a sync one -- timing each call: all see the same connection pool, the
same disk and the same noise from other processes, so each ratio measures what perdure adds (codec,
envelope, journal bookkeeping) to a DBOS step of that kind.

It also measures recovery: a worker process SIGKILLed inside a step, and the time until the step runs again
-- on a new worker started after the kill (goal: <= 2 s from starting the new process), and on a standby
worker already running next to the killed one (goal: <= 1 s from the kill).

    .venv/bin/python benchmarks/bench_dbos.py [--steps 300] [--rounds 3] [--recovery 3] [--engines sqlite,postgresql]

Goal: perdure / raw <= 1.05 (median per-step time).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dbos import DBOS

import perdure
from perdure.adapters.dbos import worker
from perdure.adapters.dbos.backend import DBOSBackend
from perdure.adapters.dbos.devserver import PostgresDevServer, SQLiteDevServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stats import paired_ratio_ci  # noqa: E402

# --- the contenders: the same trivial body, async and sync ----------------------------------------------


@DBOS.step(name="bench.raw_step")
async def raw_step(x: int) -> int:
    return x + 1


@perdure.step(name="bench.perdure_step")
async def perdure_step(x: int) -> int:
    return x + 1


def raw_sync_body(x: int) -> int:
    return x + 1


@perdure.step(name="bench.perdure_sync_step")
def perdure_sync_step(x: int) -> int:
    return x + 1


# From an async workflow, DBOS runs a sync function as a step with run_step_async: in one DBOS thread, its
# record check and record included (calling a sync @DBOS.step directly would block the event loop).
RAW_SYNC_OPTIONS: Any = {"name": "bench.raw_sync_step"}
CONTENDERS: dict[str, Any] = {  # raw and perdure of one kind are compared (PAIRS)
    "raw": raw_step,
    "perdure": perdure_step,
    "raw_sync": lambda x: DBOS.run_step_async(RAW_SYNC_OPTIONS, raw_sync_body, x),
    "perdure_sync": perdure_sync_step,
}
PAIRS = {"async": ("raw", "perdure"), "sync": ("raw_sync", "perdure_sync")}


@perdure.workflow(name="bench.side_by_side")
async def side_by_side(n: int) -> dict[str, list[float]]:
    """``n`` rounds of one call per contender, each timed (wall time: a benchmark, not durable logic)."""
    names = list(CONTENDERS)
    times: dict[str, list[float]] = {name: [] for name in names}
    values = dict.fromkeys(names, 0)
    for i in range(n):
        # Rotate the order so that no contender always follows another's commit.
        for j in range(len(names)):
            name = names[(i + j) % len(names)]
            t0 = time.perf_counter()
            values[name] = await CONTENDERS[name](values[name])
            times[name].append(time.perf_counter() - t0)
    assert set(values.values()) == {n}, values
    return times


@perdure.step(name="bench.gated")
async def gated(marks: str) -> str:
    """Note when (and in which process) the step starts, then wait for ``release`` to exist."""
    with open(Path(marks) / "entered", "a") as f:
        f.write(f"{time.time()} {os.getpid()}\n")
    while not (Path(marks) / "release").exists():
        await asyncio.sleep(0.005)
    return "done"


@perdure.workflow(name="bench.recovery")
async def recovery_flow(marks: str) -> str:
    return await gated(marks)


# --- the measurement ----------------------------------------------------------------------------------


async def measure(url: str, steps: int, rounds: int) -> dict[str, dict[str, Any]]:
    """Per kind (``async``, ``sync``): the raw and perdure medians, their ratio and its interval."""
    backend = DBOSBackend(url)
    await asyncio.to_thread(worker.launch, backend.db)
    times: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    try:
        async with perdure.Client(backend) as client:
            await client.result(await client.start(side_by_side, 10), timeout=120)  # warm-up, not measured
            for _ in range(rounds):
                for name, xs in (await client.result(await client.start(side_by_side, steps), timeout=900)).items():
                    times[name] += xs
    finally:
        await asyncio.to_thread(worker.shutdown)
    out = {}
    for kind, (raw_name, ours_name) in PAIRS.items():
        raw, ours = times[raw_name], times[ours_name]
        raw_ms, ours_ms = statistics.median(raw) * 1000, statistics.median(ours) * 1000
        out[kind] = {
            "raw_ms": raw_ms,
            "perdure_ms": ours_ms,
            "ratio": ours_ms / raw_ms,
            "ci": paired_ratio_ci(ours, raw),  # the i-th perdure step ran in the same round as the i-th raw one
            "mean_ratio": statistics.fmean(ours) / statistics.fmean(raw),
            # The 10th percentile is the least disturbed by other processes on a shared machine.
            "p10_ratio": statistics.quantiles(ours, n=10)[0] / statistics.quantiles(raw, n=10)[0],
            "n": len(raw),
        }
    return out


def _spawn_worker(url: str, log: Path) -> subprocess.Popen[bytes]:
    """This script as a worker process (``--serve``): it registers the benchmark's workflows itself."""
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, __file__, "--serve", url], stdout=out, stderr=subprocess.STDOUT)


def _wait_ready(proc: subprocess.Popen[bytes], log: Path) -> float:
    while True:
        for line in log.read_text().splitlines():
            if line.startswith("perdure worker ready"):
                return float(line.split()[-1])
        if proc.poll() is not None:
            raise RuntimeError(f"worker died:\n{log.read_text()[-2000:]}")
        time.sleep(0.005)


async def measure_recovery(url: str, workdir: Path, repeats: int) -> dict[str, float]:
    """SIGKILL a worker inside a step and time until the step runs again.

    ``spawn``: a new process started after the kill, from its start (Python and DBOS start-up included);
    ``ready``: from the new worker's "ready" line (recovery + one queue poll); ``standby``: a second worker
    already running takes the run over, from the kill.
    """
    spawn_s, ready_s, standby_s = [], [], []
    async with perdure.Client(url) as client:
        for i in range(repeats):
            for standby in (False, True):
                marks = workdir / f"recovery-{i}-{'standby' if standby else 'restart'}"
                marks.mkdir()
                entered = marks / "entered"
                procs = [_spawn_worker(url, marks / f"w{k}.log") for k in range(2 if standby else 1)]
                for k, proc in enumerate(procs):
                    _wait_ready(proc, marks / f"w{k}.log")
                try:
                    rid = await client.start(recovery_flow, str(marks))
                    while not entered.exists() or not entered.read_text().endswith("\n"):
                        await asyncio.sleep(0.005)
                    holder_pid = int(entered.read_text().split()[1])
                    holder = next(p for p in procs if p.pid == holder_pid)
                    t_kill = time.time()
                    os.kill(holder.pid, signal.SIGKILL)
                    holder.wait()
                    if not standby:
                        t_spawn = time.time()
                        procs.append(_spawn_worker(url, marks / "w-new.log"))
                        t_ready = _wait_ready(procs[-1], marks / "w-new.log")
                    while len(entered.read_text().splitlines()) < 2:
                        await asyncio.sleep(0.002)
                    t_again = float(entered.read_text().splitlines()[1].split()[0])
                    if standby:
                        standby_s.append(t_again - t_kill)
                    else:
                        spawn_s.append(t_again - t_spawn)
                        ready_s.append(t_again - t_ready)
                    (marks / "release").touch()
                    assert await client.result(rid, timeout=60) == "done"
                finally:
                    for proc in procs:
                        proc.kill()
                        proc.wait()
    return {"spawn": statistics.median(spawn_s), "ready": statistics.median(ready_s), "worst": max(spawn_s),
            "standby": statistics.median(standby_s)}


def serve_forever(url: str) -> None:
    def ready() -> None:
        print(f"perdure worker ready {time.time()}", flush=True)

    asyncio.run(perdure.serve(url, ready=ready))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300, help="pairs of steps per workflow run")
    p.add_argument("--rounds", type=int, default=3, help="workflow runs per engine")
    p.add_argument("--engines", default="sqlite,postgresql")
    p.add_argument("--recovery", type=int, default=3, metavar="N", help="kill/recover measurements per engine")
    p.add_argument("--serve", metavar="URL", help=argparse.SUPPRESS)  # internal: be a worker process
    args = p.parse_args(argv)
    if args.serve:
        serve_forever(args.serve)
        return 0
    results: dict[str, dict[str, Any]] = {}
    recovery: dict[str, dict[str, float]] = {}
    for engine in args.engines.split(","):
        workdir = Path(tempfile.mkdtemp(prefix="perdure-dbos-bench-"))
        server = (
            SQLiteDevServer(workdir) if engine == "sqlite"
            else PostgresDevServer(workdir / "pg", ports=range(54330, 54340))
        )
        try:
            url = server.start()
            results[engine] = asyncio.run(measure(url, args.steps, args.rounds))
            if args.recovery:
                recovery[engine] = asyncio.run(measure_recovery(url, workdir, args.recovery))
        finally:
            server.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nmedian per-step time, {args.rounds} runs x {args.steps} interleaved rounds (same run, same DBOS)")
    print(f"{'engine':<12}{'body':<7}{'raw @DBOS.step':>16}{'perdure step':>15}{'ratio':>8}{'95% interval':>15}"
          f"{'mean ratio':>12}{'p10 ratio':>11}")
    for engine, kinds in results.items():
        for kind, r in kinds.items():
            lo, hi = r["ci"]
            print(f"{engine:<12}{kind:<7}{r['raw_ms']:>13.3f} ms{r['perdure_ms']:>12.3f} ms{r['ratio']:>8.3f}"
                  f"{f'{lo:.3f}-{hi:.3f}':>15}{r['mean_ratio']:>12.3f}{r['p10_ratio']:>11.3f}")
    if recovery:
        print(f"\nrecovery after SIGKILL inside a step, median of {args.recovery} (goal <= 2 s from process start, "
              "standby <= 1 s from the kill)")
        print(f"{'engine':<12}{'process start -> step again':>30}{'worker ready -> step again':>30}{'worst':>9}"
              f"{'standby: kill -> step again':>30}")
        for engine, rec in recovery.items():
            print(f"{engine:<12}{rec['spawn']:>28.3f} s{rec['ready']:>28.3f} s{rec['worst']:>7.3f} s"
                  f"{rec['standby']:>28.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""perdure on Temporal: the cost of a perdure step next to a raw activity and a raw local activity.

In the same workflow run, calls alternate one by one between a perdure step and a raw Temporal call
doing the same work (``workflow.execute_activity`` / ``execute_local_activity`` made directly from the
perdure workflow, which runs inside Temporal's workflow context): perdure, raw, raw, perdure, ... so a
noisy neighbour or Temporal's own latency modes hit both sides alike. Each call is timed from the
workflow (schedule to result, across workflow tasks). One run per step mode: ``steps=activity`` against
raw activities, ``steps=local`` against raw local activities. The table shows medians, their ratio, and the ratio of the means: Temporal's
dispatch latency is bimodal here (a workflow task reaches its worker in ~3 ms or ~35 ms), which both sides
see alike, but a median of few calls can land on either mode -- keep ``--calls`` in the hundreds, and
under the profile's ``continue_as_new_after`` (500; test profile 100): a run that continues as new runs its
raw calls, which are no perdure steps, again.

    python benchmarks/bench_temporal.py [--calls 200] [--profile production] [--recovery 10]

``--recovery N`` also SIGKILLs a worker process N times inside a step while a standby worker runs and
prints the time from the kill to the step's re-run on the standby (test profile).
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
import traceback
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

import perdure
from perdure.adapters.temporal import TemporalBackend, TemporalDevServer, hard_exit
from perdure.adapters.temporal.activities import run_step
from perdure.adapters.temporal.devserver import free_port
from perdure.adapters.temporal.workflow import DecisionGate, PerdureWorkflow, register_worker

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))
import temporal_app  # noqa: E402  (the recovery measurement's workflows)


@perdure.step(name="bench.work")
async def work(i: int) -> int:
    return i


@activity.defn(name="bench.raw_work")
async def raw_work(i: int) -> int:
    return i


@perdure.workflow(name="bench.compare")
async def compare_calls(calls: int, local: bool) -> dict[str, list[float]]:
    """Per-call seconds. Wall-clock reads in workflow code: fine for a bench run that is never replayed
    (production profile: the run stays cached on its worker)."""
    times: dict[str, list[float]] = {"perdure": [], "raw": []}
    timeout = timedelta(minutes=5)
    for i in range(calls):
        for side in ("perdure", "raw") if i % 2 == 0 else ("raw", "perdure"):
            t0 = time.perf_counter()
            if side == "perdure":
                await work(i)
            elif local:
                await workflow.execute_local_activity(raw_work, i, start_to_close_timeout=timeout)
            else:
                await workflow.execute_activity(raw_work, i, start_to_close_timeout=timeout)
            times[side].append(time.perf_counter() - t0)
    return times


async def compare(address: str, profile: str, calls: int) -> dict[str, dict[str, list[float]]]:
    """``{mode: {"perdure": [...], "raw": [...]}}`` per-call seconds, for steps=activity and steps=local."""
    client = await Client.connect(address)
    out = {}
    for mode in ("activity", "local"):
        backend = TemporalBackend(f"temporal://{address}/default?task_queue=bench-{mode}&profile={profile}&steps={mode}")
        register_worker(backend.settings.task_queue, backend.settings)
        worker = Worker(client, workflows=[PerdureWorkflow, DecisionGate], activities=[run_step, raw_work],
                        **backend.worker_options())
        async with worker, perdure.Client(backend) as c:
            await c.result(await c.start(compare_calls, 4, mode == "local"), timeout=300)  # warm-up
            rid = await c.start(compare_calls, calls, mode == "local")
            out[mode] = await c.result(rid, timeout=600)
    return out


def recovery(address: str, kills: int) -> list[float]:
    """Seconds from a SIGKILL of the worker inside a step to the step's re-run on a standby worker."""
    root = Path(tempfile.mkdtemp(prefix="perdure-temporal-bench-"))
    url = f"temporal://{address}/default?task_queue=bench-recovery&profile=test"
    env = {**os.environ, "PERDURE_TT_DIR": str(root), "PYTHONPATH": str(TESTS)}
    procs: list[subprocess.Popen[bytes]] = []

    def start_worker() -> subprocess.Popen[bytes]:
        log = root / f"worker-{len(procs)}.log"
        with open(log, "wb") as out:
            p = subprocess.Popen([sys.executable, "-m", "perdure", "worker", url, "--app", "temporal_app"],
                                 stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        procs.append(p)
        while b"perdure worker ready" not in log.read_bytes():
            time.sleep(0.01)
        return p

    async def measure() -> list[float]:
        os.environ["PERDURE_TT_DIR"] = str(root)
        out = []
        async with perdure.Client(url) as c:
            for i in range(kills):
                live = [p for p in procs if p.poll() is None]
                while len(live) < 2:
                    live.append(start_worker())
                rid = f"bench-recovery-{time.time()}-{i}"
                temporal_app.arm(root, f"{rid}:a")
                await c.start(temporal_app.pipeline, "x", run_id=rid)
                while not temporal_app.arrivals(root, f"{rid}:a"):
                    await asyncio.sleep(0.005)
                pid = temporal_app.arrivals(root, f"{rid}:a")[0][0]
                temporal_app.release(root, f"{rid}:a")  # the re-run passes at once
                killed = time.time()
                os.kill(pid, signal.SIGKILL)
                await c.result(rid, timeout=60)
                rerun = temporal_app.arrivals(root, f"{rid}:a")[1][1]
                out.append(rerun - killed)
        return out

    try:
        return asyncio.run(measure())
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200, help="calls of each side per run")
    parser.add_argument("--profile", default="production", choices=["production", "test"])
    parser.add_argument("--recovery", type=int, default=0, metavar="N", help="also measure N kill recoveries")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PERDURE_TEMPORAL_PORT") or 0) or None)
    args = parser.parse_args()
    server = TemporalDevServer(Path(tempfile.mkdtemp(prefix="perdure-temporal-bench-")), port=args.port or free_port(),
                               persistent=False)
    server.start()
    code = 1
    try:
        result = asyncio.run(compare(server.address, args.profile, args.calls))
        print(f"Temporal dev server, {args.profile} profile: {args.calls} calls of each side, alternating in one run "
              "(median ms per call, schedule to result)")
        for mode, raw_name in (("activity", "raw activity"), ("local", "raw local activity")):
            p, r = (statistics.median(result[mode][k]) * 1000 for k in ("perdure", "raw"))
            mean_ratio = statistics.fmean(result[mode]["perdure"]) / statistics.fmean(result[mode]["raw"])
            print(f"  {'perdure step (' + mode + ')':<26} {p:7.2f} ms   {raw_name:<20} {r:7.2f} ms   "
                  f"ratio {p / r:.3f} (of means {mean_ratio:.3f})")
        if args.recovery:
            times = recovery(server.address, args.recovery)
            print(f"recovery after SIGKILL inside a step (test profile, standby worker): "
                  f"median {statistics.median(times):.2f} s, max {max(times):.2f} s  {[round(t, 2) for t in times]}")
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)
        hard_exit(code)  # the SDK can crash while the interpreter tears down (see exitguard.py)


if __name__ == "__main__":
    main()

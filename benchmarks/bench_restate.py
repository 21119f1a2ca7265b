"""perdure on Restate: the cost of a perdure step next to a raw Restate ``ctx.run``, in the same run.

One workflow run executes ``--rounds`` rounds; each round times ``--steps`` perdure steps and as many raw
``ctx.run`` calls (through :func:`perdure.adapters.restate.restate_context`) doing the same work, in
alternating order so drift hits both sides alike. It prints both per-call times and their ratio (median
over rounds). ``--recovery N`` also SIGKILLs a worker N times inside a step and prints how long the run
took to resume.

    python benchmarks/bench_restate.py [--steps 200] [--rounds 7] [--recovery 5]

The restate-server is started by perdure's dev server (installed from npm on first use); the worker is a
real ``python -m perdure worker`` process. Ports: ``PERDURE_RESTATE_PORTS=ingress,admin,node,deployment``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import perdure

# --- the app the worker imports (--app bench_restate) -------------------------------------------------


@perdure.step(name="bench.work")
async def work(i: int) -> dict[str, Any]:
    return {"i": i, "ok": True}


async def raw_work(i: int) -> dict[str, Any]:
    return {"i": i, "ok": True}


@perdure.workflow(name="bench.compare")
async def compare(steps: int, rounds: int) -> dict[str, list[float]]:
    """Per-call timings inside the workflow (not deterministic -- fine for a run that is never replayed).

    Calls alternate one by one (perdure, raw, raw, perdure, ...) so a noisy neighbour slows both sides alike.
    """
    from restate import RunOptions

    from perdure.adapters.restate import restate_context

    ctx = restate_context()
    options: RunOptions[dict[str, Any]] = RunOptions(type_hint=dict)
    ours: list[float] = []
    raw: list[float] = []
    for n in range(steps * rounds):
        pair = [True, False] if n % 2 == 0 else [False, True]
        for perdure_side in pair:
            t = time.perf_counter()
            if perdure_side:
                await work(n)
            else:
                await ctx.run_typed(f"raw {n}", raw_work, options, n)
            (ours if perdure_side else raw).append(time.perf_counter() - t)
    return {"perdure": ours, "raw": raw}


@perdure.step(name="bench.hold")
def hold(marker: str) -> str:
    """Touch ``marker`` and wait while it exists (the benchmark kills the worker in here). A sync step:
    perdure runs it in a thread."""
    Path(marker).touch()
    Path(marker + ".tmp").write_text(str(os.getpid()))
    Path(marker + ".tmp").rename(marker + ".arrived")  # atomic: the driver never reads it half-written
    while Path(marker).exists():
        time.sleep(0.002)
    return "held"


@perdure.workflow(name="bench.recover")
async def recover(marker: str) -> str:
    return await hold(marker)


# --- the driver ----------------------------------------------------------------------------------------


class Workers:
    """``python -m perdure worker`` processes serving the benchmark app on one deployment address."""

    def __init__(self, url: str, env: dict[str, str], logdir: Path, port: int) -> None:
        self.url, self.env, self.logdir, self.port = url, env, logdir, port
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.count = 0

    def start(self) -> tuple[float, float]:
        """Start one worker; returns when it is ready: (when its port accepted, when it printed ready)."""
        self.count += 1
        log_path = self.logdir / f"worker-{self.count}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "perdure", "worker", self.url, "--app", "bench_restate"],
                stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
            )
        self.procs[proc.pid] = proc
        listening = None
        while b"perdure worker ready" not in log_path.read_bytes():
            if proc.poll() is not None:
                raise RuntimeError(log_path.read_text())
            if listening is None and _accepts(self.port):
                listening = time.monotonic()
            time.sleep(0.002)
        ready = time.monotonic()
        return listening or ready, ready

    def kill(self, pid: int | None = None) -> None:
        """SIGKILL one worker (or all)."""
        for p in [pid] if pid is not None else list(self.procs):
            proc = self.procs.pop(p)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.05):
            return True
    except OSError:
        return False


async def bench_steps(client: perdure.Client, steps: int, rounds: int) -> None:
    rid = f"bench-{time.time_ns()}"
    await client.start("bench.compare", run_id=rid, steps=steps, rounds=rounds)
    result = await client.result(rid, timeout=600)
    ours, raw = result["perdure"], result["raw"]
    print(f"{len(ours)} calls each, interleaved in one run   {'median':>9} {'mean':>9} {'p90':>9}")
    for label, xs in (("raw Restate ctx.run", raw), ("perdure step", ours)):
        p90 = statistics.quantiles(xs, n=10)[-1]
        print(f"{label:40}{statistics.median(xs) * 1e3:>7.3f}ms {statistics.mean(xs) * 1e3:>7.3f}ms {p90 * 1e3:>7.3f}ms")
    print(f"ratio perdure step / raw ctx.run: median {statistics.median(ours) / statistics.median(raw):.3f}, "
          f"mean {statistics.mean(ours) / statistics.mean(raw):.3f}")


def _arrival(path: Path) -> int | None:
    """The pid of the worker that entered the held step (and consume the mark), if it did."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    path.unlink()
    return int(text or 0)


async def _held_run(client: perdure.Client, tmp: Path, n: int) -> tuple[str, Path, Path, int]:
    marker = tmp / f"hold-{n}"
    arrived = Path(str(marker) + ".arrived")
    rid = f"recover-{time.time_ns()}"
    await client.start("bench.recover", run_id=rid, marker=str(marker))
    while (pid := _arrival(arrived)) is None:
        await asyncio.sleep(0.002)
    return rid, marker, arrived, pid


async def bench_recovery(client: perdure.Client, workers: Workers, tmp: Path, times: int) -> None:
    """Two measures: a worker restarted after the kill (the usual deployment), and a standby worker
    already running on the same address (what Restate's retry policy alone costs)."""
    after_listen, total, standby = [], [], []
    for n in range(times):
        rid, marker, arrived, _ = await _held_run(client, tmp, n)
        t_kill = time.monotonic()
        workers.kill()
        t_listen, _ = workers.start()
        while _arrival(arrived) is None:
            await asyncio.sleep(0.001)
        t_back = time.monotonic()
        marker.unlink()
        await client.result(rid, timeout=60)
        after_listen.append(t_back - t_listen)
        total.append(t_back - t_kill)
    workers.start()  # a standby next to the running worker
    for n in range(times):
        rid, marker, arrived, pid = await _held_run(client, tmp, 1000 + n)
        t_kill = time.monotonic()
        workers.kill(pid)
        while _arrival(arrived) is None:
            await asyncio.sleep(0.001)
        standby.append(time.monotonic() - t_kill)
        marker.unlink()
        await client.result(rid, timeout=60)
        workers.start()

    def ms(xs: list[float]) -> str:
        return f"median {statistics.median(xs) * 1e3:.0f} ms, max {max(xs) * 1e3:.0f} ms"

    print(f"recovery after SIGKILL inside a step ({times}x each):")
    print(f"  restarted worker: its port accepting -> step re-entered   {ms(after_listen)}")
    print(f"  restarted worker: kill -> step re-entered (with start-up) {ms(total)}")
    print(f"  standby worker on the same address: kill -> re-entered   {ms(standby)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--recovery", type=int, default=0, metavar="N")
    args = parser.parse_args()

    from perdure.adapters.restate import RestateDevServer

    tmp = Path(tempfile.mkdtemp(prefix="perdure-restate-bench-"))
    ports = [int(p) for p in os.environ.get("PERDURE_RESTATE_PORTS", "18080,19070,15122,19080").split(",")]
    server = RestateDevServer(tmp / "engine", ingress_port=ports[0], admin_port=ports[1], node_port=ports[2],
                              deployment_port=ports[3])
    url = server.start()
    env = dict(os.environ, **server.worker_env(), PYTHONPATH=os.pathsep.join([str(Path(__file__).parent),
                                                                              os.environ.get("PYTHONPATH", "")]))
    workers = Workers(url, env, tmp, server.deployment_port)
    try:
        workers.start()

        async def run() -> None:
            async with perdure.Client(url) as client:
                await bench_steps(client, args.steps, args.rounds)
                if args.recovery:
                    await bench_recovery(client, workers, tmp, args.recovery)

        asyncio.run(run())
    finally:
        workers.kill()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

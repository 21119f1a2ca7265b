"""perdure benchmarks: what durability costs on each engine, against the raw SDKs and the peers.

    python benchmarks/run.py [--quick] [--engines memory,dbos+sqlite,...] [--families steps,agent,...]
    perdure bench [same options]            (from a source checkout)

Families (issue #8): ``steps`` per-step overhead vs the raw SDK; ``agent`` an agent turn vs the
non-durable ``Runner.run`` and the engine's own agent runner; ``recovery`` SIGKILL -> next step;
``resume`` resume cost vs history length (10 ... 10,000 steps); ``throughput`` runs/s of one worker and
memory per waiting run.

Each (engine, family) runs in a child process of its own (``--child``): engines are started there by their
backend's DevServer and stopped after, DBOS is one per process, and the benchmark apps' registrations never
meet. The parent prints the tables and writes docs/benchmarks.md, docs/benchmarks-resume.png and
docs/benchmarks.json (``--quick``: small sizes, written under .perdure/bench/ unless ``--output-dir``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import engines  # noqa: E402
import measure_runs  # noqa: E402
import measure_steps  # noqa: E402
import report  # noqa: E402

FAMILIES = ("steps", "agent", "recovery", "resume", "throughput")
SKIP = {("temporal-local", "steps")}  # bench_temporal measures both step kinds under "temporal"
CHILD_TIMEOUT = 3600.0


def sizes(quick: bool) -> dict[str, Any]:
    """Every size knob, full and quick."""
    if quick:
        return {"memory_steps": (500, 2), "dbos_steps": (30, 1), "temporal_steps": (10, 1), "restate_steps": (20, 1),
                "agent": (3, 1), "recovery": 2, "resume": [10, 100], "resume_repeats": 1,
                "throughput": (20, 1), "memory": (20, 1)}
    return {"memory_steps": (5000, 5), "dbos_steps": (500, 4), "temporal_steps": (300, 3), "restate_steps": (200, 5),
            "agent": (40, 15), "recovery": 5, "resume": [10, 100, 1000, 10000], "resume_repeats": 3,
            "throughput": (100, 3), "memory": (100, 2)}


# Temporal continues a run as new every 100 operations in the test profile (adapters/temporal/settings.py):
# 10,000 recorded steps put the kill just after a continue-as-new, 9,999 is the worst case -- 99 steps of
# history to replay, and the run continues as new once more before `perf.after`.
RESUME_EXTRA = {"temporal": [9999], "temporal-local": [9999]}


async def child(engine: str, family: str, quick: bool) -> dict[str, Any]:
    """One family on one engine, in this process."""
    z = sizes(quick)
    profile = "test" if family in ("recovery", "resume") else "production"
    dep = engines.deployment(engine, profile)
    await asyncio.to_thread(dep.start)
    try:
        if family == "steps":
            key = {"memory": "memory_steps", "temporal": "temporal_steps", "restate": "restate_steps"}.get(
                dep.scheme, "dbos_steps")
            return await measure_steps.step_overhead(dep, *z[key])
        if family == "agent":
            return {**await measure_runs.agent_turn(dep, *z["agent"]), "native": dep.native}
        if family == "recovery":
            restart = await measure_runs.recovery(dep, z["recovery"])
            standby = None if dep.scheme == "memory" else await measure_runs.recovery(dep, z["recovery"], standby=True)
            return {"restart": restart, "standby": standby, "standby_patience": 30.0}
        if family == "resume":
            wanted = z["resume"] if quick else sorted(z["resume"] + RESUME_EXTRA.get(engine, []))
            return await measure_runs.resume(dep, wanted, z["resume_repeats"])
        if family == "throughput":
            tp = await measure_runs.throughput(dep, *z["throughput"])
            return {"throughput": tp, "memory": await measure_runs.memory_per_run(dep, *z["memory"])}
        raise ValueError(f"unknown family {family!r}")
    finally:
        await dep.aclose()
        await asyncio.to_thread(dep.stop)


def run_child(engine: str, family: str, quick: bool) -> dict[str, Any]:
    """Run one (engine, family) in a child process; its result, or ``{"error": ...}``."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", engine, family, "--out", str(out)]
    if quick:
        cmd.append("--quick")
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=False)
        text = out.read_text()
        if text:
            result: dict[str, Any] = json.loads(text)
            return result
        return {"error": f"exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"}
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {CHILD_TIMEOUT:.0f} s"}
    finally:
        out.unlink(missing_ok=True)


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
        mem_gib = int(mem.split()[1]) / 2**20
    except (OSError, StopIteration):
        mem_gib = 0.0
    return f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs ({model}), {mem_gib:.1f} GiB RAM"


def available_engines() -> list[str]:
    """Engines whose backend (and engine package) is installed here."""
    from perdure.core.config import installed_schemes

    schemes = set(installed_schemes())
    return [e for e, (scheme, _, _) in engines.ENGINES.items() if scheme in schemes]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run in a few minutes")
    p.add_argument("--engines", help=f"comma-separated, from {', '.join(engines.ENGINES)} (default: all installed)")
    p.add_argument("--families", default=",".join(FAMILIES), help=f"comma-separated, from {', '.join(FAMILIES)}")
    p.add_argument("--output-dir", type=Path, help="where to write benchmarks.md/.json/-resume.png "
                   "(default: docs/ of this checkout; ./.perdure/bench/ with --quick)")
    p.add_argument("--update", type=Path, metavar="JSON",
                   help="measure only --engines/--families and merge them into this benchmarks.json")
    p.add_argument("--report-only", type=Path, metavar="JSON",
                   help="no measuring: rewrite the report from a benchmarks.json (e.g. after editing findings.md)")
    p.add_argument("--child", nargs=2, metavar=("ENGINE", "FAMILY"), help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child:
        engine, family = args.child
        result = asyncio.run(child(engine, family, args.quick))
        args.out.write_text(json.dumps(result, default=float))
        sys.stdout.flush()
        os._exit(0)  # the Temporal SDK can crash while the interpreter tears down (adapters/temporal/exitguard.py)

    if args.report_only:
        write_report(json.loads(args.report_only.read_text()), args.output_dir or args.report_only.parent)
        return 0

    chosen = args.engines.split(",") if args.engines else available_engines()
    families = args.families.split(",")
    for name in families:
        if name not in FAMILIES:
            p.error(f"unknown family {name!r}")
    out_dir = args.output_dir or (Path.cwd() / ".perdure" / "bench" if args.quick else HERE.parent / "docs")
    if args.update:
        out_dir = args.output_dir or args.update.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = json.loads(args.update.read_text()) if args.update else {"meta": {
        "date": _dt.date.today().isoformat(), "machine": machine(), "cpus": os.cpu_count(),
        "versions": engines.versions(), "quick": args.quick, "json_name": "benchmarks.json",
        "command": ("python benchmarks/run.py " + shlex.join(argv if argv is not None else sys.argv[1:])).strip(),
        "loads": [],
    }, "engines": {}}
    if args.update:  # re-measured families replace theirs; the page says which were re-run, and when
        command = "python benchmarks/run.py " + shlex.join(argv if argv is not None else sys.argv[1:])
        results["meta"].setdefault("updates", []).append(f"{_dt.date.today().isoformat()}: {command}")
    for engine in chosen:
        for family in families:
            if (engine, family) in SKIP:
                continue
            before, t0 = os.getloadavg()[0], time.monotonic()
            print(f"[{engine}] {family} ...", end=" ", flush=True)
            result = run_child(engine, family, args.quick)
            after = os.getloadavg()[0]
            results["engines"].setdefault(engine, {})[family] = result
            results["meta"]["loads"].append([engine, family, before, after])
            status = "failed" if "error" in result else "done"
            print(f"{status} in {time.monotonic() - t0:.0f} s (load {before:.1f} -> {after:.1f})", flush=True)
            if "error" in result:
                print("   " + result["error"].strip().replace("\n", "\n   ")[-1500:], flush=True)
            (out_dir / "benchmarks.json").write_text(json.dumps(results, indent=1, default=float))  # so far
    write_report(results, out_dir)
    return 0


def write_report(results: dict[str, Any], out_dir: Path) -> None:
    """Print the tables; write benchmarks.json, benchmarks.md (with findings.md) and the resume plot."""
    for title, header, rows in report.tables(results):
        if rows:
            print(f"\n{title}\n{report.text_table(header, rows)}")
    (out_dir / "benchmarks.json").write_text(json.dumps(results, indent=1, default=float))
    plot = out_dir / "benchmarks-resume.png"
    has_plot = report.plot_resume(results, plot)
    findings_path = HERE / "findings.md"
    findings = findings_path.read_text() if findings_path.exists() else "(none written yet)"
    (out_dir / "benchmarks.md").write_text(report.markdown(results, plot.name if has_plot else None, findings))
    print(f"\nwrote {out_dir / 'benchmarks.md'}, {out_dir / 'benchmarks.json'}" + (f", {plot}" if has_plot else ""))


if __name__ == "__main__":
    sys.exit(main())

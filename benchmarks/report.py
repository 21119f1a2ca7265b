"""Turning the raw numbers of one benchmark run into tables (terminal and Markdown) and the resume plot.

``results`` is what run.py collects: ``{"meta": {...}, "engines": {engine: {family: result | {"error": text}}}}``.
The Markdown page is docs/benchmarks.md; its "Findings" section is benchmarks/findings.md, written by
hand from a run's numbers and profiles, included verbatim so regenerating the page keeps it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

GOALS = {
    "steps": 1.05,  # perdure / raw per step
    "recovery": 1.0,  # seconds, SIGKILL -> next step, test profile
    "resume": 2.0,  # seconds at 10,000 steps
}
TOOL_KINDS = {"async": "async def", "sync": "def"}
RUNNERS = {"dbos": "DBOSRunner (dbos-openai-agents)", "restate": "restate.ext.openai.DurableRunner"}


def _ms(x: float | None) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}" if x < 10 else f"{x:.0f}"


def _s(x: float | None) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}" if x < 1 else f"{x:.2f}"


def _ok(met: bool | None) -> str:
    return "—" if met is None else ("yes" if met else "**no**")


def _ratio_ok(ratio: float, ci: list[float] | tuple[float, float] | None, limit: float) -> str:
    """Whether a median ratio meets ``ratio <= limit``; flagged when its 95 % interval reaches across the
    limit, i.e. when this run alone cannot tell which side of the goal the ratio is on."""
    verdict = _ok(ratio <= limit)
    return f"{verdict} (interval spans {limit:g})" if ci and ci[0] <= limit < ci[1] else verdict


def _interval(ci: list[float] | tuple[float, float] | None) -> str:
    return "—" if not ci else f"{ci[0]:.3f}–{ci[1]:.3f}"


def _family(results: dict[str, Any], family: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for engine, families in results["engines"].items():
        r = families.get(family)
        if r is not None:
            out.append((engine, r))
    return out


def _error_rows(rows: list[tuple[str, dict[str, Any]]], width: int) -> tuple[list[list[str]], list[tuple[str, dict[str, Any]]]]:
    errors = [[engine, "failed: " + r["error"].strip().splitlines()[-1][:100]] + [""] * (width - 2)
              for engine, r in rows if "error" in r]
    return errors, [(e, r) for e, r in rows if "error" not in r]


def tables(results: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) for every family that ran."""
    out: list[tuple[str, list[str], list[list[str]]]] = []

    rows: list[list[str]] = []
    errors, good = _error_rows(_family(results, "steps"), 7)
    for engine, r in good:
        for c in r["comparisons"]:
            goal = "—" if engine == "memory" else _ratio_ok(c["ratio"], c.get("ci"), GOALS["steps"])
            extra = f" (+{c['overhead_us']:.1f} µs)" if "overhead_us" in c else ""
            ratio = f"{c['ratio']:.3f}" if c["ratio"] < 10 else f"{c['ratio']:.0f}"
            rows.append([engine, c["raw"], _ms(c["raw_ms"]), c["perdure"], _ms(c["perdure_ms"]) + extra, ratio,
                         _interval(c.get("ci")), goal])
    out.append(("1. Per-step overhead (median ms per step; goal: perdure / raw ≤ 1.05)",
                ["engine", "raw SDK", "raw ms", "perdure", "perdure ms", "ratio", "95 % interval", "goal met"],
                rows + errors))

    rows = []
    errors, good = _error_rows(_family(results, "agent"), 8)
    for engine, result in good:
        for tool, r in (result.get("by_tool") or {"async": result}).items():  # older runs: async tool only
            t = {k: v * 1e3 for k, v in r["turn_s"].items()}
            native = t.get("native")
            ratios = r.get("ratios") or {f"perdure/{k}": t["perdure"] / v for k, v in t.items() if k != "perdure"}
            own = ratios.get("perdure/native")
            plain = ratios.get("perdure/plain")  # none for a plain-def tool on Temporal (bench_agent.py)
            rows.append([engine, TOOL_KINDS[tool], _ms(t.get("plain")), _ms(t["perdure"]),
                         f"{plain:.2f}" if plain else "—",
                         (f"{_ms(native)} ({RUNNERS[result['native']]})" if native else "not available"),
                         f"{own:.3f}" if own else "—", _interval(own_ci := (r.get("ratio_ci") or {}).get("perdure/native")),
                         _ratio_ok(own, own_ci, 1.0) if own else "—"])
    out.append(("2. Agent turn: model call → tool call → model call, scripted model (median ms per turn; "
                "ratios of medians over every turn, contenders interleaved turn by turn)",
                ["engine", "tool", "Runner.run (not durable)", "perdure DurableRunner", "perdure / plain",
                 "engine's own runner", "perdure / own", "95 % interval", "never slower than own"], rows + errors))

    rows = []
    errors, good = _error_rows(_family(results, "recovery"), 7)
    for engine, r in good:
        restart, standby = r["restart"], r.get("standby")
        if standby is None:
            sb = "n/a (in-process engine)"
        elif standby["recovered"] == 0:
            sb = f"not recovered in {r['standby_patience']:.0f} s"
        else:
            sb = _s(standby["kill_to_gate_s"])
        # The goal is the engine's hand-over, not Python's start-up: a standby worker where the engine hands a
        # dead worker's run to a live one, else a restarted worker from its ready line.
        handover = standby["kill_to_gate_s"] if standby and standby["recovered"] else restart["ready_to_gate_s"]
        rows.append([engine, _s(restart["kill_to_gate_s"]), _s(restart["startup_s"]), _s(restart["ready_to_gate_s"]),
                     sb, _s(restart["worst_kill_to_gate_s"]), f"{_s(handover)} {_ok(handover <= GOALS['recovery'])}"])
    out.append(("3. Recovery after SIGKILL inside a step, test profile (median s until the step runs again)",
                ["engine", "restart: kill → step", "of which worker start-up", "restart: ready → step",
                 "standby worker: kill → step", "worst restart: kill → step", "hand-over ≤ 1 s"], rows + errors))

    sizes = sorted({int(n) for _, r in _family(results, "resume") if "error" not in r for n in r})
    rows = []
    errors, good = _error_rows(_family(results, "resume"), len(sizes) + 2)
    for engine, r in good:
        cells = [_resume_cell(r.get(str(n))) for n in sizes]
        at_max = r.get("10000", {}).get("ready_to_after_s")
        rows.append([engine, *cells, _ok(None if at_max is None else at_max <= GOALS["resume"])])
    out.append(("4. Resume cost vs history length: new worker ready → first new step runs (median s)",
                ["engine", *[f"{n:,} steps" for n in sizes], "≤ 2 s at 10,000"], rows + errors))

    rows = []
    errors, good = _error_rows(_family(results, "throughput"), 6)
    for engine, r in good:
        tp, mem = r["throughput"], r["memory"]
        rows.append([engine, f"{tp['runs_per_s']:.1f}", f"{tp['runs_per_s'] * 3:.0f}", str(tp["concurrency"]),
                     f"{mem['bytes_per_run'] / 1024:.1f}", f"{mem['rss_base'] / 2**20:.0f}"])
    out.append(("5. Throughput of one worker and memory per waiting run",
                ["engine", "runs/s (3 steps each)", "steps/s", "runs started at once", "KiB per run waiting on an approval",
                 "worker RSS before (MiB)"], rows + errors))
    return out


def _resume_cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return "—"
    if not r["recovered"]:
        return "not built" if not r.get("built", 1) else "no progress"
    return _s(r["ready_to_after_s"])


def text_table(header: list[str], rows: list[list[str]]) -> str:
    cells = [header, *rows]
    widths = [max(len(r[i]) if i < len(r) else 0 for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r + [""] * (len(header) - len(r))) + " |" for r in rows]
    return "\n".join(lines)


def plot_resume(results: dict[str, Any], path: Path) -> bool:
    """Resume cost vs history length per engine (log-log), as a PNG. False if there is nothing to plot."""
    series = [(e, r) for e, r in _family(results, "resume") if "error" not in r]
    if not series:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for engine, r in series:
        ns = sorted(int(n) for n in r if r[n].get("recovered"))
        if not ns:
            continue
        ax.plot(ns, [r[str(n)]["ready_to_after_s"] for n in ns], marker="o", label=engine)
    ax.axhline(GOALS["resume"], color="grey", linestyle="--", linewidth=1, label="goal at 10,000 steps")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("recorded steps before the kill")
    ax.set_ylabel("new worker ready → first new step (s)")
    ax.set_title("perdure: resume cost vs history length")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def markdown(results: dict[str, Any], plot_name: str | None, findings: str) -> str:
    meta = results["meta"]
    loads = [x for _, _, before, after in meta.get("loads", []) for x in (before, after)]
    parts = [
        "# Benchmarks",
        "",
        "What durability costs on each engine, measured against the raw SDKs and the engines' own agent "
        "integrations, side by side in one run. Generated by `python benchmarks/run.py` (or `perdure bench`) "
        f"on {meta['date']}; raw numbers in `{meta['json_name']}`. Every number is a median of several runs "
        "(see each family); the machine is shared, so read ratios measured side by side, not absolute times.",
        "",
        "## Machine and versions",
        "",
        f"- machine: {meta['machine']}",
        f"- load average (1 min) during the run: {min(loads):.1f} – {max(loads):.1f} on {meta['cpus']} CPUs "
        "(other engineers' test runs share the machine)" if loads else "- load average: not recorded",
        f"- command: `{meta['command']}`" + (" (quick sizes)" if meta.get("quick") else ""),
        "- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        *[f"- re-measured: `{u}`" for u in meta.get("updates", [])],
        "",
    ]
    for title, header, rows in tables(results):
        parts += [f"## {title}", "", markdown_table(header, rows), ""]
        if title.startswith("4."):
            parts += ["Test profile (Temporal: a run continues as new every 100 operations, carrying its "
                      "journal; see docs/temporal.md). — : not measured at that length.", ""]
            if plot_name:
                parts += [f"![resume cost vs history length]({plot_name})", ""]
    parts += ["## How each number is measured", "", METHOD, "", "## Findings", "", findings.strip(), ""]
    return "\n".join(parts)


METHOD = """\
- **Per-step overhead** — each engine's own micro-benchmark, which times perdure's step and the raw SDK's
  primitive with the same trivial body in one process: `bench_memory.py` (perdure step vs a bare await;
  a ratio to a 0.1 µs await means little, so the absolute overhead is shown), `bench_dbos.py` (raw
  DBOS steps and perdure steps interleaved in one DBOS workflow, with an async body and with a sync one:
  a raw sync step is `DBOS.run_step_async` of a plain function, as DBOS runs sync steps from async
  code), `bench_temporal.py` (perdure step and a raw activity / local activity alternating in one
  workflow run, production profile), `bench_restate.py` (raw `ctx.run` and perdure step interleaved in
  one invocation).
  The 95 % interval is a bootstrap over the samples, perdure's i-th step kept with the raw i-th it ran
  next to (benchmarks/stats.py): a ratio of 1.03 whose interval reaches 1.06 is not "within 1.05".
  A goal column judges the median; "(interval spans ...)" says the interval reaches across the goal, so
  that this run alone cannot tell which side of it the ratio is on.
- **Agent turn** — each workflow run times, in rotating order, one turn per contender: `Runner.run` (not
  durable), perdure's `DurableRunner.run`, and the engine's own runner where it installs. The ratio is
  the ratio of the medians of every turn of every run, its interval a bootstrap over the turns, each
  contender's i-th turn kept with the others' i-th (they ran back to back). Zero-latency
  scripted model; the tool is made durable the way each integration documents it (perdure: automatic;
  DBOS: the tool body is a `@DBOS.step`; Restate: the tool body runs in `ctx.run`), once over an
  `async def` and once over a plain `def` (runs of the two alternate; on Temporal the non-durable
  `Runner.run` cannot run a plain-`def` tool inside the workflow -- the SDK hands it to
  `asyncio.to_thread`, which Temporal's workflow loop refuses -- so that row has no plain figure). Temporal's own
  integration (`temporalio.contrib.openai_agents`) needs `temporalio-openai-agents`, which pins
  `openai-agents<0.23`, so it cannot be installed next to openai-agents 0.24: not measured.
- **Recovery** — a run records 3 steps and enters a gate step; the worker process is SIGKILLed there
  and the gate opened. *restart*: a new worker process is started at once (kill → step includes its
  Python start-up; ready → step is the engine's own hand-over). *standby*: a second worker already runs.
  Test profile (Temporal `profile=test`, Restate's fast retry policy from its dev server). The goal
  column ("hand-over") is the standby time where the engine hands a dead worker's run to a live worker,
  else the restarted worker's ready → step: Python's start-up is the same with or without perdure.
- **Resume cost** — the same experiment after N recorded steps, timed until `perf.after` starts: the
  first step that never ran before the kill, i.e. after the whole history was replayed.
- **Throughput** — 100 runs of a 3-step workflow started at once on one worker (Temporal: production
  profile, workflow cache on; every engine as its DevServer starts it, Temporal with its SQLite file);
  **memory** — worker RSS growth per run waiting on an approval, 100 runs at a
  time."""

"""Runs scenarios on backends, compares each with the reference engine, prints and writes the matrix."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import ConfigurationError, InvalidArgumentError
from .agents import NOT_LOADED
from .harness import Harness, MemoryHarness, harness_for
from .scenarios import SCENARIOS, Scenario

# Features a backend may declare unsupported. Everything in SEMANTICS.md is required, so this is empty:
# a backend that cannot do a required thing fails, it does not skip.
OPTIONAL_FEATURES: frozenset[str] = frozenset()
SCENARIO_TIMEOUT = 240.0


@dataclass
class Outcome:
    """One cell of the matrix."""

    result: str  # PASS, FAIL (differs from the reference), ERROR (raised), XFAIL, XPASS
    seconds: float
    detail: str = ""
    trace: Any = field(default=None, repr=False)


def diff(expected: Any, got: Any, path: str = "") -> list[str]:
    """Where two traces differ, as readable paths."""
    if isinstance(expected, dict) and isinstance(got, dict):
        out = []
        for key in sorted(set(expected) | set(got), key=str):
            if key not in got:
                out.append(f"{path}.{key}: missing (expected {expected[key]!r:.120})")
            elif key not in expected:
                out.append(f"{path}.{key}: unexpected {got[key]!r:.120}")
            else:
                out.extend(diff(expected[key], got[key], f"{path}.{key}"))
        return out
    if isinstance(expected, list) and isinstance(got, list) and len(expected) == len(got):
        return [d for i, (e, g) in enumerate(zip(expected, got, strict=True)) for d in diff(e, g, f"{path}[{i}]")]
    if expected != got:
        return [f"{path}: expected {expected!r:.200}, got {got!r:.200}"]
    return []


def check_capabilities(h: Harness) -> None:
    bad = set(h.capabilities.unsupported) - OPTIONAL_FEATURES
    if bad:
        raise ConfigurationError(
            f"{h.name} declares required features unsupported: {sorted(bad)}. Required features cannot be "
            "skipped; declare a failing scenario in Capabilities.known_failures (a strict expected failure)."
        )


async def run_one(h: Harness, s: Scenario) -> tuple[Any, str | None, float]:
    """Run one scenario; returns (trace, error text, seconds). What the workers printed meanwhile is kept
    in ``h.logs[s.name]`` for the verdict."""
    t0 = time.monotonic()
    h.mark_logs()
    try:
        await h.start_worker()
        result = await asyncio.wait_for(s.fn(h), SCENARIO_TIMEOUT)
        return result, None, time.monotonic() - t0
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}", time.monotonic() - t0
    finally:
        h.logs[s.name] = h.scenario_logs()


def judge(s: Scenario, h: Harness, expected: Any, got: Any, error: str | None, seconds: float) -> Outcome:
    if error is None and expected is not None:
        problems = diff(expected, got)
    else:
        problems = [error or "the reference engine itself failed this scenario"]
    known = h.capabilities.known_failures.get(s.name)
    if known is not None:
        if problems:  # the declared reason, and how it fails now (a known failure can change its failure)
            return Outcome("XFAIL", seconds, f"{known}\nfails with: " + "\n".join(problems[:5]), got)
        return Outcome("XPASS", seconds, f"declared a known failure ({known}) but passes: remove the entry", got)
    if not problems:
        return Outcome("PASS", seconds, "", got)
    detail = "\n".join(problems[:20])
    if logs := h.logs.get(s.name):  # a wrong result on a loaded CI machine is explained by what workers said
        detail += "\n\nworker output during the scenario:\n" + logs
    return Outcome("ERROR" if error else "FAIL", seconds, detail, got)


async def run_harness(h: Harness, scenarios: list[Scenario], progress: Any = None) -> dict[str, tuple[Any, str | None, float]]:
    out = {}
    try:
        for s in scenarios:
            out[s.name] = await run_one(h, s)
            if progress is not None:
                progress(h, s, out[s.name])
    finally:
        await h.aclose()
    return out


def run_matrix(
    targets: list[str | Harness], scenarios: list[Scenario] | None = None, progress: Any = None
) -> dict[str, dict[str, Outcome]]:
    """Run ``scenarios`` on the reference engine and on every target; returns backend -> scenario -> Outcome.

    ``progress(harness, scenario, outcome)`` is called as each target's scenario is judged.
    """
    scenarios = scenarios or list(SCENARIOS)
    # Every target is resolved and its capabilities checked before anything runs: a misspelt scheme or a
    # refused declaration fails at once, not after the reference engine ran the whole suite.
    harnesses: list[Harness] = []
    try:
        for target in targets:
            h = target if isinstance(target, Harness) else harness_for(target)
            check_capabilities(h)
            names = {other.name for other in harnesses}
            base, n = h.name, 1
            while h.name in names:  # two targets of one name (memory:// and memory://other) keep two rows
                n += 1
                h.name = f"{base}#{n}"
            harnesses.append(h)
        reference = MemoryHarness(name="reference")
        reference.setup()
        try:
            reference_results = asyncio.run(run_harness(reference, scenarios))
        finally:
            reference.teardown()
    except BaseException:
        for h in harnesses:
            h.teardown()
        raise
    expected = {name: (res[0] if res[1] is None else None) for name, res in reference_results.items()}

    matrix: dict[str, dict[str, Outcome]] = {}
    for h in harnesses:
        row: dict[str, Outcome] = {}

        def judged(h: Harness, s: Scenario, res: tuple[Any, str | None, float], row: dict[str, Outcome] = row) -> None:
            row[s.name] = judge(s, h, expected[s.name], *res)
            if progress is not None:
                progress(h, s, row[s.name])

        h.setup()
        try:
            asyncio.run(run_harness(h, scenarios, judged))
        finally:
            h.teardown()
        matrix[h.name] = row
    return matrix


def failed(matrix: dict[str, dict[str, Outcome]]) -> bool:
    """Whether any cell is unexpected: a failure, an error, or a known failure that now passes."""
    return any(o.result in ("FAIL", "ERROR", "XPASS") for row in matrix.values() for o in row.values())


def verdicts(matrix: dict[str, dict[str, Outcome]]) -> dict[str, dict[str, Any]]:
    """Per backend: conformant only if the whole suite ran (no ``-k``, no scenario family left out for a
    missing framework) and every scenario passed. A declared known failure is a scenario the backend does
    not pass: it keeps CI green while the work goes on, never the verdict."""
    out = {}
    for b, row in matrix.items():
        known = sorted(n for n, o in row.items() if o.result == "XFAIL")
        unexpected = sorted(n for n, o in row.items() if o.result in ("FAIL", "ERROR", "XPASS"))
        complete = len(row) == len(SCENARIOS) and not NOT_LOADED
        out[b] = {"conformant": complete and not known and not unexpected, "complete": complete,
                  "known_failures": known, "failed": unexpected}
    return out


def _verdict_line(name: str, verdict: dict[str, Any], row: dict[str, Outcome]) -> str:
    counts: dict[str, int] = {}
    for o in row.values():
        counts[o.result] = counts.get(o.result, 0) + 1
    if verdict["known_failures"] or verdict["failed"]:
        word = "NOT CONFORMANT"
        if verdict["known_failures"]:
            word += f" ({len(verdict['known_failures'])} declared known failures)"
    elif verdict["complete"]:
        word = "CONFORMANT"
    else:
        word = f"passes the {len(row)} scenarios run (not the whole suite: no verdict)"
    return f"{name}: {word} -- " + ", ".join(f"{n} {result.lower()}" for result, n in sorted(counts.items()))


def render(matrix: dict[str, dict[str, Outcome]]) -> str:
    backends = list(matrix)
    names = [s.name for s in SCENARIOS if any(s.name in matrix[b] for b in backends)]
    width = max(len(n) for n in names) + 6
    cols = [max(len(b), 12) for b in backends]
    lines = ["scenario".ljust(width) + "  ".join(b.ljust(c) for b, c in zip(backends, cols, strict=True))]
    numbers = {s.name: s.number for s in SCENARIOS}
    for n in names:
        cells = []
        for b, c in zip(backends, cols, strict=True):
            o = matrix[b].get(n)
            cells.append(("-" if o is None else f"{o.result} {o.seconds:4.1f}s").ljust(c))
        lines.append(f"{numbers[n]:>2}. {n}".ljust(width) + "  ".join(cells))
    verdict = verdicts(matrix)
    lines.extend(_verdict_line(b, verdict[b], matrix[b]) for b in backends)
    for framework, why in sorted(NOT_LOADED.items()):
        lines.append(f"not run: the {framework} scenarios ({why})")
    for b in backends:
        for n, o in matrix[b].items():
            if o.result != "PASS":
                lines.append(f"\n[{b}] {n}: {o.result}\n    " + o.detail.replace("\n", "\n    "))
    return "\n".join(lines)


def to_json(matrix: dict[str, dict[str, Outcome]]) -> dict[str, Any]:
    ran = {n for row in matrix.values() for n in row}
    return {
        "scenarios": [{"name": s.name, "number": s.number, "doc": s.doc} for s in SCENARIOS if s.name in ran],
        "not_run": dict(NOT_LOADED),
        "verdicts": verdicts(matrix),
        "backends": {
            b: {n: {k: v for k, v in asdict(o).items() if k != "trace"} for n, o in row.items()}
            for b, row in matrix.items()
        },
    }


def select(patterns: list[str]) -> list[Scenario]:
    if not patterns:
        return list(SCENARIOS)
    chosen = [s for s in SCENARIOS if any(p in s.name for p in patterns)]
    if not chosen:
        raise ConfigurationError(f"no scenario matches {patterns}; see `perdure conformance --list`")
    return chosen


def cli_main(args: argparse.Namespace) -> int:
    if args.list:
        if args.json:
            print(json.dumps([{"number": s.number, "name": s.name, "doc": s.doc} for s in SCENARIOS], indent=2))
        else:
            for s in SCENARIOS:
                print(f"{s.number:>2}. {s.name:<34} {s.doc}")
        return 0
    if not args.targets:
        raise InvalidArgumentError("perdure conformance needs a TARGET: a backend URL or an engine name")
    output = Path(args.output)
    if not output.parent.is_dir() or (output.exists() and not os.access(output, os.W_OK)):
        # Checked before the run, which can take many minutes, rather than when its matrix is written.
        raise InvalidArgumentError(f"--output {args.output}: cannot write there (no such folder, or not writable)")

    def progress(h: Harness, s: Scenario, outcome: Outcome) -> None:
        print(f"  [{h.name}] {s.name}: {outcome.result} ({outcome.seconds:.1f} s)", file=sys.stderr, flush=True)

    matrix = run_matrix(list(args.targets), select(args.scenario), progress)
    data = to_json(matrix)
    print(json.dumps(data, indent=2) if args.json else render(matrix), flush=True)  # before the file: never lost
    output.write_text(json.dumps(data, indent=2))
    print(f"\nmatrix written to {args.output}", file=sys.stderr)
    if failed(matrix):
        return 1
    return 1 if args.strict and any(v["known_failures"] for v in data["verdicts"].values()) else 0

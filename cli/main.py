"""``perdure`` command line: run workers, start and inspect runs, decide approvals, run the conformance suite.

Human-readable output by default, ``--json`` for scripts. The backend comes from ``--backend``, else
``PERDURE_BACKEND``, else ``[tool.perdure] backend`` in pyproject.toml / perdure.toml.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from ..core.errors import PerdureError
from . import commands

EPILOG = """\
examples:
  perdure demo                                  crash a worker mid-run and watch it resume
  perdure worker --app myagents.workflows       serve the workflows of a module
  perdure start myagents.workflows.research --arg topic='"durable agents"'
  perdure status RUN_ID        perdure steps RUN_ID        perdure result RUN_ID --timeout 60
  perdure approve RUN_ID publish-3 --by alice   perdure reject RUN_ID publish-3 --comment "not yet"
  perdure conformance memory://                 the conformance matrix for a backend
  perdure dev temporal                          a throwaway local engine server, until Ctrl-C
  perdure bench --quick                         the benchmarks, from a source checkout

backends: memory://  dbos+sqlite:///path.sqlite  dbos+postgresql://user:pw@host:port/db
          temporal://host:port/namespace?task_queue=q  restate://host:port?admin=host:port
"""


def _add_backend(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-b", "--backend", metavar="URL", help="backend URL (default: $PERDURE_BACKEND, then [tool.perdure] backend)"
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perdure",
        description="Durable AI agents on the engine of your choice (Temporal, DBOS, Restate, memory).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version="perdure 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("worker", help="serve registered workflows on a backend until stopped",
                       description="Import the --app modules (registering their workflows, steps and tools) "
                       "and execute their runs, recovering runs left unfinished by a dead worker.")
    p.add_argument("url", nargs="?", metavar="URL", help="backend URL (same defaults as --backend)")
    p.add_argument("-a", "--app", action="append", default=[], metavar="MODULE",
                   help="module that defines workflows (repeatable)")
    p.set_defaults(func=commands.worker)

    p = sub.add_parser("start", help="start a run of a workflow",
                       description="Start WORKFLOW (its registered name, e.g. mypkg.flows.research). With "
                       "--app the module is imported so arguments are checked against the signature.")
    p.add_argument("workflow", metavar="WORKFLOW")
    p.add_argument("--arg", action="append", default=[], metavar="NAME=JSON",
                   help="a keyword argument as JSON (repeatable): --arg topic='\"x\"' --arg n=3")
    p.add_argument("--run-id", help="run id (starting an existing id returns that run)")
    p.add_argument("-a", "--app", action="append", default=[], metavar="MODULE", help="module to import first")
    _add_backend(p)
    p.set_defaults(func=commands.start)

    for name, help_, func in (
        ("status", "show a run's status, output or error, and pending approval", commands.status),
        ("steps", "show a run's journal: every step, tool, approval and sleep", commands.steps),
        ("cancel", "cancel a run: it ends CANCELLED and no further step starts", commands.cancel),
    ):
        p = sub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".")
        p.add_argument("run_id", metavar="RUN_ID")
        _add_backend(p)
        p.set_defaults(func=func)

    p = sub.add_parser("result", help="wait for a run and print its output",
                       description="Wait for RUN_ID to finish; print its output. Exit 1 if it failed or was "
                       "cancelled, 3 on --timeout.")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--timeout", type=float, help="seconds to wait (default: forever)")
    _add_backend(p)
    p.set_defaults(func=commands.result)

    p = sub.add_parser("runs", help="list recent runs", description="List the most recent runs, newest first.")
    p.add_argument("--limit", type=int, default=20)
    _add_backend(p)
    p.set_defaults(func=commands.runs)

    for name, approved in (("approve", True), ("reject", False)):
        p = sub.add_parser(name, help=f"{name} a pending approval",
                           description=f"{name.capitalize()} APPROVAL_ID (see `perdure status RUN_ID`). A "
                           "decision is taken exactly once; it is kept if no worker is running.")
        p.add_argument("run_id", metavar="RUN_ID")
        p.add_argument("approval_id", metavar="APPROVAL_ID")
        p.add_argument("--by", help="who decides")
        p.add_argument("--comment")
        p.add_argument("--data", metavar="JSON", help="extra data for the workflow, as JSON")
        p.add_argument("--digest", help="only decide if the payload still has this digest")
        _add_backend(p)
        p.set_defaults(func=commands.decide, approved=approved)

    p = sub.add_parser("conformance", help="run the conformance suite against a backend",
                       description="Run every conformance scenario on TARGET and on the reference engine, "
                       "compare their normalized traces, print a backend x scenario matrix and write it as "
                       "JSON. TARGET is a backend URL, or an engine name (memory, dbos+sqlite, "
                       "dbos+postgresql, temporal, restate) to start a throwaway local engine for the run. "
                       "A scenario a backend declares in Capabilities.known_failures runs as a strict expected "
                       "failure (XFAIL; XPASS the day it passes): the run stays green, the verdict says NOT "
                       "CONFORMANT. Exit status: 0 nothing unexpected, 1 a FAIL, ERROR or XPASS (or, with "
                       "--strict, any known failure), 2 bad usage or configuration.")
    p.add_argument("targets", nargs="*", metavar="TARGET",
                   help="a backend URL of a running engine (dbos+postgresql://..., temporal://..., a third-party "
                   "scheme), or an engine name whose dev server the suite starts (repeatable)")
    p.add_argument("-k", "--scenario", action="append", default=[], metavar="NAME",
                   help="run only these scenarios (repeatable; substring match)")
    p.add_argument("--output", default="conformance-matrix.json", metavar="FILE", help="JSON matrix path")
    p.add_argument("--json", action="store_true", help="print the matrix as JSON")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit (no TARGET needed)")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 on a declared known failure too (it keeps the run green otherwise)")
    p.set_defaults(func=commands.conformance)

    p = sub.add_parser("bench", help="run the benchmarks (from a source checkout)",
                       description="Run benchmarks/run.py: per-step overhead vs the raw SDKs, agent turn vs "
                       "the engines' own agent runners, recovery after SIGKILL, resume cost vs history length, "
                       "throughput and memory per run; writes docs/benchmarks.md (with --quick: under "
                       "./.perdure/bench/). Needs a source checkout.")
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run in a few minutes")
    p.add_argument("--engines", metavar="LIST", help="comma-separated engines (default: all installed)")
    p.add_argument("--families", metavar="LIST", help="comma-separated: steps,agent,recovery,resume,throughput")
    p.add_argument("--output-dir", metavar="DIR",
                   help="where to write the report (default: docs/; ./.perdure/bench/ with --quick)")
    p.set_defaults(func=commands.bench)

    p = sub.add_parser("demo", help="the crash-and-resume demo",
                       description="Run an agent-shaped workflow (a scripted model step, tools, an approval) "
                       "in a worker process, SIGKILL the worker mid-run, start a new one and show which steps "
                       "were replayed from the journal and which ran.")
    p.add_argument("url", nargs="?", metavar="URL",
                   help="backend (default: dbos+sqlite in ./.perdure/, or memory:// if DBOS is not installed)")
    p.add_argument("--workdir", default=".perdure", help="where the demo keeps its files")
    p.set_defaults(func=commands.demo)

    p = sub.add_parser("dev", help="run a throwaway local engine server until Ctrl-C",
                       description="Start ENGINE (temporal, restate, dbos+postgresql, dbos+sqlite) on "
                       "loopback, print its backend URL, and stop it on Ctrl-C.")
    p.add_argument("engine", metavar="ENGINE")
    p.add_argument("--workdir", default=".perdure/dev", help="where the engine keeps its state")
    p.set_defaults(func=commands.dev)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = asyncio.run(args.func(args)) if asyncio.iscoroutinefunction(args.func) else args.func(args)
    except KeyboardInterrupt:
        code = 130
    except PerdureError as exc:
        print(f"perdure: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 2
    sys.stdout.flush()
    sys.stderr.flush()
    if "temporalio" in sys.modules:
        # The Temporal SDK sometimes crashes while the interpreter tears down (see ENGINES.md): skip it.
        os._exit(code or 0)
    sys.exit(code or 0)

"""The ``perdure`` subcommands. Each returns the process exit code."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pydantic_core

from ..core.backend import redact_url
from ..core.client import Client
from ..core.config import backend_class, resolve_url
from ..core.errors import (
    ConfigurationError,
    InvalidArgumentError,
    ResultTimeoutError,
    RunCancelledError,
    RunFailedError,
    WorkflowNotFoundError,
)
from ..core.registry import workflows
from ..core.types import RunInfo, StepRecord
from ..core.worker import import_apps, serve


def _print_json(data: Any) -> None:
    # NaN and infinities as the strings "NaN", "Infinity", "-Infinity": JSON has no such numbers, and
    # --json output must parse with any JSON parser.
    print(pydantic_core.to_json(data, indent=2, inf_nan_mode="strings", fallback=str).decode())


def _fmt_time(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _short(value: Any, width: int = 60) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


def print_run(info: RunInfo) -> None:
    print(f"run       {info.run_id}")
    print(f"workflow  {info.workflow}")
    print(f"status    {info.status.value}")
    print(f"created   {_fmt_time(info.created_at)}")
    if info.output is not None:
        print(f"output    {_short(info.output, 200)}")
    if info.error is not None:
        print(f"error     {info.error.type}: {info.error.message}")
    p = info.pending_approval
    if p is not None:
        print(f"waiting   approval {p.approval_id!r} ({p.name})")
        print(f"  payload   {_short(p.payload, 200)}")
        print(f"  digest    {p.digest}")
        print(f"  deadline  {_fmt_time(p.deadline) if p.deadline else 'none'}")
        print(f"  decide    perdure approve {info.run_id} {p.approval_id}   |   perdure reject {info.run_id} {p.approval_id}")


def print_steps(records: list[StepRecord]) -> None:
    print(f"{'pos':>3}  {'kind':<8} {'status':<9} {'att':>3}  {'name':<34} output / error")
    for r in records:
        detail = f"{r.error.type}: {r.error.message}" if r.error else _short(r.output)
        print(f"{r.position:>3}  {r.kind.value:<8} {r.status.value:<9} {r.attempts:>3}  {r.name:<34} {detail}")


def _import_apps(modules: list[str]) -> None:
    """Import the --app modules as ``python -m`` would find them: from the current directory first (the
    ``perdure`` script's own folder is what Python puts on sys.path otherwise)."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    import_apps(modules)


async def worker(args: argparse.Namespace) -> int:
    url = resolve_url(args.url)
    if url.startswith("memory:"):
        raise ConfigurationError(
            "memory:// keeps its state inside one process, so a separate worker cannot reach it; use it in "
            "tests and `perdure demo memory://`, or pick a durable backend (dbos+sqlite:///app.sqlite)"
        )
    _import_apps(args.app)
    if not workflows():
        print("perdure worker: no workflow is registered (no --app MODULE given, or it defines none): every "
              "run this worker takes will fail with WorkflowNotFoundError", file=sys.stderr, flush=True)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)

    def ready() -> None:
        print(f"perdure worker ready on {redact_url(url)} (pid {__import__('os').getpid()})", flush=True)

    try:
        await serve(url, ready=ready)  # the apps are imported above
    except asyncio.CancelledError:
        print("perdure worker stopped", flush=True)
    return 0


def _parse_kwargs(pairs: list[str]) -> dict[str, Any]:
    kwargs = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name.isidentifier():
            raise InvalidArgumentError(f"--arg takes NAME=JSON, got {pair!r}")
        if name == "run_id":  # reserved (no workflow parameter has this name): the run's id
            raise InvalidArgumentError("--arg run_id=...: the run's id is given with --run-id ID")
        try:
            kwargs[name] = json.loads(raw)
        except json.JSONDecodeError:
            raise InvalidArgumentError(
                f"--arg {name}: {raw!r} is not JSON (strings need quotes: --arg {name}='\"text\"')"
            ) from None
    return kwargs


async def start(args: argparse.Namespace) -> int:
    _import_apps(args.app)
    if args.app and args.workflow not in workflows():
        known = ", ".join(sorted(workflows())) or "none"
        raise WorkflowNotFoundError(
            f"no workflow named {args.workflow!r} in {', '.join(args.app)} (registered: {known})"
        )
    async with Client(args.backend) as client:
        run_id = await client.start(args.workflow, run_id=args.run_id, **_parse_kwargs(args.arg))
        info = await client.status(run_id)
    if args.json:
        _print_json(info.model_dump(mode="json"))
    else:
        print(f"started {run_id} ({info.status.value})")
    return 0


async def status(args: argparse.Namespace) -> int:
    async with Client(args.backend) as client:
        info = await client.status(args.run_id)
    _print_json(info.model_dump(mode="json")) if args.json else print_run(info)
    return 0


async def steps(args: argparse.Namespace) -> int:
    async with Client(args.backend) as client:
        records = await client.steps(args.run_id)
    _print_json([r.model_dump(mode="json") for r in records]) if args.json else print_steps(records)
    return 0


async def result(args: argparse.Namespace) -> int:
    async with Client(args.backend) as client:
        try:
            output = await client.result(args.run_id, timeout=args.timeout)
        except (RunFailedError, RunCancelledError) as exc:
            print(f"perdure: {exc}", file=sys.stderr)
            return 1
        except ResultTimeoutError as exc:
            print(f"perdure: {exc}", file=sys.stderr)
            return 3
    _print_json(output) if args.json else print(output if isinstance(output, str) else json.dumps(output, default=str))
    return 0


async def runs(args: argparse.Namespace) -> int:
    async with Client(args.backend) as client:
        infos = await client.runs(args.limit)
    if args.json:
        _print_json([i.model_dump(mode="json") for i in infos])
        return 0
    print(f"{'run':<38} {'status':<10} {'created':<20} workflow")
    for i in infos:
        print(f"{i.run_id:<38} {i.status.value:<10} {_fmt_time(i.created_at):<20} {i.workflow}")
    return 0


async def cancel(args: argparse.Namespace) -> int:
    async with Client(args.backend) as client:
        await client.cancel(args.run_id)
        info = await client.status(args.run_id)
    _print_json(info.model_dump(mode="json")) if args.json else print(f"{args.run_id}: {info.status.value}")
    return 0


async def decide(args: argparse.Namespace) -> int:
    data = None
    if args.data is not None:
        try:
            data = json.loads(args.data)
        except json.JSONDecodeError:
            raise InvalidArgumentError(f"--data must be JSON, got {args.data!r}") from None
    async with Client(args.backend) as client:
        method = client.approve if args.approved else client.reject
        await method(args.run_id, args.approval_id, by=args.by, comment=args.comment, data=data, digest=args.digest)
    verb = "approved" if args.approved else "rejected"
    _print_json({"run_id": args.run_id, "approval_id": args.approval_id, verb: True}) if args.json else print(
        f"{verb} {args.approval_id} of {args.run_id}"
    )
    return 0


def conformance(args: argparse.Namespace) -> int:
    from ..conformance.runner import cli_main

    return cli_main(args)


def bench(args: argparse.Namespace) -> int:
    from .bench import bench as run_bench

    argv = ["--quick"] if args.quick else []
    for option in ("engines", "families", "output_dir"):
        value = getattr(args, option)
        if value:
            argv += [f"--{option.replace('_', '-')}", value]
    return run_bench(argv)


def demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.url, Path(args.workdir))


def dev(args: argparse.Namespace) -> int:
    scheme, _, rest = args.engine.partition("://")
    scheme = scheme.lower()
    if rest:  # the server picks its own free loopback port and state folder; an address here would be ignored
        raise ConfigurationError(
            f"perdure dev takes an engine name ({scheme}), not a URL: it starts a server on a free loopback "
            f"port under --workdir and prints the URL to use. To use a running server, pass {args.engine} "
            "to the other commands instead"
        )
    server = backend_class(scheme).dev_server(scheme, Path(args.workdir).resolve())
    if server is None:
        raise ConfigurationError(f"{scheme}:// has no local dev server to start")
    url = server.start()
    print(f"{scheme} is running: PERDURE_BACKEND={url}", flush=True)
    print("Ctrl-C to stop", flush=True)
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        server.stop()
    return 0

"""The README's main job: ``perdure demo`` crashes a worker mid-run and a new one resumes it.

On dbos+sqlite (the default) the worker is a real process, SIGKILLed; on memory:// the crash is simulated.
The agent examples run the same way. Each asserts what the demo claims: completed steps were replayed,
not re-run; only the step in flight ran again; the side effect happened once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _run(args: list[str], cwd: Path) -> str:
    out = subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                         env={k: v for k, v in os.environ.items() if k != "PERDURE_BACKEND"})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


@pytest.mark.parametrize("backend", ["dbos+sqlite (default)", "memory://"])
def test_perdure_demo_crashes_and_resumes(backend: str, tmp_path: Path) -> None:
    args = ["perdure", "demo", "--workdir", str(tmp_path / "demo")]
    if backend == "memory://":
        args.insert(2, backend)
    out = _run(args, tmp_path)
    assert ("SIGKILL: worker 1" in out) == (backend != "memory://")
    assert "replayed without running again: model (turn 1), search" in out
    assert "re-executed because it was in flight: model (turn 2)" in out
    assert "posts in the outbox: 1" in out
    assert '"published": true' in out


def test_openai_agents_example(tmp_path: Path) -> None:
    out = _run(["perdure.examples.openai_research_agent", "--backend", "memory://ex", "--workdir",
                str(tmp_path / "ex")], tmp_path)
    assert "posts published: 1" in out


def test_langgraph_example(tmp_path: Path) -> None:
    out = _run(["perdure.examples.langgraph_agent", "--engine", "memory"], tmp_path)
    assert "refunds at the payment provider: 1" in out

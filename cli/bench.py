"""``perdure bench``: run the benchmarks (benchmarks/run.py) of a source checkout.

The benchmarks are not part of the installed package (they need every engine, the peers' agent
integrations and a few minutes of a quiet machine), so this command finds them next to the package
source -- an editable install or a checkout on ``sys.path`` -- and says so plainly when they are absent.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # the repository root is the package root


def find_runner() -> Path | None:
    """benchmarks/run.py of the source checkout this perdure was imported from, if there is one."""
    candidate = PACKAGE_ROOT / "benchmarks" / "run.py"
    return candidate if candidate.is_file() else None


def bench(args: Sequence[str]) -> int:
    """Run benchmarks/run.py with ``args`` (its own options: --quick, --engines, --families, --output-dir)."""
    runner = find_runner()
    if runner is None:
        print(
            "perdure bench: the benchmarks live in the source repository (benchmarks/run.py) and are not "
            f"installed with the package (looked in {PACKAGE_ROOT / 'benchmarks'}). Clone the repository, "
            "`pip install -e '.[bench]'`, then run `perdure bench` or `python benchmarks/run.py` there.",
            file=sys.stderr,
        )
        return 2
    sys.stdout.flush()
    return subprocess.call([sys.executable, str(runner), *args], env=dict(os.environ))

"""Ending a process that used the Temporal SDK.

The SDK's Rust core keeps threads that call back into Python; at interpreter exit they sometimes run
while Python is finalizing and the process dies with a segfault or a ``PyGILState_Release`` fatal error
(measured here: about 1 worker run in 7). The work is done by then, but the exit status lies and CI
turns red. The cure is to skip finalization: flush what the process wrote and leave with ``os._exit``.
Workers (``perdure worker``), CLI commands that talked to Temporal, and test processes should end this way.
"""

from __future__ import annotations

import os
import sys


def hard_exit(code: int = 0) -> None:
    """Flush stdout/stderr and end the process now with ``code`` (no interpreter finalization)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed or broken pipe must not change the exit status
            pass
    os._exit(code)

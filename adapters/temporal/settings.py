"""The ``temporal://`` URL and the timeouts perdure sets on Temporal (production and test profiles).

``temporal://host:port/namespace?task_queue=perdure&profile=production&steps=activity&sandbox=off``

Why the two profiles differ: every timeout below is how long Temporal waits before it *believes* a
worker is gone. In production a false belief is expensive (a slow but live step runs twice, a busy
worker loses its cached workflows), so the waits are Temporal's own defaults or close to them. The
conformance suite SIGKILLs workers dozens of times and must recover within 2 s, on a loaded 2-core CI
machine, so the test profile shortens exactly the waits that stand between a kill and the next step:

* ``heartbeat_timeout`` -- a killed worker's in-flight step is noticed when its heartbeats stop
  (production 30 s; test 1 s). Steps heartbeat automatically, several times per timeout.
* ``crash_retry_interval`` -- Temporal's retry delay after a *timeout* (a dead worker). The delays
  between failed attempts of a step are perdure's own ``RetryPolicy`` (sent as ``next_retry_delay``),
  so this only shapes crash recovery (production 1 s; test 0.05 s).
* ``sticky_timeout`` -- workflow tasks go first to the queue of the worker that cached the run; when that
  worker is dead Temporal waits this long before giving the task to anyone (Temporal default 10 s, kept
  in production; test 0.5 s).
* ``workflow_task_timeout`` -- a worker killed *while* running workflow code holds its task until this
  expires (Temporal default 10 s, kept in production; test 1 s).
* ``step_timeout`` -- the longest a single attempt of a step may run (start-to-close), the guard against
  a live step that hangs (production 1 h; test 5 min).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Literal
from urllib.parse import parse_qs

from ...core.errors import InvalidBackendURLError

PROFILE_ENV = "PERDURE_TEMPORAL_PROFILE"
DEFAULT_TASK_QUEUE = "perdure"
DEFAULT_PORT = 7233


@dataclass(frozen=True)
class Profile:
    """The waits described in the module docstring, in seconds."""

    name: str
    heartbeat_timeout: float
    crash_retry_interval: float
    crash_retry_max_interval: float
    sticky_timeout: float
    workflow_task_timeout: float
    step_timeout: float


PROFILES: dict[str, Profile] = {
    "production": Profile("production", 30.0, 1.0, 30.0, 10.0, 10.0, 3600.0),
    "test": Profile("test", 1.0, 0.05, 0.5, 0.5, 1.0, 300.0),
}


@dataclass(frozen=True)
class TemporalSettings:
    """Everything a ``temporal://`` URL says.

    ``steps``: ``activity`` runs every step as a regular activity (its own task, any worker, heartbeats:
    the right default for LLM calls and tools); ``local`` runs steps as local activities inside the
    workflow task of the worker that runs the workflow -- about 10x cheaper per step, at the price of
    no heartbeats and re-running all local steps of a workflow task that was lost with its worker.
    ``sandbox``: ``off`` (default) runs workflow code with Temporal's unsandboxed runner (perdure already
    routes time, randomness and I/O through recorded steps, and agent frameworks do not import inside
    Temporal's sandbox); ``on`` uses Temporal's sandbox with perdure, pydantic and the app modules passed
    through, for users who want Temporal to police their workflow code too.
    """

    address: str
    namespace: str
    task_queue: str
    profile: Profile
    steps: Literal["activity", "local"] = "activity"
    sandbox: bool = False

    def with_profile(self, name: str) -> TemporalSettings:
        return replace(self, profile=_profile(name))


def _profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise InvalidBackendURLError(f"unknown Temporal profile {name!r}; use one of {', '.join(PROFILES)}") from None


def _one(query: dict[str, list[str]], key: str, default: str) -> str:
    values = query.pop(key, [default])
    return values[-1]


def parse_settings(url: str, host: str | None, port: int | None, path: str, query_text: str) -> TemporalSettings:
    """Settings from a parsed ``temporal://`` URL (``PERDURE_TEMPORAL_PROFILE`` picks the profile when the
    URL does not, so worker processes started by the test harness inherit it)."""
    query = parse_qs(query_text, keep_blank_values=True)
    namespace = path.strip("/") or "default"
    if "/" in namespace:
        raise InvalidBackendURLError(f"{url!r}: the path is the namespace, e.g. temporal://127.0.0.1:7233/default")
    task_queue = _one(query, "task_queue", DEFAULT_TASK_QUEUE)
    profile = _one(query, "profile", os.environ.get(PROFILE_ENV) or "production")
    steps = _one(query, "steps", "activity")
    if steps not in ("activity", "local"):
        raise InvalidBackendURLError(f"{url!r}: steps= must be 'activity' or 'local', got {steps!r}")
    sandbox = _one(query, "sandbox", "off")
    if sandbox not in ("on", "off"):
        raise InvalidBackendURLError(f"{url!r}: sandbox= must be 'on' or 'off', got {sandbox!r}")
    if query:
        raise InvalidBackendURLError(
            f"{url!r}: unknown option(s) {', '.join(sorted(query))}; known: task_queue, profile, steps, sandbox"
        )
    if not task_queue:
        raise InvalidBackendURLError(f"{url!r}: task_queue= must not be empty")
    return TemporalSettings(
        address=f"{host or '127.0.0.1'}:{port or DEFAULT_PORT}",
        namespace=namespace,
        task_queue=task_queue,
        profile=_profile(profile),
        steps=steps,  # type: ignore[arg-type]
        sandbox=sandbox == "on",
    )

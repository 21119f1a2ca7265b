"""The ``temporal://`` URL and the timeouts perdure sets on Temporal (production and test profiles).

``temporal://host:port/namespace?task_queue=perdure&profile=production&steps=activity``

Why the two profiles differ: every timeout below is how long Temporal waits before it *believes* a
worker is gone. In production a false belief is expensive (a slow but live step runs twice, a busy
worker loses its cached workflows), so the waits are Temporal's own defaults or close to them. The
conformance suite SIGKILLs workers dozens of times and must recover within 2 s, on a loaded 2-core CI
machine, so the test profile shortens exactly the waits that stand between a kill and the next step:

* ``heartbeat_timeout`` -- a killed worker's in-flight step is noticed when its heartbeats stop
  (production 30 s; test 1 s). Steps heartbeat automatically, four times per timeout (a step that ends
  sooner sends none: Temporal times a silent attempt from its start).
* ``crash_retry_interval`` -- Temporal's retry delay after a *timeout* (a dead worker). The delays
  between failed attempts of a step are perdure's own ``RetryPolicy`` (sent as ``next_retry_delay``),
  so this only shapes crash recovery (production 1 s; test 0.05 s).
* ``max_cached_workflows`` / ``sticky_timeout`` -- a worker caches the runs it executes, and Temporal
  sends their next workflow task to that worker's own (sticky) queue first. When that worker is dead,
  the server keeps choosing its sticky queue for seconds after its last poll, and each such task waits
  ``sticky_timeout`` (at least 1 s in practice) before any worker may take it: a hidden stall after
  every kill (measured: a durable sleep ended 1.3 s late on a new worker with a 0.5 s setting). Production keeps Temporal's defaults (cache 1000 runs, 10 s):
  the cache saves a full history replay on every workflow task. The test profile caches nothing
  (``max_cached_workflows=0``), so every task goes to the shared queue and recovery has no stall; each
  workflow task then replays the run's history, which for test-sized runs costs a few milliseconds.
* ``workflow_task_timeout`` -- a worker killed *while* running workflow code holds its task until this
  expires (Temporal default 10 s, kept in production; test 2 s: with no cache every workflow task replays
  the whole history, which must fit in it on a loaded machine).
* ``step_timeout`` -- the longest a single attempt of a step may run (start-to-close), the guard against
  a live step that hangs (production 1 h; test 5 min).

Server side, the dev server perdure starts also makes Temporal's timers fire on time (see
``devserver.DEV_DYNAMIC_CONFIG``); on a production cluster that is the operator's setting.
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
    max_cached_workflows: int
    sticky_timeout: float
    workflow_task_timeout: float
    step_timeout: float


PROFILES: dict[str, Profile] = {
    "production": Profile("production", 30.0, 1.0, 30.0, 1000, 10.0, 10.0, 3600.0),
    "test": Profile("test", 1.0, 0.05, 0.5, 0, 1.0, 2.0, 300.0),
}


@dataclass(frozen=True)
class TemporalSettings:
    """Everything a ``temporal://`` URL says.

    ``steps``: ``activity`` runs every step as a regular activity (its own task, any worker, heartbeats:
    the right default for LLM calls and tools); ``local`` runs steps as local activities inside the
    workflow task of the worker that runs the workflow -- about 10x cheaper per step, at the price of
    no heartbeats and re-running all local steps of a workflow task that was lost with its worker.
    """

    address: str
    namespace: str
    task_queue: str
    profile: Profile
    steps: Literal["activity", "local"] = "activity"

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
    if query:
        raise InvalidBackendURLError(
            f"{url!r}: unknown option(s) {', '.join(sorted(query))}; known: task_queue, profile, steps"
        )
    if not task_queue:
        raise InvalidBackendURLError(f"{url!r}: task_queue= must not be empty")
    return TemporalSettings(
        address=f"{host or '127.0.0.1'}:{port or DEFAULT_PORT}",
        namespace=namespace,
        task_queue=task_queue,
        profile=_profile(profile),
        steps=steps,  # type: ignore[arg-type]
    )

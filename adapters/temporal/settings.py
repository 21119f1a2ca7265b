"""The ``temporal://`` URL and the timeouts perdure sets on Temporal (production and test profiles).

``temporal://host:port/namespace?task_queue=perdure&profile=production&steps=activity``
(and, rarely needed, ``&step_timeout=SECONDS``, below, and ``&continue_as_new_after=N&max_carry_bytes=B``:
see :mod:`.continuation`)

Why the two profiles differ: every timeout below is how long Temporal waits before it *believes* a
worker is gone. In production a false belief is expensive (a slow but live step runs twice, a busy
worker loses its cached workflows), so the waits are Temporal's own defaults or close to them. The
conformance suite SIGKILLs workers dozens of times, and a killed step should run again within 1 s on a
loaded 2-core CI machine, so the test profile shortens exactly the waits that stand between a kill and
the next step:

* ``heartbeat_timeout`` -- a killed worker's in-flight step is noticed when its heartbeats stop
  (production 30 s; test 0.4 s). Steps heartbeat automatically, four times per timeout (a step that ends
  sooner sends none: Temporal times a silent attempt from its start). The SDK forwards heartbeats to the
  server at most every ``heartbeat_throttle`` (its default: 80 % of the timeout, which leaves a live
  step only 20 % of the timeout for a late beat); the test profile sends them every 0.1 s, so a live
  step survives a 0.3 s stall of its worker (the 1 s profile before survived 0.2 s).
* ``crash_retry_interval`` -- Temporal's retry delay after a *timeout* (a dead worker). The delays
  between failed attempts of a step are perdure's own ``RetryPolicy`` (sent as ``next_retry_delay``),
  so this only shapes crash recovery (production 1 s; test 0.02 s).
* ``max_cached_workflows`` / ``sticky_timeout`` -- a worker caches the runs it executes (1000), and
  Temporal sends their next workflow task to that worker's own (sticky) queue first. When that worker is
  dead, each such task waits ``sticky_timeout`` before it moves to the shared queue, once per run (the
  server then forgets the dead worker's queue for that run). Production keeps Temporal's default, 10 s;
  the test profile waits 0.2 s. Without the cache every workflow task would replay the run's whole
  history: building a run of n activity steps would cost O(n^2) (300 steps took 68 s, with the cache 14 s).
  A killed worker's *step* (an activity) is retried on the shared activity queue, sticky or not: only
  the workflow task after it waits.
* ``workflow_task_timeout`` -- a worker killed *while* running workflow code holds its task until this
  expires (Temporal default 10 s, kept in production; test 0.5 s). With ``steps=local`` that is every
  kill inside a step: a local activity runs inside its workflow task, so it runs again only when the task
  times out. A task -- including the replay of a resumed run, bounded by continue-as-new -- must fit in
  it; a task that does not is retried.
* ``step_timeout`` -- the longest a single attempt of a step may run, the guard against a live step that
  hangs (production 1 h; test 5 min; ``&step_timeout=SECONDS`` in the worker's URL overrides both).
  perdure enforces it inside the attempt: past it the body is cancelled and the attempt fails with
  ``StepTimeoutError``, retried by the step's ``RetryPolicy`` like any failure. Temporal's own
  start-to-close timeout is set ``STEP_TIMEOUT_GRACE`` (10 s) later, as the backstop for an attempt that cannot
  report (its event loop held); an attempt Temporal times out counts as one lost with its worker.
* ``continue_as_new_after`` -- operations (steps, sleeps, approvals) per Temporal run before the run
  continues as new, carrying its journal (see :mod:`.continuation`). It bounds what a worker replays
  when it resumes a run (~0.7-1.4 ms per operation here), which must fit in the workflow task timeout
  with room to spare on a loaded machine: production 500 (<= ~0.7 s of 10 s), test 100 (<= ~0.15 s of
  0.5 s; measured with 500: a run killed 499 steps into a Temporal run took 3.6 s to resume under load,
  its replay timing out). A run keeps the value it was started with. Temporal starts the next run of a
  workflow id no sooner than 1 s after the previous one started (``history.workflowIdReuseMinimalInterval``),
  so a Temporal run lasts at least a second.

Server side, the dev server perdure starts also makes Temporal's timers fire on time (see
``devserver.DEV_DYNAMIC_CONFIG``); on a production cluster that is the operator's setting.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Literal
from urllib.parse import parse_qs

from ...core.backend import redact_url, seconds_option
from ...core.errors import InvalidBackendURLError
from .continuation import DEFAULT_MAX_CARRY_BYTES, RunState

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
    continue_as_new_after: int
    heartbeat_throttle: float | None = None  # None: the SDK's default (80 % of the heartbeat timeout)


PROFILES: dict[str, Profile] = {
    "production": Profile("production", 30.0, 1.0, 30.0, 1000, 10.0, 10.0, 3600.0, 500),
    "test": Profile("test", 0.4, 0.02, 0.5, 1000, 0.2, 0.5, 300.0, 100, heartbeat_throttle=0.1),
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
    continue_as_new_after: int | None = None  # None: the profile's
    max_carry_bytes: int = DEFAULT_MAX_CARRY_BYTES
    step_timeout: float | None = None  # None: the profile's

    @property
    def attempt_timeout(self) -> float:
        """The longest one attempt of a step may run, in seconds (the URL's ``step_timeout``, else the profile's)."""
        return self.profile.step_timeout if self.step_timeout is None else self.step_timeout

    def with_profile(self, name: str) -> TemporalSettings:
        return replace(self, profile=_profile(name))

    def run_state(self) -> RunState:
        """The continue-as-new policy of the runs this client starts (it travels with each run)."""
        after = self.profile.continue_as_new_after if self.continue_as_new_after is None else self.continue_as_new_after
        return RunState(continue_as_new_after=after, max_carry_bytes=self.max_carry_bytes)


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
        raise InvalidBackendURLError(f"{redact_url(url)!r}: the path is the namespace, e.g. temporal://127.0.0.1:7233/default")
    task_queue = _one(query, "task_queue", DEFAULT_TASK_QUEUE)
    profile = _one(query, "profile", os.environ.get(PROFILE_ENV) or "production")
    steps = _one(query, "steps", "activity")
    if steps not in ("activity", "local"):
        raise InvalidBackendURLError(f"{redact_url(url)!r}: steps= must be 'activity' or 'local', got {steps!r}")
    after = _count(url, query, "continue_as_new_after", None)
    carry = _count(url, query, "max_carry_bytes", DEFAULT_MAX_CARRY_BYTES)
    step_timeout = seconds_option(url, query, "step_timeout")
    if query:
        raise InvalidBackendURLError(
            f"{redact_url(url)!r}: unknown option(s) {', '.join(sorted(query))}; known: task_queue, profile, steps, "
            "step_timeout, continue_as_new_after, max_carry_bytes"
        )
    if not task_queue:
        raise InvalidBackendURLError(f"{redact_url(url)!r}: task_queue= must not be empty")
    if "'" in task_queue or "\\" in task_queue:  # it goes into visibility queries as a quoted literal
        raise InvalidBackendURLError(f"{redact_url(url)!r}: task_queue= must not contain a quote or a backslash")
    return TemporalSettings(
        address=f"{host or '127.0.0.1'}:{port or DEFAULT_PORT}",
        namespace=namespace,
        task_queue=task_queue,
        profile=_profile(profile),
        steps=steps,  # type: ignore[arg-type]
        continue_as_new_after=after,
        max_carry_bytes=carry if carry is not None else DEFAULT_MAX_CARRY_BYTES,
        step_timeout=step_timeout,
    )


def _count(url: str, query: dict[str, list[str]], key: str, default: int | None) -> int | None:
    if key not in query:
        return default
    text = _one(query, key, "")
    if not text.isdigit():
        raise InvalidBackendURLError(f"{redact_url(url)!r}: {key}= must be a whole number >= 0, got {text!r}")
    return int(text)

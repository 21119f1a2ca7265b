"""The one activity that runs every perdure step and tool: ``perdure.step``.

Each Temporal attempt runs one perdure attempt (``execute_attempt``). perdure's ``RetryPolicy`` is kept
with Temporal's native retries:

* a retryable failure raises an ``ApplicationError`` with ``next_retry_delay`` = perdure's delay for that
  attempt, so the Temporal server schedules the retry exactly as perdure's policy says;
* a failure that must not be retried (``PermanentError``, ``non_retryable`` types, serialization errors)
  or the failure of the last attempt is *returned* as perdure's failure envelope, so the workflow raises
  ``StepFailedError`` with the original type and message -- on every engine the same way;
* a worker killed mid-attempt is noticed by the heartbeat timeout and the step runs again on another
  worker. As on the memory engine, perdure's attempt count restarts after a crash: the attempt number is
  carried in heartbeat details (``running`` while the body runs, ``failed`` just before a retryable
  failure), so an attempt that follows a ``running`` one knows its predecessor died rather than failed.
  (An attempt killed before its first heartbeat is not seen, and the count goes on from the last failure.)
* an attempt that runs past the worker's ``step_timeout`` (settings.py) is cancelled by perdure and fails
  with ``StepTimeoutError``, an ordinary failure under the step's policy. (Before, Temporal's start-to-close
  cut it off, the next attempt took it for a crash, and a step always slower than the timeout ran again
  and again, never failing.)

Heartbeats are automatic (a background task beats several times per heartbeat timeout), so step code
never calls Temporal. A step that blocks the event loop (sync code inside ``async def``) starves them,
and past the heartbeat timeout Temporal believes the worker dead and runs the step again, though the
first attempt is alive: the worker logs a warning when a beat comes late by half the timeout or more.
Write blocking steps as plain ``def`` (they run in a thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from ...core.backend import STEP_TIMEOUT_GRACE
from ...core.registry import get_step
from ...core.runtime import execute_attempt
from .payloads import STEP_ACTIVITY, decode_call, raw

log = logging.getLogger("perdure.temporal")


def _attempt(info: activity.Info) -> int:
    """perdure's attempt number for this Temporal attempt (see the module docstring)."""
    if info.is_local:
        return info.attempt  # a lost local activity is re-run from attempt 1 with its workflow task
    details: Any = info.heartbeat_details[0] if info.heartbeat_details else None
    if isinstance(details, dict) and details.get("phase") == "failed":
        return int(details.get("attempt", 0)) + 1
    return 1  # first attempt, or the previous one died with its worker


def _attempt_timeout(info: activity.Info) -> float | None:
    """perdure's step timeout for this attempt: the start-to-close the workflow scheduled it with, less the
    grace that lets perdure's timeout fire first (settings.py). (perdure never schedules one within the
    grace; for such a timeout, Temporal's alone applies.)"""
    scheduled = info.start_to_close_timeout
    if scheduled is None:
        return None
    seconds = scheduled.total_seconds() - STEP_TIMEOUT_GRACE
    return seconds if seconds > 0 else None


class _Heartbeats:
    """Beats ``every`` seconds while an attempt runs, and notices when its event loop let none through."""

    def __init__(self, details: dict[str, Any], timeout: float, step: str) -> None:
        self.loop = asyncio.get_running_loop()
        self.details, self.timeout, self.step = details, timeout, step
        self.every = max(timeout / 4, 0.01)
        self.last = self.loop.time()  # the attempt's start, then each beat
        self.warned = False
        self.task = self.loop.create_task(self._beat())

    async def _beat(self) -> None:
        # The first beat waits too: most steps finish well within a heartbeat timeout and never send one
        # (Temporal times a silent attempt from its start, so a dead worker is noticed all the same).
        while True:
            await asyncio.sleep(self.every)
            self._check()
            activity.heartbeat(self.details)

    def _check(self) -> None:
        now = self.loop.time()
        silent, self.last = now - self.last, now
        if silent >= self.timeout / 2 and not self.warned:  # twice the beat interval: the loop was held
            self.warned = True  # once per attempt: the cause is the same code
            log.warning(
                "perdure: step %r: no heartbeat could be sent for %.2f s, this worker's event loop was blocked; "
                "past the heartbeat timeout (%g s) Temporal runs the step again although this attempt is "
                "alive. Write blocking code as a plain `def` step (it runs in a thread).",
                self.step, silent, self.timeout,
            )

    async def stop(self) -> None:
        self._check()  # a body that never yielded held the loop from start to end
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@activity.defn(name=STEP_ACTIVITY)
async def run_step(call_payload: RawValue) -> RawValue:
    """Run one attempt of the step described by ``call_payload``; returns its envelope JSON."""
    info = activity.info()
    call = decode_call(call_payload)
    attempt = _attempt(info)
    beats: _Heartbeats | None = None
    if not info.is_local and info.heartbeat_timeout:
        beats = _Heartbeats({"phase": "running", "attempt": attempt}, info.heartbeat_timeout.total_seconds(), call.name)
    try:
        outcome = await execute_attempt(call, attempt, _attempt_timeout(info))
    finally:
        if beats is not None:
            await beats.stop()
    if not outcome.retry:
        return raw(outcome.envelope)
    assert outcome.error is not None
    if not info.is_local:
        activity.heartbeat({"phase": "failed", "attempt": attempt})
    delay = get_step(call.name).retry.delay(attempt)
    raise ApplicationError(
        outcome.error.message,
        type=outcome.error.type,
        next_retry_delay=timedelta(seconds=max(delay, 0.001)),  # 0 would mean "unset"
        # perdure retries are expected behaviour: logged at DEBUG by the worker, not as warnings
        category=ApplicationErrorCategory.BENIGN,
    )

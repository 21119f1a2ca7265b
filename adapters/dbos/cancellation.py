"""Waits inside a run (for an approval's decision, in a durable sleep) that end when the run is cancelled.

DBOS checks for cancellation whenever a workflow starts a step; a run that is *waiting* starts none, so
without this a cancelled run's wait would linger in the worker until its deadline (for an approval
without timeout: forever). One poll per interval covers every waiting run of the worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from dbos import DBOSClient
from dbos._error import DBOSWorkflowCancelledError

CANCEL_POLL = 1.0  # seconds between checks for cancelled runs among those waiting

_client: DBOSClient | None = None


def configure(client: DBOSClient | None) -> None:
    """The worker's client for the checks (None when the worker stops)."""
    global _client
    if _client is not None:
        _client.destroy()
    _client = client


class CancelWatch:
    """The waiting runs of this worker's event loop, and one poller that resolves their futures when the
    database says they were cancelled."""

    def __init__(self) -> None:
        self.waiters: dict[str, set[asyncio.Future[None]]] = {}
        self.poller: asyncio.Task[None] | None = None

    def watch(self, run_id: str) -> asyncio.Future[None]:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(run_id, set()).add(waiter)
        if self.poller is None or self.poller.done():
            self.poller = asyncio.get_running_loop().create_task(self._poll())
        return waiter

    def unwatch(self, run_id: str, waiter: asyncio.Future[None]) -> None:
        waiter.cancel()
        waiters = self.waiters.get(run_id)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del self.waiters[run_id]

    async def _poll(self) -> None:
        while self.waiters:
            await asyncio.sleep(CANCEL_POLL)
            client, ids = _client, list(self.waiters)
            if client is None or not ids:
                continue
            try:
                cancelled = await asyncio.to_thread(
                    client.list_workflows, workflow_ids=ids, status="CANCELLED", load_input=False, load_output=False
                )
            except Exception:  # a transient database error: the next poll sees it
                continue
            for status in cancelled:
                for waiter in self.waiters.get(status.workflow_id, ()):
                    if not waiter.done():
                        waiter.set_result(None)


_watch = CancelWatch()


async def unless_cancelled(run_id: str, wait: Awaitable[Any]) -> Any:
    """Await ``wait``; if the run is cancelled meanwhile, stop it and end the run as DBOS does for a
    cancelled workflow (``DBOSWorkflowCancelledError``: nothing more is recorded)."""
    task = asyncio.ensure_future(wait)
    cancelled = _watch.watch(run_id)
    try:
        await asyncio.wait({task, cancelled}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.wait({task})
        raise DBOSWorkflowCancelledError(f"Workflow {run_id} was cancelled while waiting")
    finally:
        _watch.unwatch(run_id, cancelled)
        if not task.done():
            task.cancel()

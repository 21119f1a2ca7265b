"""One waiter per Restate invocation: how concurrent perdure operations wait on Restate without hanging.

Awaiting a Restate future runs the SDK's progress loop (``create_poll_or_cancel_coroutine``), which
takes the invocation's next event -- a chunk from the server, or a "run finished" note -- from one
queue. Two coroutines awaiting two futures at once (``asyncio.gather`` of two steps, parallel tool calls of
an agent, a step raced with a timer) each run that loop on the same queue: an event that completes the
first future can be taken by the loop of the second, which then waits on, while the first never wakes.
Seen here as runs stuck after two parallel steps whose bodies finished at different moments (restate-sdk
1.3: about one run in three with two parallel tool calls on threads). The SDK's own combinators
(``restate.gather`` / ``select``) avoid it by waiting on all their futures in one loop; workflow code
written for perdure uses asyncio's.

So a :class:`Progress` is the only one waiting on the SDK for its invocation: every perdure operation of
the run registers its futures, and one driver runs the SDK's loop on the first-completed of *all* of them
(a list it grows and shrinks between iterations), waking the operations whose futures completed.
A new registration wakes the driver with the same "a run finished" note the SDK uses, so its loop looks
again at the grown list (a run only executes when a loop waiting on it asks the VM to progress).

The driver polls one event-loop turn after the first wait, as the SDK's own await does (it polls in a
task): coroutines started together have then issued their commands, which a replay requires.

``create_poll_or_cancel_coroutine`` and ``receive`` are the SDK's internals (``restate.asyncio`` uses
the first too); ``test_the_restate_sdk_internals_perdure_relies_on_still_hold`` (tests/test_restate_units.py)
fails when an SDK release changes them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from restate.vm import FirstCompletedUnresolvedFuture, SingleUnresolvedFuture, UnresolvedFuture

_WAKE = {"type": "restate.run_completed", "data": None}


class Progress:
    """The waiter of one invocation (``ctx``): see the module docstring.

    Whoever waits first while nobody polls drives, in its own coroutine (no task for a lone step, the
    common case); when its future completes and others still wait, a driver task takes over for them.
    """

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self._leaves: list[UnresolvedFuture] = []
        self._any = FirstCompletedUnresolvedFuture(self._leaves)  # the same list, read at every iteration
        self._waiters: dict[int, tuple[Any, list[asyncio.Future[None]]]] = {}  # handle -> (future, waiters)
        self._driving = False
        self._task: asyncio.Task[None] | None = None  # the driver task, when one took over

    async def wait(self, *futures: Any) -> None:
        """Return once one of ``futures`` (Restate futures of this invocation) is completed."""
        if any(f.is_completed() for f in futures):
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for f in futures:
            entry = self._waiters.get(f.handle)
            if entry is None:
                self._waiters[f.handle] = (f, [done])
                self._leaves.append(SingleUnresolvedFuture(f.handle))
            else:
                entry[1].append(done)
        if not self._driving:
            await self._drive(done)
            return
        await self.ctx.receive.enqueue_restate_event(_WAKE)  # the driver looks again, at the grown list
        try:
            await done
        finally:
            if not done.done():  # cancelled: stop waiting for what only this caller wanted
                self._forget(futures, done)
                if not self._waiters and self._task is not None:
                    # As the SDK's own loop is cancelled with the coroutine awaiting it.
                    self._task.cancel()
                    self._task = None
                    self._driving = False

    async def _drive(self, done: asyncio.Future[None] | None) -> None:
        """Poll until ``done`` (None: until nobody waits), then hand over to a task if others still wait."""
        self._driving = True
        mine = asyncio.current_task()
        try:
            # Poll only once the coroutines started with this one (asyncio.gather) have issued their
            # commands, as the SDK's own await does (it polls in a task of its own): on a replay, polling
            # earlier would await a command the journal recorded after others -- a journal mismatch.
            await asyncio.sleep(0)
            while self._waiters if done is None else not done.done():
                await self.ctx.create_poll_or_cancel_coroutine(self._any)
                self._settle()
        except BaseException as exc:
            if done is None and self._task is not mine:
                return  # a task stopped by wait() (its last waiter gone); a newer driver may serve newer ones
            if isinstance(exc, asyncio.CancelledError) and done is not None:
                self._forget([f for f, w in self._waiters.values() if done in w], done)
            else:  # suspension, Restate's cancellation, a lost connection: the SDK raises it in every waiter
                self._fail_all(exc, done)
            if done is not None:
                raise
        finally:
            if done is not None or self._task is mine:
                self._driving = False
                self._task = None
                if self._waiters:  # hand over to a task, for the callers still waiting
                    self._driving = True
                    self._task = asyncio.create_task(self._drive(None))

    def _forget(self, futures: Any, done: asyncio.Future[None]) -> None:
        for f in futures:
            entry = self._waiters.get(f.handle)
            if entry is None:
                continue
            if done in entry[1]:
                entry[1].remove(done)
            if not entry[1]:
                self._drop(f.handle)

    def _drop(self, handle: int) -> None:
        """Stop watching a future nobody waits for."""
        del self._waiters[handle]
        self._leaves.remove(SingleUnresolvedFuture(handle))

    def _settle(self) -> None:
        """Wake the waiters of every completed future, and stop watching what nobody waits for any more
        (the other futures of a woken ``wait(a, b)``: an approval's promise once its timer fired)."""
        for future, waiters in self._waiters.values():
            if future.is_completed():
                for done in waiters:
                    if not done.done():
                        done.set_result(None)
        for handle, (_, waiters) in list(self._waiters.items()):
            waiters[:] = [done for done in waiters if not done.done()]
            if not waiters:
                self._drop(handle)

    def _fail_all(self, exc: BaseException, raised_in: asyncio.Future[None] | None) -> None:
        """Every waiter but ``raised_in`` (the driver's own, which raises ``exc`` itself) gets ``exc``."""
        for _, waiters in self._waiters.values():
            for done in waiters:
                if done.done() or done is raised_in:
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    done.cancel()
                else:
                    done.set_exception(exc)
        self._waiters.clear()
        self._leaves.clear()

"""Checks, in a process of its own, every DBOS assumption of perdure/adapters/dbos/internals.py and replay.py,
and that a sync step body runs as a sync DBOS step (journal.py).

Run by tests/test_dbos_units.py as ``python dbos_internals_check.py SQLITE_PATH``: it launches a perdure
DBOS worker in this process (DBOS is a process-wide singleton, so not in pytest's), runs a perdure run and
a raw DBOS workflow, and exits non-zero with an AssertionError naming the broken assumption. If a DBOS
upgrade fails it, the fast replay or the recovery of dead workers' runs needs adapting before that DBOS
version is allowed in pyproject.toml.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from dbos import DBOS

import perdure
from perdure.adapters.dbos import internals, worker
from perdure.adapters.dbos.backend import DBOSBackend
from perdure.adapters.dbos.replay import NOT_ANSWERED, RecordedRun
from perdure.adapters.dbos.serializer import SERIALIZER, RawJSON

T = TypeVar("T")


@perdure.step(name="check.add")
async def add(x: int) -> dict[str, int]:
    return {"x": x + 1}


@perdure.workflow(name="check.flow")
async def flow() -> int:
    a = await add(1)
    await perdure.sleep(0)
    return (await add(a["x"]))["x"]


async def _step_id() -> int | None:
    return DBOS.step_id


# A sync step body is a sync DBOS step: one hand-off to a DBOS thread for the record check, the body and
# the record (journal.py). Hand-offs are counted as the workflow's own asyncio.to_thread calls.
HANDOFFS: dict[str, Any] = {"task": None, "count": 0}
SEEN: list[dict[str, Any]] = []
_to_thread = asyncio.to_thread


async def _counting_to_thread(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    if asyncio.current_task() is HANDOFFS["task"]:
        HANDOFFS["count"] += 1
    return await _to_thread(func, *args, **kwargs)


@perdure.step(name="check.sync_add", retry=perdure.RetryPolicy(max_attempts=2, initial_interval=0.01))
def sync_add(x: int) -> dict[str, int]:
    SEEN.append({"thread": threading.current_thread() is threading.main_thread(), "step_id": DBOS.step_id,
                 "key": perdure.idempotency_key(), "attempt": perdure.current_step().attempt})
    if len(SEEN) == 1:
        raise ConnectionError("transient")  # perdure's retry loop runs in the same thread
    return {"x": x + 1}


async def _handoffs(call: Callable[[], Awaitable[Any]]) -> int:
    HANDOFFS["task"], HANDOFFS["count"] = asyncio.current_task(), 0
    try:
        await call()
        return int(HANDOFFS["count"])
    finally:
        HANDOFFS["task"] = None


@perdure.workflow(name="check.sync")
async def sync_flow() -> list[int]:
    return [await _handoffs(lambda: sync_add(1)), await _handoffs(lambda: add(1))]


@DBOS.workflow(name="check.reserve")
async def reserve() -> list[Any]:
    """A reservation draws exactly the next step ID; the next step takes the one after; a step run at
    the reservation runs at the reserved ID."""
    reservation = DBOS.reserve_step()
    after = await DBOS.run_step_async({"name": "check.after"}, _step_id)
    at = await reservation.run_async({"name": "check.at"}, _step_id)
    return [reservation.step_id, after, at]


async def main(path: str) -> None:
    backend = DBOSBackend(f"dbos+sqlite:///{path}")
    await asyncio.to_thread(worker.launch, backend.db)
    try:
        async with perdure.Client(backend) as client:
            rid = await client.start(flow)
            assert await client.result(rid, timeout=60) == 3
            dbos_view = client.backend._connect().list_workflow_steps(rid)  # type: ignore[attr-defined]

        # internals.recorded_operations: the rows DBOS keeps, raw, in step-ID order.
        ops = internals.recorded_operations(rid)
        assert [op.function_id for op in ops] == [s["function_id"] for s in dbos_view], (ops, dbos_view)
        assert [op.function_name for op in ops] == [s["function_name"] for s in dbos_view]
        assert [op.function_name for op in ops] == ["step:check.add", "sleep.begin:perdure.sleep",
                                                    "sleep:perdure.sleep", "step:check.add"], ops
        assert all(op.serialization == SERIALIZER.name() and op.error is None for op in ops), ops
        # replay.RecordedRun answers what DBOS's own replay returns: envelopes verbatim, other outputs decoded.
        recorded = RecordedRun(ops)
        for op, seen in zip(ops, dbos_view, strict=True):
            answer = recorded.answer(op.function_id)
            assert answer is not NOT_ANSWERED
            decoded = SERIALIZER.deserialize(answer) if isinstance(answer, RawJSON) else answer
            assert decoded == seen["output"], (op, answer, seen)
        first_step = recorded.answer(ops[0].function_id)
        assert isinstance(first_step, RawJSON) and first_step == ops[0].output  # the very text DBOS stored

        # A sync step (here the run's first operation): one hand-off, DBOS's step context in the body's
        # thread, perdure's retries inside it; an async step takes DBOS's three (one is a no-op).
        asyncio.to_thread = _counting_to_thread  # type: ignore[assignment]
        try:
            async with perdure.Client(backend) as client:
                sid = await client.start(sync_flow)
                sync_handoffs, async_handoffs = await client.result(sid, timeout=60)
        finally:
            asyncio.to_thread = _to_thread
        assert sync_handoffs == 1, (sync_handoffs, async_handoffs)
        sync_ops = internals.recorded_operations(sid)
        assert [op.function_name for op in sync_ops] == ["step:check.sync_add", "step:check.add"], sync_ops
        assert [s["attempt"] for s in SEEN] == [1, 2] and not any(s["thread"] for s in SEEN), SEEN
        assert {s["step_id"] for s in SEEN} == {sync_ops[0].function_id} and SEEN[0]["key"] == f"{sid}:0", SEEN
        assert '"attempts":2' in sync_ops[0].output, sync_ops[0]
        print(f"hand-offs: sync step {sync_handoffs}, async step {async_handoffs}")

        # DBOS.reserve_step / StepReservation.run_async: the step-ID arithmetic the replay relies on.
        handle = await DBOS.start_workflow_async(reserve)
        first, after, at = await handle.get_result()
        assert (after, at) == (first + 1, first), (first, after, at)
        names = {op.function_id: op.function_name for op in internals.recorded_operations(handle.workflow_id)}
        assert names == {first: "check.at", first + 1: "check.after"}, names

        # internals.recover_executor: DBOS's recovery for a list of executor ids, as the admin endpoint calls it.
        params = inspect.signature(DBOS._recover_pending_workflows).parameters
        assert list(params) == ["executor_ids"], params
        assert internals.recover_executor("perdure-check-nobody") == 0
    finally:
        await asyncio.to_thread(worker.shutdown)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
    print("dbos internals ok")

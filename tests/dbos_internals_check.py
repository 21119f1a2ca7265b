"""Checks, in a process of its own, every DBOS assumption of perdure/adapters/dbos/internals.py and replay.py.

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
from typing import Any

from dbos import DBOS

import perdure
from perdure.adapters.dbos import internals, worker
from perdure.adapters.dbos.backend import DBOSBackend
from perdure.adapters.dbos.replay import NOT_ANSWERED, RecordedRun
from perdure.adapters.dbos.serializer import SERIALIZER, RawJSON


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

"""The DBOS internals the adapter relies on, in one place (dbos 3.4; checked by tests/test_dbos_units.py).

DBOS has no public API for two things perdure needs, so it uses DBOS's own code for them, here only:

* **Reading a run's recorded operations in one query, inside a worker, without recording the read.**
  ``DBOS.list_workflow_steps`` called from a workflow is itself recorded as a step (it would take a step
  ID and store the whole list), and its "safe" deserialization turns an unreadable value into a string.
  :func:`recorded_operations` reads the raw rows of DBOS's ``operation_outputs`` table through the
  launched DBOS's own system database (its engine and its table definition, so its schema); the journal
  decodes them with the serializer DBOS would use.
* **Re-enqueueing a dead executor's PENDING runs while this worker keeps running.** DBOS does it for its
  own executor at launch, and for a list of executor ids through its admin server's recovery endpoint,
  whose method :func:`recover_executor` calls.

Everything else the adapter uses is DBOS's public API: ``DBOS.reserve_step`` (draws the next step ID
without recording anything) and ``StepReservation.run_async`` (runs a step at a reserved ID), the
``executor_id`` configuration key, ``DBOS.run_step_async``, events and messages.
"""

from __future__ import annotations

from typing import NamedTuple

import sqlalchemy as sa
from dbos import DBOS
from dbos._dbos import _get_dbos_instance


class RecordedOp(NamedTuple):
    """One row of DBOS's ``operation_outputs``: what DBOS recorded at one step ID of a workflow."""

    function_id: int
    function_name: str
    output: str | None  # serialized text, as DBOS stored it
    error: str | None
    serialization: str | None  # name of the serializer that wrote the row


def recorded_operations(workflow_id: str) -> list[RecordedOp]:
    """Every operation DBOS recorded for ``workflow_id``, by step ID (blocking; the worker's DBOS)."""
    sys_db = _get_dbos_instance()._sys_db
    ops = sys_db.tables.operation_outputs
    query = (
        sa.select(ops.c.function_id, ops.c.function_name, ops.c.output, ops.c.error, ops.c.serialization)
        .where(ops.c.workflow_uuid == workflow_id)
        .order_by(ops.c.function_id)
    )
    with sys_db.engine.connect() as conn:
        return [RecordedOp(*row) for row in conn.execute(query)]


def recover_executor(executor_id: str) -> int:
    """Put the PENDING runs of executor ``executor_id`` (of this application version) back on their queue,
    as DBOS's recovery endpoint does; returns how many. Idempotent: a run another worker has dequeued
    since belongs to that worker's executor and is not touched."""
    return len(DBOS._recover_pending_workflows([executor_id]))

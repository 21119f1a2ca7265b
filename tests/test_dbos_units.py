"""The DBOS adapter's pieces without a worker: serializer, journal names, records, URLs, the decision claim,
and the client side against a real SQLite system database."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

pytest.importorskip("dbos")

import perdure  # noqa: E402
from perdure.adapters.dbos import DBOSBackend  # noqa: E402
from perdure.adapters.dbos.database import claim_timeout, insert_decision, prepare  # noqa: E402
from perdure.adapters.dbos.internals import RecordedOp  # noqa: E402
from perdure.adapters.dbos.journal import describe_op, op_name, parse_op, step_options  # noqa: E402
from perdure.adapters.dbos.liveness import FileLocks  # noqa: E402
from perdure.adapters.dbos.records import run_info, step_records  # noqa: E402
from perdure.adapters.dbos.replay import NOT_ANSWERED, RecordedRun  # noqa: E402
from perdure.adapters.dbos.serializer import SERIALIZER, RawJSON, RecordedError  # noqa: E402
from perdure.core.config import open_backend  # noqa: E402
from perdure.core.errors import (  # noqa: E402
    ApprovalNotFoundError,
    InvalidBackendURLError,
    NonDeterminismError,
    RunConflictError,
    RunNotFoundError,
)
from perdure.core.types import RunStatus, StepKind, StepStatus  # noqa: E402


# --- serializer ----------------------------------------------------------------------------------------
def test_serializer_stores_json_never_pickle() -> None:
    assert SERIALIZER.serialize(RawJSON('{"a": 1}')) == '{"a": 1}'  # perdure's own encoding, verbatim
    text = SERIALIZER.serialize({"args": ("wf", {"x": [1, 2]}), "kwargs": {}})
    assert text == '{"args":["wf",{"x":[1,2]}],"kwargs":{}}'
    assert SERIALIZER.deserialize(text) == {"args": ["wf", {"x": [1, 2]}], "kwargs": {}}


def test_serializer_keeps_the_type_name_of_errors() -> None:
    err = NonDeterminismError(3, "step 'a'", "step 'b'")
    back = SERIALIZER.deserialize(SERIALIZER.serialize(err))
    assert isinstance(back, RecordedError)
    assert (back.type_name, back.message) == ("NonDeterminismError", str(err))
    again = SERIALIZER.deserialize(SERIALIZER.serialize(back))  # read back and stored again
    assert (again.type_name, again.message) == ("NonDeterminismError", str(err))


def test_serializer_refuses_what_json_cannot_hold() -> None:
    with pytest.raises(TypeError, match="cannot store"):
        SERIALIZER.serialize(object())


# --- journal operation names ----------------------------------------------------------------------------
def test_operation_names_round_trip_and_describe_like_every_engine() -> None:
    assert parse_op(op_name("tool", "app.pay")) == ("tool", "app.pay")
    assert parse_op("approval.begin:ship") == ("approval.begin", "ship")
    assert parse_op("DBOS.setEvent") is None and parse_op("DBOS.recv") is None
    assert describe_op("approval.begin:ship") == "approval 'ship'"
    assert describe_op("step:app.fetch") == "step 'app.fetch'"
    assert describe_op("DBOS.sleep") == "DBOS operation 'DBOS.sleep'"


# --- records ----------------------------------------------------------------------------------------------
def _env(name: str, kind: str, output: Any = None, ok: bool = True, attempts: int = 1) -> dict[str, Any]:
    error = None if ok else {"type": "ApprovalTimeoutError", "message": "late"}
    return {"name": name, "kind": kind, "ok": ok, "output": output, "error": error, "attempts": attempts}


def _op(fid: int, name: str, output: Any = None) -> Any:
    return {"function_id": fid, "function_name": name, "output": output, "error": None}


OPS = [
    _op(1, "step:a", _env("a", "step", "x", attempts=2)),
    _op(2, "sleep.begin:perdure.sleep", {"wake_at": 1.0}),
    _op(3, "sleep:perdure.sleep", _env("perdure.sleep", "sleep", {"seconds": 0.1})),
    _op(4, "approval.begin:ok", {"deadline": None}),
    _op(5, "DBOS.setEvent"),
    _op(7, "DBOS.sleep", 99.0),
]


def test_step_records_count_positions_and_show_a_waiting_approval() -> None:
    records = step_records(list(reversed(OPS)), "PENDING")  # order comes from function ids
    assert [(r.position, r.name, r.kind, r.status, r.attempts) for r in records] == [
        (0, "a", StepKind.STEP, StepStatus.COMPLETED, 2),
        (1, "perdure.sleep", StepKind.SLEEP, StepStatus.COMPLETED, 1),
        (2, "ok", StepKind.APPROVAL, StepStatus.WAITING, 0),
    ]
    done = [*OPS, _op(6, "DBOS.recv", None), _op(8, "approval.expire:ok", None),
            _op(9, "approval:ok", _env("ok", "approval", ok=False)), _op(10, "tool:t", _env("t", "tool", 1))]
    records = step_records(done, "SUCCESS")
    assert [(r.position, r.name, r.status) for r in records][2:] == [
        (2, "ok", StepStatus.FAILED), (3, "t", StepStatus.COMPLETED)
    ]
    assert records[2].error is not None and records[2].error.type == "ApprovalTimeoutError"


def test_a_cancelled_run_keeps_only_recorded_outcomes() -> None:
    assert [r.name for r in step_records(OPS, "CANCELLED")] == ["a", "perdure.sleep"]


def _status(state: str, **kw: Any) -> Any:
    base: dict[str, Any] = dict(workflow_id="r", status=state, input={"args": ["app.wf", {}], "kwargs": {}},
                                output=None, error=None, created_at=1500, dequeued_at=None)
    return SimpleNamespace(**{**base, **kw})


PENDING = {"approval_id": "ok-3", "name": "ok", "payload": {"p": 1}, "digest": "d", "deadline": 5.0, "position": 3}


@pytest.mark.parametrize(
    ("state", "kw", "pending", "expected"),
    [
        ("ENQUEUED", {}, None, RunStatus.PENDING),
        ("ENQUEUED", {"dequeued_at": 1}, None, RunStatus.RUNNING),  # re-enqueued by recovery
        ("PENDING", {}, None, RunStatus.RUNNING),
        ("PENDING", {}, PENDING, RunStatus.WAITING),
        ("ENQUEUED", {"dequeued_at": 1}, PENDING, RunStatus.WAITING),  # waiting, its worker dead
        ("SUCCESS", {"output": {"ok": 1}}, None, RunStatus.SUCCEEDED),
        ("ERROR", {"error": RecordedError("StepFailedError", "boom")}, None, RunStatus.FAILED),
        ("MAX_RECOVERY_ATTEMPTS_EXCEEDED", {}, None, RunStatus.FAILED),
        ("CANCELLED", {}, None, RunStatus.CANCELLED),
    ],
)
def test_status_mapping(state: str, kw: dict[str, Any], pending: Any, expected: RunStatus) -> None:
    info = run_info(_status(state, **kw), pending)
    assert info.status is expected and info.workflow == "app.wf" and info.created_at == 1.5
    assert (info.pending_approval is not None) == (expected is RunStatus.WAITING)
    if expected is RunStatus.WAITING:
        assert info.pending_approval is not None and info.pending_approval.approval_id == "ok-3"
    if state == "ERROR":
        assert info.error is not None and (info.error.type, info.error.message) == ("StepFailedError", "boom")
    if state == "SUCCESS":
        assert info.output == {"ok": 1}


# --- URLs -----------------------------------------------------------------------------------------------
def test_urls_select_the_dbos_backend_and_translate_to_dbos_urls() -> None:
    b = open_backend("dbos+sqlite:////tmp/x/perdure.sqlite")
    assert isinstance(b, DBOSBackend) and b.db.dbos_url == "sqlite:////tmp/x/perdure.sqlite" and b.db.sqlite
    b = open_backend("dbos+postgresql://u:pw@127.0.0.1:5432/app?sslmode=disable")
    assert b.db.dbos_url == "postgresql://u:pw@127.0.0.1:5432/app?sslmode=disable" and not b.db.sqlite
    for bad in ("dbos+sqlite://", "dbos+sqlite://host/x.sqlite", "dbos+postgresql://127.0.0.1:5432/"):
        with pytest.raises(InvalidBackendURLError):
            open_backend(bad)


# --- the decision claim on a real system database -------------------------------------------------------
def test_a_decision_and_a_timeout_claim_the_approval_exactly_once(tmp_path: Path) -> None:
    db = DBOSBackend(f"dbos+sqlite:///{tmp_path / 'd.sqlite'}").db
    engine = db.create_engine()
    prepare(db, engine)
    with engine.begin() as conn:
        insert_decision(conn, "r", "ok-1", '{"approved": true}')
    assert claim_timeout(engine, "r", "ok-1") == {"approved": True}  # the decision came first: it counts
    assert claim_timeout(engine, "r", "ok-2") is None  # nobody decided: the timeout wins ...
    assert claim_timeout(engine, "r", "ok-2") is None  # ... also when the claim is retried after a crash
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        insert_decision(conn, "r", "ok-2", '{"approved": true}')  # too late
    engine.dispose()


# --- the client side with no worker ---------------------------------------------------------------------
@perdure.workflow(name="u.flow")
async def flow(x: int) -> int:
    return x


@perdure.workflow(name="u.other")
async def other(x: int) -> int:
    return x


def test_client_side_without_a_worker(tmp_path: Path) -> None:
    async def main() -> None:
        async with perdure.Client(f"dbos+sqlite:///{tmp_path / 'c.sqlite'}") as client:
            rid = await client.start(flow, 1, run_id="same")
            assert (await client.status(rid)).status is RunStatus.PENDING
            assert await client.start(flow, 2, run_id="same") == "same"  # the existing run, not a second one
            with pytest.raises(RunConflictError):
                await client.start(other, 1, run_id="same")
            with pytest.raises(RunNotFoundError):
                await client.status(f"missing-{uuid.uuid4().hex}")
            with pytest.raises(ApprovalNotFoundError):
                await client.approve(rid, "ok-0")
            await client.cancel(rid)
            assert (await client.status(rid)).status is RunStatus.CANCELLED
            await client.cancel(rid)  # cancelling a finished run changes nothing
            assert await client.steps(rid) == []
            assert [r.run_id for r in await client.runs()] == ["same"]

    asyncio.run(main())


def test_reading_never_creates_migrates_or_writes_the_database(tmp_path: Path) -> None:
    path = tmp_path / "typo.sqlite"
    url = f"dbos+sqlite:///{path}"

    async def read_missing() -> None:
        async with perdure.Client(url) as client:
            for read in (client.status("r"), client.steps("r"), client.result("r"), client.approve("r", "a"),
                         client.cancel("r")):
                with pytest.raises(RunNotFoundError, match=f"there is no database at {path}"):
                    await read
            assert await client.runs() == []

    asyncio.run(read_missing())
    assert not path.exists()  # a misspelt path leaves nothing behind

    async def start() -> None:
        async with perdure.Client(url) as client:
            await client.start(flow, 1, run_id="r")

    asyncio.run(start())
    before = path.read_bytes()
    # A fresh process (whose first contact with the database is a read) inspects without writing a byte.
    for command in (["runs"], ["status", "r"], ["steps", "r"]):
        out = subprocess.run([sys.executable, "-m", "perdure", *command, "--backend", url], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0 and "r" in out.stdout, out.stderr
    assert path.read_bytes() == before


# --- replay from one read, liveness, and the DBOS internals both rely on ----------------------------------
def test_a_recorded_run_answers_only_what_dbos_would_return_as_is() -> None:
    envelope = '{"name":"a","kind":"step","ok":true,"output":1,"error":null,"attempts":1}'
    run = RecordedRun([
        RecordedOp(1, "step:a", envelope, None, SERIALIZER.name()),
        RecordedOp(2, "sleep.begin:perdure.sleep", '{"wake_at":5.0}', None, SERIALIZER.name()),
        RecordedOp(3, "DBOS.setEvent", None, None, SERIALIZER.name()),
        RecordedOp(5, "approval.expire:ok", None, '{"__perdure_error__":{"type":"E","message":"m"}}',
                   SERIALIZER.name()),
        RecordedOp(6, "step:b", envelope, None, "py_pickle"),
        RecordedOp(7, "approval.expire:ok", "null", None, SERIALIZER.name()),
    ])
    assert run.last == 7 and run.name_at(4) is None and run.name_at(6) == "step:b"
    answer = run.answer(1)
    assert isinstance(answer, RawJSON) and answer == envelope  # the stored envelope, verbatim
    assert run.answer(2) == {"wake_at": 5.0}
    assert run.answer(7) is None  # a recorded None is an answer
    # Left to DBOS at the reserved step ID: nothing recorded, no output, a recorded error, another serializer.
    assert all(run.answer(i) is NOT_ANSWERED for i in (4, 3, 5, 6))


def test_step_options_are_made_once_per_operation() -> None:
    assert step_options("tool", "app.pay") == {"name": "tool:app.pay"}
    assert step_options("tool", "app.pay") is step_options("tool", "app.pay")


def test_file_locks_tell_dead_workers_from_live_ones(tmp_path: Path) -> None:
    def row(executor_id: str) -> SimpleNamespace:
        return SimpleNamespace(executor_id=executor_id, lock_key=0)

    live, gone, sweeper = FileLocks(tmp_path / "w"), FileLocks(tmp_path / "w"), FileLocks(tmp_path / "w")
    live.hold("a")
    gone.hold("b")
    gone.close()  # its process died: the kernel released the lock
    workers = [row("a"), row("b"), row("c")]  # c: registered, but its lock file is gone
    dead = sweeper.take_dead(workers)
    assert [w.executor_id for w in dead] == ["b", "c"]
    assert FileLocks(tmp_path / "w").take_dead(workers) == []  # a held by its worker, b and c by the sweeper
    for w in dead:
        sweeper.let_go(w)
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["a.lock"]
    live.close()
    assert [w.executor_id for w in sweeper.take_dead([row("a")])] == ["a"]
    sweeper.close()


def test_the_dbos_internals_perdure_relies_on_still_hold(tmp_path: Path) -> None:
    """Fails loudly when a DBOS upgrade changes what internals.py / replay.py assume (see that script)."""
    script = Path(__file__).resolve().parent / "dbos_internals_check.py"
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "i.sqlite")], capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0 and "dbos internals ok" in done.stdout, done.stdout + done.stderr[-4000:]

"""The conformance scenarios: SEMANTICS.md's list, each producing normalized traces.

A scenario drives one backend through a :class:`~perdure.conformance.harness.Harness` and returns a dict
of traces and checks. The runner compares it with the reference engine's result for the same scenario:
they must be equal. Normalization removes only what SEMANTICS.md exempts: timestamps (outputs of
``perdure.now`` and of steps that record time), run ids, and the attempts of the step that was in flight
when the worker died.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..core.errors import NonDeterminismError, PerdureError
from ..core.types import RunStatus
from . import workflows as wf
from .harness import Harness

VOLATILE_OUTPUTS = {"perdure.now", "conf.remember"}


@dataclass(frozen=True)
class Scenario:
    name: str
    number: int  # the scenario's number in SEMANTICS.md
    doc: str
    fn: Callable[[Harness], Awaitable[dict[str, Any]]]


SCENARIOS: list[Scenario] = []


def scenario(number: int) -> Callable[[Callable[[Harness], Awaitable[dict[str, Any]]]], Any]:
    def register(fn: Callable[[Harness], Awaitable[dict[str, Any]]]) -> Any:
        SCENARIOS.append(Scenario(fn.__name__, number, (fn.__doc__ or "").strip(), fn))
        return fn

    return register


async def trace(
    h: Harness, run_id: str, *, inflight: tuple[str, ...] = (), only: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """The normalized trace of a finished run: status, output, error, step records, ledger counts."""
    info = await h.wait_terminal(run_id)
    steps = []
    for r in await h.client.steps(run_id):
        if only is not None and r.name not in only:
            continue
        d = r.model_dump(mode="json")
        if r.name in inflight:
            d["attempts"] = None  # documented exemption: the in-flight step's attempts
        if r.name in VOLATILE_OUTPUTS:
            d["output"] = "<time>"
        steps.append(d)
    out = {
        "status": info.status.value,
        "output": info.output,
        "error": None if info.error is None else info.error.model_dump(),
        "steps": steps,
        "calls": h.ledger.call_counts(run_id),
        "effects": h.ledger.effects(run_id),
    }
    return json.loads(json.dumps(out, default=str).replace(run_id, "<run>"))


async def start(h: Harness, workflow: Any, run_id: str, **kwargs: Any) -> str:
    return await h.client.start(workflow, run_id=run_id, **kwargs)


async def refused(call: Awaitable[Any]) -> str:
    """The name of the perdure error ``call`` raises (the scenarios compare names across engines)."""
    try:
        await call
    except PerdureError as exc:
        return type(exc).__name__
    return "accepted"


# --- 1-3: crashes --------------------------------------------------------------------------------
@scenario(1)
async def happy_path(h: Harness) -> dict[str, Any]:
    """Three steps, no crash."""
    rid = h.new_run_id("happy")
    await start(h, wf.pipeline, rid, x="go")
    return {"run": await trace(h, rid)}


@scenario(2)
async def kill_during_each_step(h: Harness) -> dict[str, Any]:
    """SIGKILL the worker inside each step in turn: only that step runs again, completed ones replay."""
    result = {}
    for label in ("a", "b", "c"):
        rid = h.new_run_id(f"kill-{label}")
        h.ledger.arm(f"{rid}:{label}")
        await start(h, wf.pipeline, rid, x="go")
        await h.arrive(rid, label)
        await h.restart_worker()
        h.ledger.release(f"{rid}:{label}")
        result[label] = await trace(h, rid, inflight=(f"conf.{label}",))
    return result


@scenario(3)
async def kill_between_steps(h: Harness) -> dict[str, Any]:
    """SIGKILL once step a's record is durable and b has not yet done its work: a must not run again."""
    rid = h.new_run_id("between")
    h.ledger.arm(f"{rid}:b")
    await start(h, wf.pipeline, rid, x="go")
    await h.wait_step(rid, "conf.a")
    await h.arrive(rid, "b")
    during = (await h.client.status(rid)).status.value  # a worker is inside step b: RUNNING
    await h.restart_worker()
    h.ledger.release(f"{rid}:b")
    return {"run": await trace(h, rid, inflight=("conf.b",)), "status_inside_a_step": during}


# --- 4: tools ------------------------------------------------------------------------------------
@scenario(4)
async def tool_idempotency(h: Harness) -> dict[str, Any]:
    """SIGKILL after the tool's effect, before its record: the re-run sees the same key; one effect."""
    rid = h.new_run_id("tool")
    h.ledger.arm(f"{rid}:charge")
    await start(h, wf.payment, rid, amount=42)
    await h.arrive(rid, "charge")
    await h.restart_worker()
    h.ledger.release(f"{rid}:charge")
    t = await trace(h, rid, inflight=("conf.charge",))
    return {"run": t, "distinct_keys": len(h.ledger.keys_seen(rid, "charge"))}


@scenario(4)
async def tool_completed_before_kill(h: Harness) -> dict[str, Any]:
    """SIGKILL in the step after a tool whose record is durable: the tool replays, its body never runs again."""
    rid = h.new_run_id("tool-done")
    h.ledger.arm(f"{rid}:c")
    await start(h, wf.payment, rid, amount=7)
    await h.wait_step(rid, "conf.charge")
    await h.arrive(rid, "c")
    await h.restart_worker()
    h.ledger.release(f"{rid}:c")
    return {"run": await trace(h, rid, inflight=("conf.c",))}


# --- 5: approvals --------------------------------------------------------------------------------
@scenario(5)
async def approval_kill_while_waiting(h: Harness) -> dict[str, Any]:
    """SIGKILL while waiting; the decision is sent while no worker runs; a new worker picks it up."""
    rid = h.new_run_id("approve")
    await start(h, wf.approval_flow, rid, item="post")
    info = await h.wait_pending(rid)
    await h.kill_worker()
    pending = (await h.client.status(rid)).pending_approval
    assert pending is not None
    await h.client.approve(rid, pending.approval_id, by="alice", comment="ship it", data={"priority": 1})
    await h.start_worker()
    t = await trace(h, rid)
    shown = info.pending_approval.model_dump(exclude={"deadline"}) if info.pending_approval else None
    return {"run": t, "pending": shown, "status_while_waiting": info.status.value}


@scenario(5)
async def approval_reject(h: Harness) -> dict[str, Any]:
    """A rejection reaches the workflow, which takes its reject branch."""
    rid = h.new_run_id("reject")
    await start(h, wf.approval_flow, rid, item="post")
    info = await h.wait_pending(rid)
    assert info.pending_approval is not None
    await h.client.reject(rid, info.pending_approval.approval_id, by="bob", comment="not now")
    return {"run": await trace(h, rid)}


@scenario(5)
async def approval_double_decision(h: Harness) -> dict[str, Any]:
    """A second decision is refused: before any worker consumed the first, and after the run finished."""
    rid = h.new_run_id("double")
    await start(h, wf.approval_flow, rid, item="post")
    info = await h.wait_pending(rid)
    assert info.pending_approval is not None
    aid = info.pending_approval.approval_id
    await h.kill_worker()
    await h.client.approve(rid, aid, by="alice")
    second = await refused(h.client.reject(rid, aid, by="mallory"))
    await h.start_worker()
    t = await trace(h, rid)
    after = await refused(h.client.approve(rid, aid, by="mallory"))
    unknown = await refused(h.client.approve(rid, "nope-9", by="mallory"))
    stale = await refused(h.client.approve(h.new_run_id("missing"), aid))
    return {"run": t, "second": second, "after_finish": after, "unknown_approval": unknown, "unknown_run": stale}


@scenario(5)
async def approval_timeout(h: Harness) -> dict[str, Any]:
    """Nobody decides: the workflow sees ApprovalTimeoutError after the deadline, across a restart."""
    rid = h.new_run_id("timeout")
    timeout = 3.0
    started = time.time()  # the approval is reached after this: its deadline is no earlier than started + timeout
    await start(h, wf.approval_flow, rid, item="post", timeout=timeout)
    info = await h.wait_pending(rid)
    await asyncio.sleep(1.0)
    await h.restart_worker()
    ready = h.ready_at
    t = await trace(h, rid)
    ended = time.time()
    assert info.pending_approval is not None
    late = await refused(h.client.approve(rid, info.pending_approval.approval_id))
    # A deadline fixed when the approval was first reached ends the wait at that deadline, or as soon as the
    # restarted worker replays (within 2.5 s of ready); one that restarted from zero ends `timeout` after
    # ready or later; an early one ends before the deadline. Worker start-up time does not matter.
    return {"run": t, "late_decision": late, "has_deadline": info.pending_approval.deadline is not None,
            "not_early": ended >= started + timeout, "not_restarted": ended < ready + timeout - 0.5}


@scenario(5)
async def approval_decided_after_deadline_while_no_worker(h: Harness) -> dict[str, Any]:
    """The deadline passes while no worker runs, then a decision arrives before any worker recorded the
    timeout: the decision is accepted and it is what the run gets -- never accepted, then dropped."""
    rid = h.new_run_id("late")
    await start(h, wf.approval_flow, rid, item="post", timeout=2.0)
    info = await h.wait_pending(rid)
    assert info.pending_approval is not None and info.pending_approval.deadline is not None
    await h.kill_worker()
    await asyncio.sleep(max(0.0, info.pending_approval.deadline - time.time()) + 1.0)
    accepted = await refused(h.client.approve(rid, info.pending_approval.approval_id, by="alice"))
    await h.start_worker()
    return {"run": await trace(h, rid), "decision": accepted}


# --- 6: retries ----------------------------------------------------------------------------------
@scenario(6)
async def retry_transient(h: Harness) -> dict[str, Any]:
    """Two transient failures, then success on the third attempt."""
    rid = h.new_run_id("transient")
    h.ledger.set_budget(f"{rid}:fragile", 2)
    await start(h, wf.retrying, rid, mode="transient")
    return {"run": await trace(h, rid)}


@scenario(6)
async def retry_permanent(h: Harness) -> dict[str, Any]:
    """A PermanentError is not retried; the workflow catches StepFailedError and compensates."""
    rid = h.new_run_id("permanent")
    await start(h, wf.retrying, rid, mode="permanent")
    return {"run": await trace(h, rid)}


@scenario(6)
async def retry_exhausted_compensation(h: Harness) -> dict[str, Any]:
    """Retries run out; StepFailedError carries the original type and message; a compensation step runs."""
    rid = h.new_run_id("exhausted")
    h.ledger.set_budget(f"{rid}:fragile", 100)
    await start(h, wf.retrying, rid, mode="exhausted")
    return {"run": await trace(h, rid)}


# --- 7: idempotent start -------------------------------------------------------------------------
@scenario(7)
async def idempotent_start(h: Harness) -> dict[str, Any]:
    """Starting an existing run id returns that run; the same id for another workflow is refused."""
    rid = h.new_run_id("idem")
    first = await start(h, wf.pipeline, rid, x="go")
    again = await start(h, wf.pipeline, rid, x="other args")
    t = await trace(h, rid)
    after = await start(h, wf.pipeline, rid, x="go")
    conflict = await refused(start(h, wf.payment, rid, amount=1))
    t2 = await trace(h, rid)
    return {"run": t, "same_id": first == again == after == rid, "conflict": conflict, "unchanged": t == t2}


# --- 8: durable sleep ----------------------------------------------------------------------------
@scenario(8)
async def durable_sleep_across_kill(h: Harness) -> dict[str, Any]:
    """SIGKILL during a durable sleep: the new worker sleeps what is left, never less, never all again."""
    rid = h.new_run_id("sleep")
    seconds = 3.0
    await start(h, wf.sleeper, rid, seconds=seconds)
    await h.wait_step(rid, "perdure.now")
    await asyncio.sleep(1.0)
    await h.restart_worker()
    # A sleep that restarted from zero in the new worker ends about `seconds` after that worker was ready,
    # or later; one that kept its recorded wake-up time ends at t0 + seconds, or as soon as the new worker
    # replays (allowed 2.5 s after ready). Worker start-up time does not matter.
    ready = h.ready_at
    t = await trace(h, rid)
    records = await h.client.steps(rid)
    woke = [datetime.fromisoformat(r.output).timestamp() for r in records if r.name == "perdure.now"][1]
    return {"run": t, "not_restarted": woke < ready + seconds - 0.5}


# --- 9: nondeterminism ---------------------------------------------------------------------------
async def deployed_after_kill_in(h: Harness, label: str, variant: str, *, hold: bool,
                                 only: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Kill the worker inside step ``label`` of a pipeline run, restart it on code ``variant`` (a deploy)
    and trace the run. ``hold``: the step's gate stays closed, so a step that wrongly runs again blocks;
    otherwise it opens first, so that such a run is counted in the ledger."""
    rid = h.new_run_id(variant)
    h.ledger.arm(f"{rid}:{label}")
    await start(h, wf.pipeline, rid, x="go")
    await h.arrive(rid, label)
    await h.kill_worker()
    h.set_variant(variant)
    try:
        if not hold:
            h.ledger.release(f"{rid}:{label}")
        await h.start_worker()
        return await trace(h, rid, only=only)
    finally:
        h.ledger.release(f"{rid}:{label}")
        h.set_variant("base")
        await h.restart_worker()


@scenario(9)
async def nondeterminism(h: Harness) -> dict[str, Any]:
    """Steps reordered between a kill and the restart: NonDeterminismError, never a wrong replay."""
    return {"run": await deployed_after_kill_in(h, "c", "reordered", hold=True, only=("conf.a", "conf.b"))}


@scenario(9)
async def step_replaced_while_in_flight(h: Harness) -> dict[str, Any]:
    """The step in flight at a kill is replaced by another before the restart (a deploy): it never runs
    again. The run then goes on with the new step where the engine journals steps when they complete, or
    fails with NonDeterminismError naming both steps where it journals them when they start
    (``Backend.journals_step_start``: Temporal activities, Restate) -- whichever the backend declares."""
    t = await deployed_after_kill_in(h, "b", "replaced", hold=False)
    if h.client.backend.journals_step_start:
        expected = {"status": "FAILED", "output": None, "calls": {"a": 1, "b": 1}, "error": {
            "type": "NonDeterminismError",
            "message": str(NonDeterminismError(1, "step 'conf.b'", "step 'conf.d'")),
        }}
    else:
        expected = {"status": "SUCCEEDED", "output": "go>a>d>c", "calls": {"a": 1, "b": 1, "d": 1, "c": 1},
                    "error": None}
    outcome = {key: t[key] for key in expected}
    return {
        "replaced_step_calls": t["calls"].get("b"),
        "first_step": t["steps"][0],
        "outcome": "as declared" if outcome == expected else outcome,
    }


# --- 10: serialization ---------------------------------------------------------------------------
@scenario(10)
async def serialization_errors(h: Harness) -> dict[str, Any]:
    """Unserializable output/argument -> SerializationError; oversized output -> PayloadTooLargeError."""
    rid = h.new_run_id("serial")
    await start(h, wf.serialization, rid)
    bad_start = await refused(h.client.start(wf.pipeline, object(), run_id=h.new_run_id("bad-arg")))
    return {"run": await trace(h, rid), "unserializable_start": bad_start}


# --- 11: concurrency -----------------------------------------------------------------------------
@scenario(11)
async def concurrent_runs_with_kill(h: Harness) -> dict[str, Any]:
    """20 runs in flight, the worker SIGKILLed with all of them inside step b: all finish correctly."""
    ids = [h.new_run_id(f"conc{i}") for i in range(20)]
    for rid in ids:
        h.ledger.arm(f"{rid}:b")
    await asyncio.gather(*(start(h, wf.pipeline, rid, x=rid[-6:]) for rid in ids))
    await asyncio.gather(*(h.arrive(rid, "b") for rid in ids))
    await h.restart_worker()
    for rid in ids:
        h.ledger.release(f"{rid}:b")
    traces = [await trace(h, rid, inflight=("conf.b",)) for rid in ids]
    return {
        "statuses": dict(Counter(t["status"] for t in traces)),
        "calls": [t["calls"] for t in traces],
        "all_outputs_match_input": all(t["output"] == f"{rid[-6:]}>a>b>c" for t, rid in zip(traces, ids, strict=True)),
    }


# --- 12: cancel ----------------------------------------------------------------------------------
@scenario(12)
async def cancel(h: Harness) -> dict[str, Any]:
    """Cancel during step b: the run ends CANCELLED and step c never starts."""
    rid = h.new_run_id("cancel")
    h.ledger.arm(f"{rid}:b")
    await start(h, wf.pipeline, rid, x="go")
    await h.arrive(rid, "b")
    await h.client.cancel(rid)
    info = await h.wait_status(rid, RunStatus.CANCELLED)
    h.ledger.release(f"{rid}:b")
    await asyncio.sleep(1.0)  # time for a wrongly continuing run to start step c
    t = await trace(h, rid, only=("conf.a",))
    t["calls"].pop("b", None)  # b was in flight; whether its body saw the cancel is engine-specific
    # A run waiting on an approval is cancelled too, and no decision reaches it after.
    waiting = h.new_run_id("cancel-waiting")
    await start(h, wf.approval_flow, waiting, item="post")
    pending = (await h.wait_pending(waiting)).pending_approval
    assert pending is not None
    await h.client.cancel(waiting)
    ended = await h.wait_status(waiting, RunStatus.CANCELLED)
    late = await refused(h.client.approve(waiting, pending.approval_id))
    return {"run": t, "status": info.status.value, "result": await refused(h.client.result(rid)),
            "waiting_run": await trace(h, waiting, only=("conf.a",)), "waiting_status": ended.status.value,
            "decision_after_cancel": late}


# --- 13: inspection ------------------------------------------------------------------------------
@scenario(13)
async def inspection(h: Harness) -> dict[str, Any]:
    """One run with every kind of record: step, tool, approval, sleep, failed step."""
    rid = h.new_run_id("inspect")
    await start(h, wf.inspection, rid)
    info = await h.wait_pending(rid)
    assert info.pending_approval is not None
    waiting = [r.model_dump(mode="json") for r in await h.client.steps(rid) if r.status.value != "RUNNING"]
    await h.client.approve(rid, info.pending_approval.approval_id, by="carol")
    t = await trace(h, rid)
    listed = rid in [r.run_id for r in await h.client.runs(limit=200)]
    later = h.new_run_id("inspect-later")
    await start(h, wf.pipeline, later, x="later")
    await h.wait_terminal(later)
    newest = await h.client.runs(limit=2)  # newest first, at most `limit`
    return {"run": t, "records_while_waiting": json.loads(json.dumps(waiting).replace(rid, "<run>")), "listed": listed,
            "runs_limit_2": len(newest), "newest_first": newest[0].run_id == later if newest else False}


# --- 14: recorded time and randomness -------------------------------------------------------------
@scenario(14)
async def now_uuid_stable_across_replay(h: Harness) -> dict[str, Any]:
    """now(), uuid4() and random() return the same values when the workflow replays after a kill."""
    rid = h.new_run_id("clock")
    h.ledger.arm(f"{rid}:b")
    await start(h, wf.clock, rid)
    await h.arrive(rid, "b")
    await h.restart_worker()
    h.ledger.release(f"{rid}:b")
    return {"run": await trace(h, rid, inflight=("conf.b",))}


# --- 15: kill during retries ---------------------------------------------------------------------
@scenario(15)
async def kill_while_tool_retried(h: Harness) -> dict[str, Any]:
    """The tool fails once, is killed in its retry: every attempt shares one key; one effect."""
    rid = h.new_run_id("retrykill")
    h.ledger.set_budget(f"{rid}:flaky_charge", 1)
    h.ledger.arm(f"{rid}:flaky_charge")
    await start(h, wf.flaky_payment, rid, amount=5)
    await h.arrive(rid, "flaky_charge")
    await h.restart_worker()
    h.ledger.release(f"{rid}:flaky_charge")
    t = await trace(h, rid, inflight=("conf.flaky_charge",))
    return {"run": t, "distinct_keys": len(h.ledger.keys_seen(rid, "flaky_charge"))}


def by_name() -> dict[str, Scenario]:
    return {s.name: s for s in SCENARIOS}


# Agent-framework scenarios register themselves with @scenario(16) when their framework is installed.
# Last, so that those modules find every helper above when they import this one.
from .agents import load as _load_agent_scenarios  # noqa: E402

_load_agent_scenarios()

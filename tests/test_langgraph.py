"""The LangGraph integration on the reference engine: durable model and tool calls, interrupts as
approvals, crashes (the in-process worker abandoned where it stands) and deterministic replay.

Real engines with SIGKILLed worker processes: test_conformance_engines.py (the langgraph_* scenarios).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

pytest.importorskip("langgraph")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import langgraph_app as app  # noqa: E402

import perdure  # noqa: E402
from perdure.core.types import RunInfo, RunStatus, StepKind  # noqa: E402
from perdure.integrations.langgraph.calls import CallOrder  # noqa: E402


class Env:
    """A memory:// backend of its own and one in-process worker that a test can crash."""

    def __init__(self) -> None:
        self.client = perdure.Client(f"memory://lg-{uuid.uuid4().hex[:8]}")
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        ready = asyncio.Event()
        self.task = asyncio.create_task(self.client.backend.serve(ready=ready.set))
        await ready.wait()

    async def crash(self) -> None:
        """Like a SIGKILL: the worker's runs stop where they stand; the journal keeps what was recorded."""
        self.client.backend.engine.crash_workers()  # type: ignore[attr-defined]
        assert self.task is not None
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def pending(self, run_id: str) -> RunInfo:
        for _ in range(2000):
            info = await self.client.status(run_id)
            if info.pending_approval is not None or info.status.terminal:
                return info
            await asyncio.sleep(0.005)
        raise AssertionError(f"{run_id}: no pending approval")


@contextlib.asynccontextmanager
async def env() -> AsyncIterator[Env]:
    app.reset()
    e = Env()
    await e.start()
    try:
        yield e
    finally:
        if e.task is not None:
            e.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await e.task
        await e.client.aclose()


async def arrived(label: str) -> None:
    await asyncio.wait_for(app.ARRIVED[label].wait(), 10)


def release(label: str) -> None:
    app.GATES[label].set()


SHOP_CALLS = {"model.plan": 1, "lookup-a": 1, "lookup-b": 1, "model.decide": 1, "model.summarize": 1,
              "charge": 1, "model.answer": 1}


def counts() -> dict[str, int]:
    out: dict[str, int] = {}
    for label, _ in app.CALLS:
        out[label] = out.get(label, 0) + 1
    return out


def test_agent_records_model_calls_tool_calls_and_the_approval() -> None:
    async def main() -> None:
        async with env() as e:
            rid = await e.client.start(app.shop, "buy a and b", run_id="shop-1")
            info = await e.pending(rid)
            assert info.status is RunStatus.WAITING and info.pending_approval is not None
            assert info.pending_approval.approval_id == "charge-5"
            assert info.pending_approval.payload == {"summary": "summarize says charge 30"}
            await e.client.approve(rid, "charge-5", by="alice")
            out = await e.client.result(rid, timeout=10)
            records = await e.client.steps(rid)
        assert out[-1] == "answer: a costs 15; b costs 15; charged 30 once (key call_charge)"
        assert [(r.name, r.kind) for r in records] == [
            ("langgraph.model.test-scripted", StepKind.STEP),
            ("langgraph.tool.lookup", StepKind.TOOL),
            ("langgraph.tool.lookup", StepKind.TOOL),
            ("langgraph.model.test-scripted", StepKind.STEP),
            ("langgraph.model.test-scripted", StepKind.STEP),
            ("charge", StepKind.APPROVAL),
            ("langgraph.tool.charge", StepKind.TOOL),
            ("langgraph.model.test-scripted", StepKind.STEP),
        ]
        # Parallel tool calls take positions in tool_calls order, though b finished first.
        assert [records[i].output["message"]["data"]["tool_call_id"] for i in (1, 2)] == ["call_a", "call_b"]
        # Tool idempotency keys are the run id and the model's tool_call id.
        assert ("lookup-a", "shop-1:call_a") in app.CALLS and ("charge", "shop-1:call_charge") in app.CALLS
        assert counts() == SHOP_CALLS  # the review node ran twice (interrupt, resume); its model call once

    asyncio.run(main())


def test_crash_during_a_model_call_repeats_only_that_call() -> None:
    async def main() -> None:
        async with env() as e:
            app.arm("model.decide")
            rid = await e.client.start(app.shop, "buy", run_id="shop-2")
            await arrived("model.decide")
            await e.crash()
            release("model.decide")
            await e.start()
            info = await e.pending(rid)
            assert info.pending_approval is not None
            await e.client.approve(rid, info.pending_approval.approval_id)
            out = await e.client.result(rid, timeout=10)
        assert out[-1].startswith("answer:")
        assert counts() == {**SHOP_CALLS, "model.decide": 2}

    asyncio.run(main())


def test_crash_after_a_tool_effect_reruns_it_with_the_same_key() -> None:
    async def main() -> None:
        async with env() as e:
            app.arm("charge")
            rid = await e.client.start(app.shop, "buy", run_id="shop-3")
            info = await e.pending(rid)
            assert info.pending_approval is not None
            await e.client.approve(rid, info.pending_approval.approval_id)
            await arrived("charge")
            await e.crash()
            release("charge")
            await e.start()
            await e.client.result(rid, timeout=10)
        assert counts() == {**SHOP_CALLS, "charge": 2}
        assert {key for label, key in app.CALLS if label == "charge"} == {"shop-3:call_charge"}
        assert list(app.EFFECTS) == ["shop-3:call_charge"]

    asyncio.run(main())


def test_crash_while_interrupted_then_reject_with_no_worker() -> None:
    async def main() -> None:
        async with env() as e:
            rid = await e.client.start(app.shop, "buy", run_id="shop-4")
            info = await e.pending(rid)
            assert info.pending_approval is not None
            await e.crash()
            await e.client.reject(rid, info.pending_approval.approval_id, by="bob", comment="too much")
            await e.start()
            out = await e.client.result(rid, timeout=10)
        assert out[-1] == "answer: a costs 15; b costs 15; rejected: too much"
        assert counts() == {k: v for k, v in SHOP_CALLS.items() if k != "charge"}
        assert app.EFFECTS == {}

    asyncio.run(main())


def test_concurrent_model_calls_in_one_node_keep_their_order_across_a_crash() -> None:
    async def main() -> None:
        async with env() as e:
            app.arm("model.after")
            rid = await e.client.start(app.pair, "x", run_id="pair-1")
            await arrived("model.after")
            before = [r.output for r in await e.client.steps(rid)]
            await e.crash()
            release("model.after")
            await e.start()
            out = await e.client.result(rid, timeout=10)
        # The first call was held back by its callback handler, yet it has the first position.
        assert [o["message"]["data"]["content"] for o in before if o] == ["one says first x", "two says second x"]
        assert out == ["one says first x", "two says second x", "after says done"]
        assert counts() == {"model.one": 1, "model.two": 1, "model.after": 2}

    asyncio.run(main())


def test_a_changed_prompt_after_a_crash_is_a_nondeterminism_error() -> None:
    async def main() -> None:
        async with env() as e:
            app.arm("model.write")
            rid = await e.client.start(app.essay, "durability", run_id="essay-1")
            await arrived("model.write")
            await e.crash()
            app.VARIANT["prompt"] = "outline"  # a deploy changed the first node's prompt
            release("model.write")
            await e.start()
            with pytest.raises(perdure.RunFailedError) as err:
                await e.client.result(rid, timeout=10)
        assert err.value.error_type == "NonDeterminismError"
        assert "position 0" in str(err.value)

    asyncio.run(main())


def test_plain_interrupts_become_approvals_one_after_the_other() -> None:
    async def main() -> None:
        async with env() as e:
            rid = await e.client.start(app.votes, run_id="votes-1")
            first = await e.pending(rid)
            assert first.pending_approval is not None
            assert (first.pending_approval.approval_id, first.pending_approval.payload) == ("alice-0", {"voter": "alice"})
            await e.client.approve(rid, "alice-0")
            for _ in range(1000):
                second = await e.client.status(rid)
                if second.pending_approval is not None and second.pending_approval.approval_id != "alice-0":
                    break
                await asyncio.sleep(0.005)
            assert second.pending_approval is not None and second.pending_approval.approval_id == "bob-1"
            await e.crash()
            await e.client.reject(rid, "bob-1")
            await e.start()
            assert await e.client.result(rid, timeout=10) == ["alice:yes", "bob:no"]

    asyncio.run(main())


def test_send_fan_out_subgraphs_and_a_sync_node_replay_after_a_crash() -> None:
    async def main() -> None:
        async with env() as e:
            app.arm("model.sum")
            rid = await e.client.start(app.map_reduce, "x,y", run_id="map-1")
            await arrived("model.sum")
            await e.crash()
            release("model.sum")
            await e.start()
            out = await e.client.result(rid, timeout=10)
        assert out == "sum says plan says x | plan says y"
        assert counts() == {"model.plan": 2, "model.sum": 2}  # x and y once each; sum was in flight

    asyncio.run(main())


def test_call_order_issues_tickets_in_the_order_they_were_taken() -> None:
    async def main() -> list[int]:
        order, issued = CallOrder(), []

        async def call(ticket: int, delay: float) -> None:
            await asyncio.sleep(delay)  # e.g. a callback handler running in a thread
            await order.turn(ticket)
            order.done(ticket)
            issued.append(ticket)

        tickets = [order.take() for _ in range(4)]
        await asyncio.gather(*(call(t, d) for t, d in zip(tickets, (0.03, 0.0, 0.01, 0.0), strict=True)))
        gave_up = order.take()
        order.done(gave_up)  # a call that ended without issuing
        last = order.take()
        await asyncio.wait_for(order.turn(last), 1)
        return issued

    assert asyncio.run(main()) == [0, 1, 2, 3]



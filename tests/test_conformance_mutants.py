"""The suite itself: it passes on the reference engine and catches deliberately broken backends.

Each mutant is the reference engine with one contract violation. If the suite let a mutant pass, the
suite would be too weak to prove anything about real engines.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

import pytest

from perdure.adapters.memory import MemoryBackend, MemoryEngine
from perdure.adapters.memory.engine import MemoryJournal
from perdure.conformance.harness import Harness, MemoryHarness, ProcessHarness
from perdure.conformance.runner import check_capabilities, judge, render, run_harness, run_matrix
from perdure.conformance.scenarios import SCENARIOS, Scenario, by_name
from perdure.core.backend import Capabilities
from perdure.core.errors import ConfigurationError
from perdure.core.types import Decision, Envelope, StepCall

# --- mutants ---------------------------------------------------------------------------------------


class _RerunJournal(MemoryJournal):
    """Re-executes steps whose result is recorded (no exactly-once record)."""

    async def step(self, call: StepCall) -> str:
        entry = self._reach(call.position, call.name, call.kind)
        entry.envelope = None
        return await super().step(call)


class _SilentReplayJournal(MemoryJournal):
    """Returns whatever is recorded at a position under the name asked for: a silent wrong replay."""

    async def step(self, call: StepCall) -> str:
        env = Envelope.from_json(await super().step(call))
        return Envelope(call.name, call.kind, env.ok, env.output, env.error, env.attempts).to_json()


class _RestartSleepJournal(MemoryJournal):
    """Forgets when a sleep started: a restarted worker sleeps the full time again."""

    async def sleep(self, position: int, seconds: float) -> str:
        entry = self.run.journal.get(position)
        if entry is not None and entry.envelope is None:
            entry.deadline = None
        return await super().sleep(position, seconds)


class _LosesDecisionsEngine(MemoryEngine):
    """Drops a decision sent while no worker is alive."""

    def decide(self, run_id: str, approval_id: str, decision: Decision) -> None:
        if not self.workers:
            return
        super().decide(run_id, approval_id, decision)


class _DoubleDecisionEngine(MemoryEngine):
    """Accepts a second decision (last one wins) instead of refusing it."""

    def decide(self, run_id: str, approval_id: str, decision: Decision) -> None:
        self.get(run_id).decisions.pop(approval_id, None)
        super().decide(run_id, approval_id, decision)


def _backend(name: str, *, engine: type[MemoryEngine] = MemoryEngine, journal: type[MemoryJournal] = MemoryJournal):
    engine_cls = type(f"{name}Engine", (engine,), {"journal_class": journal})
    return type(name, (MemoryBackend,), {"engine_class": engine_cls})


MUTANTS = {
    "reruns_completed_steps": (_backend("Rerun", journal=_RerunJournal), {"kill_during_each_step", "kill_between_steps", "now_uuid_stable_across_replay"}),
    "silent_wrong_replay": (_backend("Silent", journal=_SilentReplayJournal), {"nondeterminism"}),
    "restarts_sleeps": (_backend("Sleepy", journal=_RestartSleepJournal), {"durable_sleep_across_kill"}),
    "loses_decisions": (_backend("Loses", engine=_LosesDecisionsEngine), {"approval_kill_while_waiting"}),
    "accepts_double_decision": (_backend("Double", engine=_DoubleDecisionEngine), {"approval_double_decision"}),
}


def _harness(backend_cls: type[MemoryBackend], name: str) -> MemoryHarness:
    h = MemoryHarness(backend_cls, name=name)
    h.patience = 4.0  # a mutant that loses a decision would otherwise wait a minute
    return h


# --- tests -----------------------------------------------------------------------------------------


def test_suite_has_every_semantics_scenario() -> None:
    numbers = {s.number for s in SCENARIOS}
    # 1-15 are SEMANTICS.md's list; 16 are the agent-framework scenarios (when a framework is installed).
    assert numbers >= set(range(1, 16)), f"missing SEMANTICS.md scenarios: {set(range(1, 16)) - numbers}"
    assert numbers <= set(range(1, 17))
    assert len(SCENARIOS) >= 15


def test_reference_engine_passes_everything() -> None:
    matrix = run_matrix([MemoryHarness(name="memory")])
    print(render(matrix))
    assert {o.result for o in matrix["memory"].values()} == {"PASS"}, render(matrix)


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_suite_catches_mutant(mutant: str) -> None:
    backend_cls, must_fail = MUTANTS[mutant]
    scenarios = [by_name()[n] for n in sorted(must_fail)] + [by_name()["happy_path"]]
    matrix = run_matrix([_harness(backend_cls, mutant)], scenarios)
    row = matrix[mutant]
    caught = {n for n, o in row.items() if o.result in ("FAIL", "ERROR")}
    assert must_fail <= caught, f"{mutant} was not caught by {must_fail - caught}:\n{render(matrix)}"
    assert row["happy_path"].result == "PASS", "a mutant still runs the happy path; only its bug must show"


def test_known_failure_is_strict() -> None:
    """A scenario declared a known failure must fail; the day it passes, the matrix goes red (XPASS)."""

    class Declares(MemoryBackend):
        capabilities: ClassVar[Capabilities] = Capabilities(
            separate_worker_processes=False, known_failures={"happy_path": "pretend it is broken"}
        )

    matrix = run_matrix([MemoryHarness(Declares, name="declares")], [by_name()["happy_path"]])
    assert matrix["declares"]["happy_path"].result == "XPASS"

    rerun = MUTANTS["reruns_completed_steps"][0]
    broken = type("Broken", (rerun,), {"capabilities": Capabilities(
        separate_worker_processes=False, known_failures={"kill_during_each_step": "reruns steps"})})
    matrix = run_matrix([MemoryHarness(broken, name="broken")], [by_name()["kill_during_each_step"]])
    assert matrix["broken"]["kill_during_each_step"].result == "XFAIL"


def test_required_features_cannot_be_declared_unsupported() -> None:
    class Skips(MemoryBackend):
        capabilities: ClassVar[Capabilities] = Capabilities(
            separate_worker_processes=False, unsupported={"approval": "no humans here"}
        )

    with pytest.raises(ConfigurationError, match="Required features cannot be skipped"):
        check_capabilities(MemoryHarness(Skips, name="skips"))


class _LogOnlyHarness(ProcessHarness):
    """A process harness whose "workers" are only their log files (no engine is started)."""

    async def start_worker(self) -> None:
        pass


def test_a_failed_verdict_carries_what_the_workers_printed_during_the_scenario() -> None:
    """A result that differs on a loaded CI machine must be explainable from the test report alone."""
    h = _LogOnlyHarness("dbos+sqlite")
    try:
        (h.workdir / "worker-1.log").write_text("printed during an earlier scenario\n")

        async def runs_twice(h: Harness) -> dict[str, int]:
            with open(h.workdir / "worker-1.log", "a") as log:
                log.write("activity timed out, retrying\n")
            (h.workdir / "worker-2.log").write_text("perdure worker ready\n")
            return {"calls": 2}

        s = Scenario("runs_twice", 1, "", runs_twice)
        got = asyncio.run(run_harness(h, [s]))["runs_twice"]
        outcome = judge(s, h, {"calls": 1}, *got)
        assert outcome.result == "FAIL"
        assert ".calls: expected 1, got 2" in outcome.detail
        assert "activity timed out, retrying" in outcome.detail and "perdure worker ready" in outcome.detail
        assert "earlier scenario" not in outcome.detail
        assert judge(s, h, {"calls": 2}, *got).detail == ""  # a pass carries nothing
    finally:
        h.teardown()

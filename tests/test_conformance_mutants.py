"""The suite itself: it passes on the reference engine and catches deliberately broken backends.

Each mutant is the reference engine with one contract violation. If the suite let a mutant pass, the
suite would be too weak to prove anything about real engines.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

import pytest

from perdure.adapters.memory import MemoryBackend, MemoryEngine
from perdure.adapters.memory.engine import MemoryJournal
from perdure.conformance import harness as harness_module
from perdure.conformance.harness import Harness, MemoryHarness, ProcessHarness, harness_for
from perdure.conformance.runner import (
    check_capabilities,
    failed,
    judge,
    render,
    run_harness,
    run_matrix,
    to_json,
    verdicts,
)
from perdure.conformance.scenarios import SCENARIOS, Scenario, by_name
from perdure.core.backend import Capabilities
from perdure.core.errors import ConfigurationError, UnknownBackendError
from perdure.core.runtime import timeout_envelope
from perdure.core.types import ApprovalRequest, Decision, Envelope, RunInfo, RunStatus, StepCall, StepKind

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


class _RerunToolsJournal(MemoryJournal):
    """Replays completed steps but runs completed *tools* again (their idempotency key hides the effect)."""

    async def step(self, call: StepCall) -> str:
        if call.kind is StepKind.TOOL:
            self._reach(call.position, call.name, call.kind).envelope = None
        return await super().step(call)


class _ResetDeadlineJournal(MemoryJournal):
    """Starts an approval's timeout again from zero in a restarted worker (the deadline is not durable)."""

    async def approval(self, request: ApprovalRequest) -> str:
        entry = self.run.journal.get(request.position)
        if entry is not None and entry.envelope is None and request.timeout is not None:
            entry.deadline = time.time() + request.timeout
        return await super().approval(request)


class _EarlyDeadlineJournal(MemoryJournal):
    """Fixes an approval's deadline at a fifth of its timeout (the request, and its message, unchanged)."""

    async def approval(self, request: ApprovalRequest) -> str:
        entry = self._reach(request.position, request.name, StepKind.APPROVAL)
        if entry.envelope is None and entry.request is None and request.timeout is not None:
            entry.request = request
            entry.deadline = time.time() + request.timeout / 5
        return await super().approval(request)


class _DeadlineFirstJournal(MemoryJournal):
    """A deadline that passed while no worker ran beats a decision sent after it, which was accepted."""

    async def approval(self, request: ApprovalRequest) -> str:
        entry = self._reach(request.position, request.name, StepKind.APPROVAL)
        if entry.envelope is None and entry.deadline is not None and time.time() >= entry.deadline:
            return self._record(entry, timeout_envelope(request))
        return await super().approval(request)


class _IgnoresCancelWhileWaitingEngine(MemoryEngine):
    """Cancels a run inside a step, but not one waiting on an approval."""

    def cancel(self, run_id: str) -> None:
        if self.get(run_id).status is not RunStatus.WAITING:
            super().cancel(run_id)


class _OldestFirstBackend(MemoryBackend):
    """Lists every run, oldest first, whatever the limit."""

    async def list_runs(self, limit: int = 50) -> list[RunInfo]:
        return list(reversed(await super().list_runs(10_000)))


class _NeverRunningBackend(MemoryBackend):
    """Reports PENDING until a run ends, where a worker is executing it (RUNNING)."""

    async def describe(self, run_id: str) -> RunInfo:
        info = await super().describe(run_id)
        return info.model_copy(update={"status": RunStatus.PENDING}) if info.status is RunStatus.RUNNING else info


class _ClaimsStepStartsBackend(MemoryBackend):
    """Declares it journals a step when it starts, and runs a replaced in-flight step's successor anyway."""

    @property
    def journals_step_start(self) -> bool:
        return True


def _backend(name: str, *, engine: type[MemoryEngine] = MemoryEngine, journal: type[MemoryJournal] = MemoryJournal):
    engine_cls = type(f"{name}Engine", (engine,), {"journal_class": journal})
    return type(name, (MemoryBackend,), {"engine_class": engine_cls})


MUTANTS = {
    "reruns_completed_steps": (_backend("Rerun", journal=_RerunJournal), {"kill_during_each_step", "kill_between_steps", "now_uuid_stable_across_replay"}),
    "silent_wrong_replay": (_backend("Silent", journal=_SilentReplayJournal), {"nondeterminism"}),
    "restarts_sleeps": (_backend("Sleepy", journal=_RestartSleepJournal), {"durable_sleep_across_kill"}),
    "loses_decisions": (_backend("Loses", engine=_LosesDecisionsEngine), {"approval_kill_while_waiting"}),
    "accepts_double_decision": (_backend("Double", engine=_DoubleDecisionEngine), {"approval_double_decision"}),
    "reruns_completed_tools": (_backend("RerunTools", journal=_RerunToolsJournal), {"tool_completed_before_kill"}),
    "resets_approval_deadlines": (_backend("ResetDeadline", journal=_ResetDeadlineJournal), {"approval_timeout"}),
    "early_approval_deadlines": (_backend("EarlyDeadline", journal=_EarlyDeadlineJournal), {"approval_timeout"}),
    "timeout_beats_a_late_decision": (_backend("DeadlineFirst", journal=_DeadlineFirstJournal),
                                      {"approval_decided_after_deadline_while_no_worker"}),
    "ignores_cancel_while_waiting": (_backend("IgnoresCancel", engine=_IgnoresCancelWhileWaitingEngine), {"cancel"}),
    "lists_runs_oldest_first": (_OldestFirstBackend, {"inspection"}),
    "never_reports_running": (_NeverRunningBackend, {"kill_between_steps"}),
    "misdeclares_step_start_journaling": (_ClaimsStepStartsBackend, {"step_replaced_while_in_flight"}),
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
    assert verdicts(matrix)["memory"]["conformant"] is True and "memory: CONFORMANT" in render(matrix)


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
    judged: list[tuple[str, str]] = []
    matrix = run_matrix([MemoryHarness(broken, name="broken")], [by_name()["kill_during_each_step"]],
                        progress=lambda h, s, outcome: judged.append((s.name, outcome.result)))
    cell = matrix["broken"]["kill_during_each_step"]
    assert cell.result == "XFAIL" and judged == [("kill_during_each_step", "XFAIL")]  # progress is the verdict
    assert cell.detail.startswith("reruns steps\nfails with: ")  # the declared reason and the failure now
    # A known failure keeps the run green but never makes the backend conformant.
    assert not failed(matrix)
    assert verdicts(matrix)["broken"] == {"conformant": False, "complete": False,
                                          "known_failures": ["kill_during_each_step"], "failed": []}
    assert "broken: NOT CONFORMANT (1 declared known failures)" in render(matrix)
    assert to_json(matrix)["verdicts"]["broken"]["conformant"] is False


def test_the_cli_exits_0_on_a_known_failure_and_1_with_strict(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    import argparse

    from perdure.conformance import runner

    broken = type("Broken", (MUTANTS["reruns_completed_steps"][0],), {"capabilities": Capabilities(
        separate_worker_processes=False, known_failures={"kill_during_each_step": "reruns steps"})})
    monkeypatch.setattr(runner, "harness_for", lambda target: MemoryHarness(broken, name="broken"))
    codes = []
    for strict in (False, True):
        args = argparse.Namespace(list=False, json=False, targets=["broken"], output=str(tmp_path / "m.json"),
                                  scenario=["kill_during_each_step"], strict=strict)
        codes.append(runner.cli_main(args))
    assert codes == [0, 1]


def test_targets_are_resolved_first_named_apart_redacted_and_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UnknownBackendError):  # at once, not after the reference engine ran the suite
        run_matrix(["nosuch://x", "memory"])
    matrix = run_matrix(["memory", "MEMORY://other"], [by_name()["happy_path"]])
    assert sorted(matrix) == ["memory", "memory#2"]
    # One scenario passing is no verdict on the backend.
    assert "memory: passes the 1 scenarios run (not the whole suite: no verdict)" in render(matrix)
    assert to_json(matrix)["verdicts"]["memory"]["conformant"] is False
    assert to_json(matrix)["scenarios"] == [{"name": "happy_path", "number": 1, "doc": "Three steps, no crash."}]
    h = ProcessHarness("DBOS+PostgreSQL://app:hunter2@127.0.0.1:5432/db")
    try:
        assert h.name == "dbos+postgresql://app:***@127.0.0.1:5432/db" and h.url.startswith("dbos+postgresql://app:hunter2@")
    finally:
        h.teardown()

    class OwnScheme(MemoryBackend):  # a third-party backend built on the reference engine, run in-process
        schemes: ClassVar[tuple[str, ...]] = ("ownmem",)
        capabilities: ClassVar[Capabilities] = Capabilities(separate_worker_processes=False)

    monkeypatch.setattr(harness_module, "backend_class", lambda scheme: OwnScheme)
    own = harness_for("OwnMem://")
    assert isinstance(own, MemoryHarness) and own.name == "ownmem" and own.url.startswith("ownmem://")
    assert run_matrix([own], [by_name()["happy_path"]])["ownmem"]["happy_path"].result == "PASS"


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

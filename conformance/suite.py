"""The conformance suite as pytest tests, for backend authors' own test suites.

Subclass :class:`ConformanceSuite` in your tests and name your backend::

    # tests/test_conformance.py
    from perdure.conformance.suite import ConformanceSuite

    class TestMyBackend(ConformanceSuite):
        target = "mybackend://127.0.0.1:9999"   # a running engine, or a scheme whose dev_server starts one

Every scenario becomes one test. A backend's ``Capabilities.known_failures`` run as strict expected
failures; required features cannot be skipped. Or, with no code at all: ``pytest --perdure-conformance URL``.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from .agents import NOT_LOADED
from .harness import Harness, MemoryHarness, harness_for
from .runner import check_capabilities, judge, run_harness
from .scenarios import SCENARIOS, by_name

_reference: dict[str, tuple[Any, str | None, float]] = {}


def reference_result(name: str) -> tuple[Any, str | None, float]:
    """The reference engine's result for one scenario (computed once per process)."""
    if name not in _reference:
        h = MemoryHarness(name="reference")
        h.setup()
        try:
            _reference.update(asyncio.run(run_harness(h, [by_name()[name]])))
        finally:
            h.teardown()
    return _reference[name]


def warn_not_loaded() -> None:
    """Say which scenario families this environment leaves out (their framework is not installed)."""
    for framework, why in sorted(NOT_LOADED.items()):
        warnings.warn(f"perdure conformance: the {framework} scenarios do not run ({why})", stacklevel=2)


class ConformanceSuite:
    """Every conformance scenario as a test, against ``target`` (or the harness :meth:`make_harness` gives)."""

    target: ClassVar[str] = ""

    def make_harness(self) -> Harness:
        if not self.target:
            raise pytest.UsageError(f"{type(self).__name__}.target is not set (a backend URL or scheme)")
        return harness_for(self.target)

    @pytest.fixture(scope="class")
    @classmethod
    def perdure_harness(cls) -> Iterator[Harness]:
        h = cls().make_harness()
        check_capabilities(h)
        warn_not_loaded()
        h.setup()
        try:
            yield h
        finally:
            h.teardown()

    @pytest.mark.parametrize("scenario", [s.name for s in SCENARIOS])
    def test_scenario(self, perdure_harness: Harness, scenario: str) -> None:
        expected, ref_error, _ = reference_result(scenario)
        assert ref_error is None, f"the reference engine failed {scenario}: {ref_error}"
        got, error, seconds = asyncio.run(run_harness(perdure_harness, [by_name()[scenario]]))[scenario]
        outcome = judge(by_name()[scenario], perdure_harness, expected, got, error, seconds)
        if outcome.result == "XFAIL":
            pytest.xfail(outcome.detail)
        assert outcome.result == "PASS", f"{outcome.result}: {outcome.detail}"

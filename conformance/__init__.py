"""The conformance suite: every scenario of SEMANTICS.md, run on a backend and on the reference engine,
compared as normalized traces.

Run it with ``perdure conformance TARGET`` or with pytest (``pytest --perdure-conformance TARGET``, or
subclass :class:`perdure.conformance.suite.ConformanceSuite` in your own tests).
"""

from .harness import Harness, MemoryHarness, ProcessHarness, harness_for
from .runner import Outcome, render, run_matrix
from .scenarios import SCENARIOS, Scenario

__all__ = [
    "SCENARIOS", "Harness", "MemoryHarness", "Outcome", "ProcessHarness", "Scenario", "harness_for",
    "render", "run_matrix",
]

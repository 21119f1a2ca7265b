"""Collected by the pytest plugin when ``--perdure-conformance TARGET`` is given.

Absolute imports only: pytest may import this file under another module name (the repository root is
the package root), and relative imports would register the conformance workflows twice.
"""

from __future__ import annotations

import pytest

from perdure.conformance.suite import ConformanceSuite


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "perdure_target" in metafunc.fixturenames:
        from perdure.core.backend import redact_url

        targets = metafunc.config.getoption("--perdure-conformance")
        metafunc.parametrize("perdure_target", targets, ids=[redact_url(t) for t in targets], scope="class")


class TestPerdureConformance(ConformanceSuite):
    @pytest.fixture(scope="class")
    @classmethod
    def perdure_harness(cls, perdure_target: str):  # type: ignore[override]
        from perdure.conformance.harness import harness_for
        from perdure.conformance.runner import check_capabilities
        from perdure.conformance.suite import warn_not_loaded

        h = harness_for(perdure_target)
        check_capabilities(h)
        warn_not_loaded()
        h.setup()
        try:
            yield h
        finally:
            h.teardown()

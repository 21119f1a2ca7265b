"""The conformance suite on Temporal: every scenario, against the dev server perdure starts itself, with
real worker processes (``python -m perdure worker``) SIGKILLed for real."""

from __future__ import annotations

import atexit
from collections.abc import Iterator

import pytest

pytest.importorskip("temporalio")

from perdure.adapters.temporal import hard_exit  # noqa: E402
from perdure.conformance.suite import ConformanceSuite  # noqa: E402

pytestmark = pytest.mark.engine("temporal")


@pytest.fixture(scope="session", autouse=True)
def _exit_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    """This process used the Temporal SDK, which can crash at interpreter exit: leave with os._exit."""
    yield
    session = request.session
    atexit.register(lambda: hard_exit(int(getattr(session, "exitstatus", 0) or 0)))


class TestTemporalConformance(ConformanceSuite):
    target = "temporal"

"""The whole conformance suite on every real engine: dev servers started by perdure's own code, worker
processes (``python -m perdure worker URL --app perdure.conformance.app``) SIGKILLed for real, and every
scenario's normalized trace compared with the reference engine's -- the core scenarios of SEMANTICS.md and
the OpenAI Agents SDK and LangGraph scenarios alike.

Nothing is skipped: a missing engine fails here (``scripts/setup.sh --engines`` installs them all).
"""

from __future__ import annotations

import atexit
from collections.abc import Iterator

import pytest

from perdure.conformance.suite import ConformanceSuite


@pytest.fixture(scope="session", autouse=True)
def _temporal_exit_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    """This process uses the Temporal SDK, which can crash at interpreter exit: leave with os._exit,
    keeping pytest's exit status (see ENGINES.md)."""
    yield
    from perdure.adapters.temporal import hard_exit

    session = request.session
    atexit.register(lambda: hard_exit(int(getattr(session, "exitstatus", 0) or 0)))


class TestDBOSSQLite(ConformanceSuite):
    target = "dbos+sqlite"


class TestDBOSPostgres(ConformanceSuite):
    target = "dbos+postgresql"


class TestTemporal(ConformanceSuite):
    target = "temporal"


class TestRestate(ConformanceSuite):
    target = "restate"

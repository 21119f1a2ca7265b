"""The OpenAI Agents SDK scenarios on the real engines: worker processes SIGKILLed for real.

Each engine's dev server is started by the project's own code (``Backend.dev_server``), worker
processes run ``python -m perdure worker URL --app perdure.conformance.app``, and every agent
scenario's trace (status, output, every step record, model/tool call counts, effects) must equal the
reference engine's. Engines that are not installed are skipped.
"""

from __future__ import annotations

import importlib.util

import pytest

pytest.importorskip("agents")

from perdure.conformance.runner import render, run_matrix  # noqa: E402
from perdure.conformance.scenarios import SCENARIOS  # noqa: E402

ENGINES = {
    "dbos+sqlite": "dbos",
    "dbos+postgresql": "dbos",
    "temporal": "temporalio",
    "restate": "restate",
}


@pytest.mark.slow
@pytest.mark.parametrize("target", list(ENGINES))
def test_openai_agents_conformance_with_real_kills(target: str) -> None:
    if importlib.util.find_spec(ENGINES[target]) is None:
        pytest.skip(f"{ENGINES[target]} is not installed (pip install perdure[{ENGINES[target]}])")
    chosen = [s for s in SCENARIOS if s.name.startswith("oai_")]
    matrix = run_matrix([target], chosen)
    row = next(iter(matrix.values()))
    assert all(o.result == "PASS" for o in row.values()), render(matrix)

"""The LangGraph scenarios on the real engines: worker processes SIGKILLed for real.

Each engine's dev server is started by the project's own code (``Backend.dev_server``), worker processes
run ``python -m perdure worker URL --app perdure.conformance.app`` (which loads
perdure/conformance/agents/langgraph.py), and every LangGraph scenario's trace -- status, output, every
step record, model and tool call counts, effects -- must equal the reference engine's. Each scenario also
asserts that no completed model or tool call ran twice. Engines that are not installed are skipped.
"""

from __future__ import annotations

import importlib.util

import pytest

pytest.importorskip("langgraph")

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
def test_langgraph_conformance_with_real_kills(target: str) -> None:
    if importlib.util.find_spec(ENGINES[target]) is None:
        pytest.skip(f"{ENGINES[target]} is not installed (pip install perdure[{ENGINES[target]}])")
    chosen = [s for s in SCENARIOS if s.name.startswith("langgraph_")]
    assert len(chosen) == 5, [s.name for s in chosen]
    matrix = run_matrix([target], chosen)
    row = next(iter(matrix.values()))
    assert all(o.result == "PASS" for o in row.values()), render(matrix)

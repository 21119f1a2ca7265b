"""Agent-framework conformance scenarios (OpenAI Agents SDK, LangGraph).

Each module here defines its workflows *and* its scenarios; it is loaded (by the scenario list and by
worker processes alike) when its framework is installed. Once loaded, its scenarios are required like
every other: a backend cannot skip them.
"""

from __future__ import annotations

import importlib
import importlib.util

# framework package -> module with its conformance workflows and scenarios
MODULES = {
    "agents": "perdure.conformance.agents.openai_agents",
    "langgraph": "perdure.conformance.agents.langgraph",
}
EXTRAS = {"agents": "openai-agents", "langgraph": "langgraph"}
# Scenario families left out because their framework is not installed here: framework -> how to get them.
# The matrix and its JSON say so, so a run without them is never mistaken for the whole suite.
NOT_LOADED: dict[str, str] = {}


def load() -> list[str]:
    """Import the agent scenario modules whose framework is installed; returns their names."""
    loaded = []
    for framework, module in MODULES.items():
        if importlib.util.find_spec(framework) is None:
            NOT_LOADED[EXTRAS[framework]] = f"not installed here: pip install 'perdure[{EXTRAS[framework]}]'"
            continue
        try:
            importlib.util.find_spec(module)
        except ModuleNotFoundError:
            continue
        if importlib.util.find_spec(module) is None:
            continue
        importlib.import_module(module)
        loaded.append(module)
    return loaded

"""The app conformance workers serve (``perdure worker URL --app perdure.conformance.app``): the core
scenarios' workflows and, when their framework is installed, the agent-framework scenarios' workflows."""

from . import workflows  # noqa: F401  (registers the workflows)
from .agents import load

load()

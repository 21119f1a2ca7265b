"""perdure for LangGraph (``pip install perdure[langgraph]``): compiled graphs as durable workflows.

How LangGraph maps onto perdure (details in each module and in docs/langgraph.md):

============================  =============================================================================
LangGraph                     perdure
============================  =============================================================================
``graph.ainvoke(input)``      ``await run_graph(graph, input)`` inside a ``@perdure.workflow`` (graph.py)
chat model call               step ``langgraph.model.<name>`` of a :func:`durable_model` (model.py)
``ToolNode`` tool call        tool ``langgraph.tool.<tool>``, idempotency key ``<run>:<tool_call id>``
                              (:class:`DurableToolNode`, tools.py)
``interrupt()`` / resume      :func:`perdure.approval` / ``client.approve``/``reject`` (graph.py);
                              :func:`ask_approval` in a node returns the :class:`~perdure.Decision`
parallel branches, ``Send``   run one task at a time in LangGraph's task order; parallel tool calls
                              run concurrently, issued in ``tool_calls`` order (calls.py)
checkpointer                  none: perdure's journal is the durable record; run_graph uses a private
                              in-memory checkpointer per execution (docs/langgraph.md explains why)
============================  =============================================================================
"""

from __future__ import annotations

from .graph import ask_approval, run_graph
from .messages import from_data as message_from_data
from .messages import to_data as message_to_data
from .model import DurableChatModel, durable_model, get_model
from .tools import DurableToolNode, get_tool

__all__ = [
    "DurableChatModel",
    "DurableToolNode",
    "ask_approval",
    "durable_model",
    "get_model",
    "get_tool",
    "message_from_data",
    "message_to_data",
    "run_graph",
]

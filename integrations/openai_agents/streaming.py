"""Stream events synthesized from a recorded model response (durable streaming, whole-response grain).

A durable model call is recorded whole: token-by-token deltas cannot be replayed from a journal that
stores one response per step, and a stream cut by a crash has no recorded outcome to resume from. So
:meth:`DurableModel.stream_response` runs the model call as one step and then emits, at once, the
events a streaming provider would have ended with: ``response.created``, one ``output_text.delta``
carrying each text part whole (so the usual "print the deltas" loop still prints the answer), one
``output_item.done`` per item, and ``response.completed`` with the full response -- the events the SDK's
streaming loop builds its :class:`ModelResponse` from.
"""

from __future__ import annotations

from typing import Any

from agents.items import ModelResponse, TResponseStreamEvent
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseCreatedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseTextDeltaEvent,
    ResponseUsage,
)
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails


def _usage(response: ModelResponse) -> ResponseUsage:
    u = response.usage
    usage = ResponseUsage(
        input_tokens=u.input_tokens,
        output_tokens=u.output_tokens,
        total_tokens=u.total_tokens,
        input_tokens_details=InputTokensDetails(
            cached_tokens=getattr(u.input_tokens_details, "cached_tokens", 0) or 0,
            cache_write_tokens=getattr(u.input_tokens_details, "cache_write_tokens", 0) or 0,
        ),
        output_tokens_details=OutputTokensDetails(
            reasoning_tokens=getattr(u.output_tokens_details, "reasoning_tokens", 0) or 0
        ),
    )
    # The SDK counts requests from this marker when present (as its own scripted test model does).
    object.__setattr__(usage, "_agents_sdk_request_count", u.requests)
    return usage


def _response(response: ModelResponse, status: Any, output: list[Any]) -> Response:
    return Response(
        id=response.response_id or "durable-response",
        created_at=0,
        model="perdure-durable-model",
        object="response",
        output=output,
        tool_choice="auto",
        tools=[],
        top_p=None,
        parallel_tool_calls=True,
        status=status,
        usage=_usage(response),
    )


def response_events(response: ModelResponse) -> list[TResponseStreamEvent]:
    """The stream events that end in ``response``, in order (sequence numbers from 0)."""
    events: list[TResponseStreamEvent] = []
    seq = 0

    def nxt() -> int:
        nonlocal seq
        seq += 1
        return seq - 1

    events.append(ResponseCreatedEvent(
        response=_response(response, "in_progress", []), sequence_number=nxt(), type="response.created"
    ))
    for index, item in enumerate(response.output):
        if isinstance(item, ResponseOutputMessage):
            for part_index, part in enumerate(item.content):
                if isinstance(part, ResponseOutputText):
                    events.append(ResponseTextDeltaEvent(
                        content_index=part_index, delta=part.text, item_id=item.id, logprobs=[],
                        output_index=index, sequence_number=nxt(), type="response.output_text.delta",
                    ))
        events.append(ResponseOutputItemDoneEvent(
            item=item, output_index=index, sequence_number=nxt(), type="response.output_item.done"  # type: ignore[arg-type]
        ))
    completed = _response(response, "completed", list(response.output))
    if response.response_id is None:
        object.__setattr__(completed, "id", None)  # the Model boundary allows no id; Response does not
    events.append(ResponseCompletedEvent(response=completed, sequence_number=nxt(), type="response.completed"))
    return events

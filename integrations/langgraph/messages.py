"""LangChain messages as the plain JSON perdure journals, and the fingerprints that check replays.

Model and tool results cross the durability boundary as ``{"type": ..., "data": ...}`` dicts
(``langchain_core.messages.message_to_dict``), never pickles, so a journal written by one engine or one
Python process reads the same everywhere and shows up readably in ``perdure steps``.

A *fingerprint* is a digest of what a durable call was asked (messages, tool call, options), recorded
next to its result. On replay the call is asked again with the same inputs; a different fingerprint
means the graph took another path than the recorded one (changed code, timing-dependent concurrency), and
the integration raises :class:`~perdure.NonDeterminismError` instead of handing a recorded answer to the
wrong question. Message ids are left out: LangGraph's ``add_messages`` gives id-less messages a random
id on every execution, so ids are not part of what was asked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import pydantic_core
from langchain_core.messages import BaseMessage, message_to_dict, messages_from_dict

from ...core.codec import to_jsonable

# The id LangChain gives a model's message when the provider sent none: "lc_run-<random run uuid>".
_GENERATED_ID_PREFIX = "lc_run-"


def to_data(message: BaseMessage, *, where: str) -> dict[str, Any]:
    """``message`` as plain JSON data (checked by perdure's codec: size limit, serializability)."""
    data: dict[str, Any] = to_jsonable(message_to_dict(message), where=where)
    return data


def from_data(data: dict[str, Any]) -> BaseMessage:
    """The message :func:`to_data` produced (a fresh object every time: callers may mutate it)."""
    return messages_from_dict([data])[0]


def many_to_data(messages: Sequence[BaseMessage], *, where: str) -> list[dict[str, Any]]:
    return [to_data(m, where=where) for m in messages]


def stable_id(message: BaseMessage, idempotency_key: str) -> None:
    """Replace an id LangChain generated from a random run id by one derived from the call's key.

    Provider ids (``chatcmpl-...``) are kept. A generated id would differ between the first execution
    and nothing else (the recorded message is replayed), but it would make the run's output differ from
    one engine or run to another for no reason; the key is stable and unique per call.
    """
    if message.id is None or message.id.startswith(_GENERATED_ID_PREFIX):
        message.id = f"lc_perdure-{idempotency_key}"


def _without_ids(data: Any) -> Any:
    if isinstance(data, dict):
        inner = data.get("data")
        if "type" in data and isinstance(inner, dict):
            return {"type": data["type"], "data": {k: v for k, v in inner.items() if k != "id"}}
        return {k: _without_ids(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_without_ids(v) for v in data]
    return data


def fingerprint(what: Any) -> str:
    """A short digest of a call's inputs (JSON data with messages as :func:`to_data` dicts), ids ignored."""
    text = pydantic_core.to_json(_without_ids(what))
    return hashlib.sha256(text).hexdigest()[:16]

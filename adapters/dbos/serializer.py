"""The JSON serializer DBOS uses for everything perdure stores, in place of DBOS's default (pickle).

DBOS 3.4 takes a pluggable :class:`dbos._serialization.Serializer` (``DBOSConfig["serializer"]``, and the
same object on :class:`dbos.DBOSClient`). With this one every value in the system database is JSON:
workflow inputs and outputs, step outputs (perdure envelopes), messages (decisions), events (pending
approvals) and errors. Journals stay readable with plain SQL and portable to other tools, and nothing
is ever unpickled.

Values perdure has already encoded with its own codec travel as :class:`RawJSON` and are stored
verbatim, so the hot path (a step's envelope) is encoded exactly once.
"""

from __future__ import annotations

from typing import Any

import pydantic_core
from dbos._serialization import Serializer

_ERROR_KEY = "__perdure_error__"


class RawJSON(str):
    """JSON text that is stored as is (not as a JSON string). Reads back as the parsed value."""

    __slots__ = ()


class RecordedError(Exception):
    """An exception read back from the system database: its original class name and message.

    DBOS stores the exceptions of failed workflows and steps through the serializer; this is what it gets
    back. ``type_name`` is the original class name (``NonDeterminismError``, ``StepFailedError``...).
    """

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.message = message


def error_type(exc: BaseException) -> str:
    """The original class name of an exception, also for one read back as :class:`RecordedError`."""
    return exc.type_name if isinstance(exc, RecordedError) else type(exc).__name__


class PerdureJSONSerializer(Serializer):
    """JSON for every value DBOS stores; exceptions as ``{"__perdure_error__": {type, message}}``."""

    def name(self) -> str:
        # Recorded in each row's ``serialization`` column: rows written by another serializer are refused
        # by DBOS instead of being misread.
        return "perdure_json"

    def serialize(self, data: Any) -> str:
        if isinstance(data, RawJSON):
            return str(data)
        if isinstance(data, BaseException):
            data = {_ERROR_KEY: {"type": error_type(data), "message": str(data)}}
        try:
            return pydantic_core.to_json(data).decode()
        except pydantic_core.PydanticSerializationError as exc:
            # Only DBOS-internal values reach this point (perdure encodes its own values first).
            raise TypeError(f"perdure's DBOS serializer cannot store a {type(data).__qualname__}: {exc}") from None

    def deserialize(self, serialized_data: str) -> Any:
        value = pydantic_core.from_json(serialized_data)
        if isinstance(value, dict) and len(value) == 1 and _ERROR_KEY in value:
            err = value[_ERROR_KEY]
            return RecordedError(str(err.get("type", "Error")), str(err.get("message", "")))
        return value


SERIALIZER = PerdureJSONSerializer()

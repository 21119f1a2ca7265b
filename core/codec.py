"""The one JSON codec every engine uses (pydantic), so journals are portable and readable.

Every value that crosses a durability boundary -- workflow arguments, step arguments and results,
approval payloads and decisions -- goes through :func:`encode` / :func:`decode`. Values are *always*
round-tripped, also on the first execution, so a step returns the same Python value the first time as on
every replay (a ``datetime`` comes back as a ``datetime`` because the annotation says so, never as a
string on one engine and an object on another).

Decoding always validates the JSON *text* against the annotation (pydantic's JSON mode), in one pass:
what was parsed is never validated again as Python objects, which would refuse an ISO date string for a
strict model's ``datetime`` field. Annotations keep their ``Annotated`` metadata (``Field(gt=0)``,
validators), so constraints hold on every decode.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import re
import types
import typing
from collections.abc import Callable
from functools import cached_property, lru_cache
from typing import Any, Literal

import pydantic_core
from pydantic import ConfigDict, TypeAdapter, ValidationError
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from .errors import PayloadTooLargeError, SerializationError, SignatureMismatchError

DEFAULT_MAX_PAYLOAD_BYTES = 1_048_576
# The smallest limit PERDURE_MAX_PAYLOAD_BYTES may set. Values up to this size are never checked, which
# keeps the environment lookup off the hot path of small step arguments and results.
MIN_MAX_PAYLOAD_BYTES = 1024
_ANY_ADAPTER: TypeAdapter[Any] = TypeAdapter(Any)

# JSON scalars whose round trip through the codec gives back an equal value of the same type, and the most
# characters one of them takes encoded (a str: 6 per character, as "\u0001", plus its quotes). A value of
# one of these types, under an annotation that admits exactly its type, is handed over unchanged: see
# CallCodec.passes_unchanged / result_passes_unchanged.
_NONE = type(None)
_SCALARS: frozenset[type] = frozenset({str, int, float, bool, _NONE})
_MAX_INT = 2**63  # |int| below this: at most 20 characters
_SCALAR_WIDTH = {int: 20, float: 24, bool: 5, _NONE: 4}


def _unchanged_types(annotation: Any) -> frozenset[type]:
    """The types of the values that ``annotation`` validates to themselves, for JSON scalars: every scalar
    for ``Any``; ``int`` for ``int``; ``{int, None}`` for ``int | None``; nothing for anything else --
    constrained (``Annotated``), literal, container and model types always take the codec's round trip."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return _SCALARS
    if annotation is None:
        return frozenset({_NONE})
    if annotation in _SCALARS:
        return frozenset({annotation})
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members: frozenset[Any] = frozenset(_NONE if m is None else m for m in typing.get_args(annotation))
        if members <= _SCALARS:
            return members
    return frozenset()


def _is_unchanged_scalar(value: Any, allowed: frozenset[type]) -> bool:
    """``value``'s own type is in ``allowed`` and its JSON round trip is exact (no NaN/infinity)."""
    t = type(value)
    return t in allowed and (t is not float or value - value == 0.0)


def max_payload_bytes() -> int:
    """The size limit for one encoded value: ``PERDURE_MAX_PAYLOAD_BYTES`` or 1 MiB.

    Read whenever a value over :data:`MIN_MAX_PAYLOAD_BYTES` is encoded (not cached), so a worker and its
    tests can change it through the environment; workers and clients check it when they start. The
    default stays under every engine's own limit (Temporal refuses payloads over 2 MB).
    """
    raw = os.environ.get("PERDURE_MAX_PAYLOAD_BYTES")
    if not raw:
        return DEFAULT_MAX_PAYLOAD_BYTES
    try:
        value = int(raw)
    except ValueError as exc:
        raise SerializationError(f"PERDURE_MAX_PAYLOAD_BYTES must be an integer, got {raw!r}") from exc
    if value < MIN_MAX_PAYLOAD_BYTES:
        raise SerializationError(f"PERDURE_MAX_PAYLOAD_BYTES must be at least {MIN_MAX_PAYLOAD_BYTES}, got {value}")
    return value


def encode(value: Any, *, where: str) -> str:
    """Encode ``value`` as JSON text. ``where`` names the value in errors ("output of step 'fetch'")."""
    try:
        data = pydantic_core.to_json(value)
    except (pydantic_core.PydanticSerializationError, TypeError, ValueError) as exc:
        raise SerializationError(
            f"cannot serialize {where}: value of type {type(value).__qualname__} is not JSON-serializable "
            f"({exc}). Return plain data, a pydantic model or a dataclass."
        ) from None
    if len(data) > MIN_MAX_PAYLOAD_BYTES and len(data) > (limit := max_payload_bytes()):
        raise PayloadTooLargeError(
            f"{where} is {len(data)} bytes encoded, over the limit of {limit} bytes "
            "(PERDURE_MAX_PAYLOAD_BYTES). Store large data elsewhere and pass a reference."
        )
    return data.decode()


@lru_cache(maxsize=1024)
def _adapter(annotation: Any) -> TypeAdapter[Any]:
    return TypeAdapter(annotation)


def adapter_for(annotation: Any) -> TypeAdapter[Any]:
    """A cached pydantic ``TypeAdapter`` for an annotation (unhashable annotations are built each time)."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return _ANY_ADAPTER
    try:
        return _adapter(annotation)
    except TypeError:  # unhashable annotation
        return TypeAdapter(annotation)


def decode(text: str, annotation: Any = Any, *, where: str) -> Any:
    """Decode JSON text into ``annotation`` (``Any``: plain JSON data)."""
    try:
        return adapter_for(annotation).validate_json(text)
    except ValidationError as exc:
        raise SerializationError(f"cannot decode {where} as {annotation!r}: {exc}") from None


def _type_name(annotation: Any) -> str:
    return annotation.__qualname__ if isinstance(annotation, type) else repr(annotation).replace("typing.", "")


def to_jsonable(value: Any, *, where: str) -> Any:
    """``value`` as plain JSON data (dicts, lists, str, numbers), checked against the size limit."""
    return pydantic_core.from_json(encode(value, where=where))


def digest(text: str) -> str:
    """The sha256 digest that binds an approval decision to the exact payload it approves."""
    return hashlib.sha256(text.encode()).hexdigest()


def is_digest(text: str) -> bool:
    """Whether ``text`` has the form of a :func:`digest` (64 lowercase hex characters)."""
    return _DIGEST.fullmatch(text) is not None


_DIGEST = re.compile(r"[0-9a-f]{64}")


class CallCodec:
    """Encodes the arguments and result of one function by its signature and type hints.

    Arguments are stored by parameter name (``{"topic": "x"}``) so journals read well, and decoded with
    each parameter's annotation; the result is decoded with the return annotation. ``label`` names the
    function in errors (``"step 'fetch'"``); it is only formatted into a message when something fails,
    because these methods run on every step.
    """

    def __init__(self, fn: Callable[..., Any], label: str | None = None) -> None:
        self.fn = fn
        self.name = getattr(fn, "__qualname__", repr(fn))
        self.label = label or self.name
        self._args_where = f"arguments of {self.label}"
        self._result_where = f"output of {self.label}"
        self.signature = inspect.signature(fn)
        try:
            hints = typing.get_type_hints(fn, include_extras=True)  # keep Annotated constraints
        except Exception:  # unresolvable forward references: fall back to plain JSON
            hints = {}
        self.return_annotation: Any = hints.get("return", Any)
        # Built here, at registration: an annotation pydantic cannot handle fails where it is declared.
        self._result_is_any = adapter_for(self.return_annotation) is _ANY_ADAPTER
        self._result_unchanged = _unchanged_types(self.return_annotation)
        self.params: list[tuple[str, inspect._ParameterKind, Any]] = []
        for p in self.signature.parameters.values():
            ann = hints.get(p.name, Any)
            if p.kind is inspect.Parameter.VAR_POSITIONAL:
                ann = list[ann]  # type: ignore[valid-type]
            elif p.kind is inspect.Parameter.VAR_KEYWORD:
                ann = dict[str, ann]  # type: ignore[valid-type]
            adapter_for(ann)  # as for the result: an annotation pydantic cannot handle fails at registration
            self.params.append((p.name, p.kind, ann))
        positional_kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        params = list(self.signature.parameters.values())
        self._simple = all(p.kind in positional_kinds for p in params)
        self._positional = [p.name for p in params if p.kind in positional_kinds]
        self._required = sum(1 for p in params if p.default is inspect.Parameter.empty)
        # For passes_unchanged: what each positional parameter hands over as is, and the encoded size of
        # the argument object without its values ({"name":,...}), an upper bound whatever is passed.
        self._unchanged = [_unchanged_types(hints.get(name, Any)) for name in self._positional]
        self._args_frame = 2 + sum(len(name.encode()) + 4 for name in self._positional)

    def encode_args(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        if self._simple and not kwargs and self._required <= len(args) <= len(self._positional):
            # The common case (positional arguments only), without Signature.bind's ~10 us.
            arguments: dict[str, Any] = dict(zip(self._positional, args, strict=False))
        else:
            try:
                arguments = self.signature.bind(*args, **kwargs).arguments
            except TypeError as exc:
                raise SignatureMismatchError(f"{self.label}: {exc}") from None
        return encode(arguments, where=self._args_where)

    def passes_unchanged(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Whether ``decode_args(encode_args(args, kwargs))`` is ``args`` itself: positional JSON scalars
        whose parameters admit exactly their types, small enough that the encoded arguments cannot reach
        the smallest payload limit, and ASCII strings only (nothing that could fail to encode).

        Then a body running in the caller's process can take the arguments as they are: the same values,
        of the same types, as the round trip would give it -- on every engine -- for a fraction of its cost.
        """
        if kwargs or not self._simple or not self._required <= len(args) <= len(self._positional):
            return False
        size = self._args_frame
        for value, allowed in zip(args, self._unchanged, strict=False):
            t = type(value)
            if t is str:
                if str not in allowed or not value.isascii():
                    return False
                size += 2 + 6 * len(value)
            elif t is int:
                if int not in allowed or not -_MAX_INT < value < _MAX_INT:
                    return False
                size += 20
            elif _is_unchanged_scalar(value, allowed):
                size += _SCALAR_WIDTH[t]
            else:
                return False
        return size <= MIN_MAX_PAYLOAD_BYTES

    def result_passes_unchanged(self, value: Any) -> bool:
        """Whether decoding ``encode_result(value)`` (which succeeded) gives back ``value`` itself: a JSON
        scalar of a type the return annotation admits exactly."""
        return _is_unchanged_scalar(value, self._result_unchanged)

    @cached_property
    def _args_adapter(self) -> TypeAdapter[Any]:
        """The encoded arguments object: each parameter under its own annotation (a missing one keeps its
        default), validated from JSON text in one pass. Made on first use: many steps never decode
        arguments (in-process calls hand them over as they are)."""
        fields = {name: ann for name, _, ann in self.params}
        make_typed_dict: Any = TypedDict  # a name and fields known only at run time
        shape = make_typed_dict(f"{self.name}.arguments", fields, total=False)
        # An argument no parameter takes (a misspelt name from a client that could not check it) fails the
        # decode, naming it, instead of being dropped while the parameter's default silently applies.
        shape.__pydantic_config__ = ConfigDict(extra="forbid")
        return TypeAdapter(shape)

    def decode_args(self, text: str) -> tuple[list[Any], dict[str, Any]]:
        try:
            raw = self._args_adapter.validate_json(text)
        except ValidationError as exc:
            error = exc.errors()[0]
            loc = error.get("loc", ())
            if error["type"] in ("json_invalid", "dict_type") or not loc:
                raise SerializationError(f"cannot decode arguments of {self.label}: {exc}") from None
            raise SerializationError(f"cannot decode argument {loc[0]!r} of {self.label}: {exc}") from None
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        positional = True  # after a skipped (defaulted) parameter, the rest must go by keyword
        for name, kind, _ in self.params:
            if name not in raw:
                positional = False  # a default applies
                continue
            value = raw[name]
            if kind is inspect.Parameter.POSITIONAL_ONLY or (
                positional and kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
            ):
                args.append(value)
            elif kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
                kwargs[name] = value
            elif kind is inspect.Parameter.VAR_POSITIONAL:
                args.extend(value)
            elif kind is inspect.Parameter.KEYWORD_ONLY:
                kwargs[name] = value
            else:
                kwargs.update(value)
        return args, kwargs

    def encode_result(self, value: Any) -> str:
        return encode(value, where=self._result_where)

    def decode_result(self, text: str) -> Any:
        return decode(text, self.return_annotation, where=self._result_where)

    def returned(self, value: Any, text: str, *, decoded: bool) -> Any:
        """Check that ``value``, which the function returned and encoded as ``text``, fits its return
        annotation: what a caller decoding ``text`` gets back. A value that does not fit raises
        :class:`SerializationError` where it was returned, not later where it is read (a run that had
        recorded it could never read it back). ``decoded=False`` skips the decode where nothing in this
        process needs the value and any JSON fits (annotation ``Any``); the result is then ``value``.
        """
        if self.result_passes_unchanged(value) or (self._result_is_any and not decoded):
            return value
        try:
            return adapter_for(self.return_annotation).validate_json(text)
        except ValidationError as exc:
            raise SerializationError(
                f"{self._result_where} does not match its return annotation {_type_name(self.return_annotation)}: "
                f"got {type(value).__qualname__} ({exc.errors()[0]['msg']})"
            ) from None

    def decode_result_value(self, value: Any) -> Any:
        """Decode an already-parsed JSON value (a run's output as an engine reports it) with the return
        annotation -- as JSON, like every other decode (see the module docstring)."""
        if self._result_is_any:
            return value
        return self.decode_result(encode(value, where=self._result_where))

    @cached_property
    def _ok_envelope(self) -> TypeAdapter[Any]:
        fields = {"name": str, "kind": str, "ok": Literal[True], "output": self.return_annotation}
        return TypeAdapter(TypedDict(f"{self.name}.envelope", fields))  # type: ignore[operator]

    def decode_ok_envelope(self, text: str, name: str, kind: str) -> Any:
        """The output of a recorded success of step ``name`` of ``kind``, decoded from the envelope JSON in
        one pass; :data:`NOT_DECODED` for anything else (a failure, another step, an output that does not
        decode), which the caller takes apart the slow way for the right error."""
        try:
            env = self._ok_envelope.validate_json(text)
        except ValidationError:
            return NOT_DECODED
        if env["name"] != name or env["kind"] != kind:
            return NOT_DECODED
        return env["output"]


NOT_DECODED: Any = object()  # CallCodec.decode_ok_envelope: not a decodable success of this step

"""Model calls as perdure steps: :class:`DurableModel` (workflow side) and the step that calls the real model.

The Agents SDK asks a :class:`agents.Model` for each turn's response. Inside a perdure workflow the agent's
model is replaced by :class:`DurableModel`, which does not talk to any LLM: it records one call of the
step ``openai_agents.model`` with the request (instructions, input items, settings, tool and handoff
schemas, output schema). That step resolves the *real* model by its registered name and calls
``get_response``. Where the engine runs the step in the workflow's process (memory, DBOS, Restate) the
request is handed over as it is; only where it runs elsewhere (a Temporal activity) is it serialized and
rebuilt there. The :class:`ModelResponse` is stored as JSON and restored exactly, so a replayed run sees
the same responses as the first run and never calls the model again for a recorded turn.

Models are found by name because a step body cannot close over Python objects: register the model (or
a factory) under a name in every process with :func:`register_model`. An unregistered string name
("gpt-4.1") is resolved by the SDK's default provider (OpenAI, honouring ``OPENAI_API_KEY`` and
``OPENAI_BASE_URL``), or by the provider set with :func:`register_model_provider`.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Union

import pydantic_core
from agents import Handoff, ModelSettings
from agents.agent_output import AgentOutputSchemaBase
from agents.exceptions import UserError
from agents.items import ModelResponse, TResponseInputItem, TResponseOutputItem, TResponseStreamEvent
from agents.models.interface import Model, ModelProvider, ModelTracing
from agents.tool import FunctionTool, Tool
from openai.types.responses.response_prompt_param import ResponsePromptParam
from pydantic import AfterValidator, BaseModel, Field, TypeAdapter
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

import perdure
from perdure.core.codec import adapter_for
from perdure.core.context import current_run
from perdure.core.errors import ConfigurationError, RegistrationError
from perdure.core.registry import equivalent, same_definition
from perdure.core.retry import RetryPolicy

from .streaming import response_events

MODEL_STEP = "openai_agents.model"

# Client errors that will fail the same way on every attempt (HTTP 400/401/403/404/422).
MODEL_RETRY = RetryPolicy(
    max_attempts=4,
    initial_interval=1.0,
    backoff=2.0,
    max_interval=30.0,
    non_retryable=(
        "BadRequestError", "AuthenticationError", "PermissionDeniedError", "NotFoundError",
        "UnprocessableEntityError", "UserError",
    ),
)

_RESPONSE = TypeAdapter(ModelResponse)
_SETTINGS = TypeAdapter(ModelSettings)

ModelFactory = Callable[[], Model]
_models: dict[str, Model | ModelFactory] = {}
_instances: dict[str, Model] = {}
_provider: list[ModelProvider | Callable[[], ModelProvider]] = []


# --- the registry the step body resolves names in -------------------------------------------------
def register_model(name: str, model: Model | ModelFactory) -> str:
    """Make ``model`` (an instance, or a zero-argument factory called once per process) callable by
    durable model steps under ``name``. Call it at import time of the module that defines your agents,
    so every worker process knows it. An agent may then use ``model=name`` or the instance itself."""
    if not isinstance(name, str) or not name:
        raise RegistrationError(f"a model name must be a non-empty string, got {name!r}")
    if not isinstance(model, Model) and not callable(model):
        raise RegistrationError(f"register_model({name!r}, ...) needs an agents.Model or a factory, got {model!r}")
    existing = _models.get(name)
    if existing is not None and not _same_model(existing, model):
        raise RegistrationError(
            f"two different models are registered as {name!r} (another instance with other settings, or "
            "another factory); a model step finds its model by name, so one run would call the other's "
            "model: give each its own name"
        )
    _models[name] = model
    _instances.pop(name, None)
    return name


def _same_model(a: Model | ModelFactory, b: Model | ModelFactory) -> bool:
    if isinstance(a, Model) or isinstance(b, Model):
        return equivalent(a, b)
    return same_definition(a, b)


def register_model_provider(provider: ModelProvider | Callable[[], ModelProvider]) -> None:
    """Resolve model names nobody registered with this provider (default: the SDK's ``MultiProvider``)."""
    _provider[:] = [provider]


def name_of(model: Model) -> str | None:
    """The registered name of a model instance, if it was registered."""
    for name, registered in _models.items():
        if registered is model:
            return name
    return None


def resolve_model(name: str | None) -> Model:
    """The real model behind ``name`` in this process (registry, then the provider)."""
    if name is not None and name in _models:
        model = _instances.get(name)
        if model is None:
            entry = _models[name]
            model = entry if isinstance(entry, Model) else entry()
            _instances[name] = model
        return model
    if _provider:
        entry_p = _provider[0]
        provider = entry_p if isinstance(entry_p, ModelProvider) else entry_p()
        _provider[:] = [provider]
    else:
        from agents.models.multi_provider import MultiProvider

        provider = MultiProvider()
        _provider[:] = [provider]
    return provider.get_model(name)


# --- request serialization ------------------------------------------------------------------------
def _plain(value: Any, where: str) -> Any:
    try:
        return pydantic_core.from_json(pydantic_core.to_json(value, by_alias=True, exclude_none=False))
    except (pydantic_core.PydanticSerializationError, TypeError, ValueError) as exc:
        raise perdure.SerializationError(f"cannot serialize {where} for a durable model call: {exc}") from None


def _input(items: str | list[TResponseInputItem]) -> Any:
    """Input items as the SDK would send them: models dumped without unset fields (no invented nulls)."""
    if isinstance(items, str):
        return items
    out = []
    for item in items:
        if isinstance(item, BaseModel):
            out.append(item.model_dump(mode="json", by_alias=True, exclude_unset=True))
        else:
            out.append(_plain(item, "a model input item"))
    return out


def _encode_tool(tool: Tool) -> dict[str, Any]:
    if isinstance(tool, FunctionTool):
        return {
            "kind": "function",
            "name": tool.name,
            "description": tool.description,
            "params_json_schema": tool.params_json_schema,
            "strict_json_schema": tool.strict_json_schema,
            "defer_loading": tool.defer_loading,
        }
    if not dataclasses.is_dataclass(tool):
        raise ConfigurationError(f"tool {tool!r} cannot be sent to a durable model step")
    fields = {}
    for f in dataclasses.fields(tool):
        value = getattr(tool, f.name)
        if f.name.startswith("_") or value is None or callable(value):
            continue
        fields[f.name] = _plain(value, f"tool {type(tool).__name__}.{f.name}")
    return {"kind": "hosted", "class": f"{type(tool).__module__}:{type(tool).__qualname__}", "fields": fields}


async def _never(*_: Any) -> Any:
    raise UserError("a tool rebuilt for a durable model step cannot be invoked")


def _decode_tool(data: dict[str, Any]) -> Tool:
    if data["kind"] == "function":
        return FunctionTool(
            name=data["name"],
            description=data["description"],
            params_json_schema=data["params_json_schema"],
            on_invoke_tool=_never,
            strict_json_schema=data["strict_json_schema"],
            defer_loading=data.get("defer_loading", False),
        )
    module, _, qualname = data["class"].partition(":")
    cls: Any = importlib.import_module(module)
    for part in qualname.split("."):
        cls = getattr(cls, part)
    tool: Tool = cls(**data["fields"])
    return tool


def _encode_handoff(h: Handoff[Any, Any]) -> dict[str, Any]:
    return {
        "tool_name": h.tool_name,
        "tool_description": h.tool_description,
        "input_json_schema": h.input_json_schema,
        "agent_name": h.agent_name,
        "strict_json_schema": h.strict_json_schema,
    }


def _decode_handoff(data: dict[str, Any]) -> Handoff[Any, Any]:
    return Handoff(
        tool_name=data["tool_name"],
        tool_description=data["tool_description"],
        input_json_schema=data["input_json_schema"],
        on_invoke_handoff=_never,
        agent_name=data["agent_name"],
        strict_json_schema=data["strict_json_schema"],
    )


@dataclasses.dataclass
class OutputSchemaStub(AgentOutputSchemaBase):
    """The output schema as the real model needs it (names and JSON schema; parsing stays in the workflow)."""

    plain_text: bool
    schema_name: str
    schema: dict[str, Any]
    strict: bool

    def is_plain_text(self) -> bool:
        return self.plain_text

    def name(self) -> str:
        return self.schema_name

    def json_schema(self) -> dict[str, Any]:
        return self.schema

    def is_strict_json_schema(self) -> bool:
        return self.strict

    def validate_json(self, json_str: str) -> Any:
        raise UserError("the output schema of a durable model step does not parse output")


def _encode_output_schema(schema: AgentOutputSchemaBase | None) -> dict[str, Any] | None:
    if schema is None:
        return None
    plain = schema.is_plain_text()
    return {
        "plain_text": plain,
        "name": schema.name(),
        "json_schema": {} if plain else schema.json_schema(),
        "strict": schema.is_strict_json_schema(),
    }


def encode_request(
    system_instructions: str | None,
    input: str | list[TResponseInputItem],
    model_settings: ModelSettings,
    tools: list[Tool],
    output_schema: AgentOutputSchemaBase | None,
    handoffs: list[Handoff[Any, Any]],
    tracing: ModelTracing,
    previous_response_id: str | None,
    conversation_id: str | None,
    prompt: ResponsePromptParam | None,
) -> dict[str, Any]:
    """The arguments of ``Model.get_response`` as plain JSON: the model step's argument where the engine
    runs the step in another process (a Temporal activity)."""
    return {
        "system_instructions": system_instructions,
        "input": _input(input),
        "model_settings": _SETTINGS.dump_python(model_settings, mode="json"),
        "tools": [_encode_tool(t) for t in tools],
        "output_schema": _encode_output_schema(output_schema),
        "handoffs": [_encode_handoff(h) for h in handoffs],
        "tracing": tracing.value,
        "previous_response_id": previous_response_id,
        "conversation_id": conversation_id,
        "prompt": _plain(prompt, "the prompt") if prompt is not None else None,
    }


def decode_request(data: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``Model.get_response`` rebuilt from :func:`encode_request`'s output."""
    schema = data["output_schema"]
    return {
        "system_instructions": data["system_instructions"],
        "input": data["input"],
        "model_settings": _SETTINGS.validate_python(data["model_settings"]),
        "tools": [_decode_tool(t) for t in data["tools"]],
        "output_schema": None if schema is None else OutputSchemaStub(
            schema["plain_text"], schema["name"], schema["json_schema"], schema["strict"]
        ),
        "handoffs": [_decode_handoff(h) for h in data["handoffs"]],
        "tracing": ModelTracing(data["tracing"]),
        "previous_response_id": data["previous_response_id"],
        "conversation_id": data["conversation_id"],
        "prompt": data["prompt"],
    }


def dump_response(response: ModelResponse) -> dict[str, Any]:
    """A :class:`ModelResponse` as JSON data; :func:`load_response` restores an equal object."""
    data: dict[str, Any] = _RESPONSE.dump_python(response, mode="json", by_alias=True, exclude_unset=True)
    return data


def _response_of(record: dict[str, Any]) -> ModelResponse:
    try:
        return ModelResponse(**record)
    except TypeError as exc:  # a required field is missing: a validation error, so the union goes on
        raise ValueError(str(exc)) from None


def _untagged(data: Any) -> ModelResponse:
    response: ModelResponse = _RESPONSE.validate_python(data)
    return response


def _response_record() -> tuple[Any, TypeAdapter[ModelResponse], bool]:
    """The model step's output annotation, its adapter, and whether records decode by their item tags.

    The record is a typed dict whose output items are validated by their ``type`` tag, so the record's
    JSON text decodes into the response's objects in one pass (the SDK annotates the items as a plain
    union of ~30 classes that pydantic tries one by one); the plain validator decides a record the tagged
    path refuses, with its own error. For an SDK version whose response or items are not shaped this
    way, the plain validator alone."""
    plain: Any = Annotated[dict[str, Any], AfterValidator(_untagged)]
    try:
        hints = typing.get_type_hints(ModelResponse)
        (union, *_) = typing.get_args(TResponseOutputItem)
        hints["output"] = list[Annotated[Union[typing.get_args(union)], Field(discriminator="type")]]  # type: ignore[misc]  # noqa: UP007
        fields = {f.name: hints[f.name] for f in dataclasses.fields(ModelResponse) if f.init}
        shape: Any = TypedDict("ModelResponseRecord", fields, total=False)  # type: ignore[misc]
        tagged: Any = Annotated[shape, AfterValidator(_response_of)]
        record: Any = Annotated[Union[tagged, plain], Field(union_mode="left_to_right")]  # noqa: UP007
        # adapter_for: the adapter the codec uses for the step's output annotation, built once for both
        return record, adapter_for(record), True
    except Exception:
        return plain, adapter_for(plain), False


# The model step's output: the response's JSON record (dump_response), which decodes into the
# ModelResponse. perdure decodes a step's output from its recorded text on the first run as on every
# replay, so the SDK is always handed a response restored from its record, never the live one.
ResponseRecord: Any
ResponseRecord, _RECORD, _TAGGED = _response_record()


def load_response(data: dict[str, Any]) -> ModelResponse:
    """The :class:`ModelResponse` that :func:`dump_response` wrote (an equal object)."""
    return _RECORD.validate_python(data)


# --- the step -------------------------------------------------------------------------------------
class LiveRequest(dict[str, Any]):
    """The keyword arguments of ``Model.get_response`` as the SDK passed them: the model step's argument
    when the engine runs the step in the workflow's process, where nothing needs encoding."""


@perdure.step(name=MODEL_STEP, retry=MODEL_RETRY)
async def model_step(model: str | None, request: dict[str, Any]) -> ResponseRecord:
    """One model call: resolve the real model by name, call it, return the response as JSON (which the
    workflow gets back as the :class:`ModelResponse` restored from it).

    ``request`` is a :class:`LiveRequest` in the workflow's process, or :func:`encode_request`'s JSON
    where the engine sent the call to another process (a Temporal activity)."""
    real = resolve_model(model)
    kwargs = request if isinstance(request, LiveRequest) else decode_request(request)
    response = await real.get_response(**kwargs)
    return dump_response(response)


class DurableModel(Model):
    """The workflow's stand-in for a model: every call is one recorded ``openai_agents.model`` step."""

    def __init__(self, name: str | None, session: Any = None) -> None:
        self.name = name
        self.session = session  # the DurableRunner run, told about errors the SDK would wrap

    def __repr__(self) -> str:
        return f"DurableModel({self.name!r})"

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff[Any, Any]],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> ModelResponse:
        request = LiveRequest(
            system_instructions=system_instructions, input=input, model_settings=model_settings, tools=tools,
            output_schema=output_schema, handoffs=handoffs,
            # The workflow disables tracing (it would export spans from deterministic code); the real
            # model gets the same setting so spans are not created half-way either.
            tracing=ModelTracing.DISABLED, previous_response_id=previous_response_id,
            conversation_id=conversation_id, prompt=prompt,
        )
        name = self.name
        try:
            run = current_run("a durable model call")
            # The request (the whole conversation so far, every tool schema) goes to the step as it is and
            # is encoded only if the engine runs the step in another process: journals record the
            # response, not the request, so elsewhere encoding it was pure cost on every call.
            response: ModelResponse = await run.call_step(
                model_step, (name, request), {}, portable=lambda: ((name, encode_request(**request)), {})
            )
        except BaseException as exc:
            if self.session is not None:
                self.session.remember(exc)
            raise
        if self.session is not None:
            # A model call begins only once the SDK is done with the calls before it: an error one of
            # those raised was handled (the SDK's own model retry, a tool failure sent to the model), and
            # must not be re-raised in place of a later, unrelated error.
            self.session.error = None
        return response

    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff[Any, Any]],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        """Streaming, durably: the call is recorded whole (one step, non-streaming), then its events are
        emitted at once. No token deltas -- see docs/openai-agents.md, "Streaming"."""
        response = await self.get_response(
            system_instructions, input, model_settings, tools, output_schema, handoffs, tracing,
            previous_response_id=previous_response_id, conversation_id=conversation_id, prompt=prompt,
        )
        for event in response_events(response):
            yield event


class DurableModelProvider(ModelProvider):
    """Hands the run loop a :class:`DurableModel` for every model name (string models stay strings on
    the agent, so the SDK's per-model default settings are unchanged)."""

    def __init__(self, session: Any = None) -> None:
        self.session = session

    def get_model(self, model_name: str | None) -> Model:
        return DurableModel(model_name, self.session)

"""Durable chat models: every model call of a graph is one perdure step, recorded once.

``durable_model(model, name="planner")`` wraps any LangChain chat model. The wrapper is itself a
``BaseChatModel`` (so ``bind_tools``, ``with_structured_output``, ``create_react_agent`` and callbacks
work as usual); its ``_agenerate`` does not call the provider but records a call of the step
``langgraph.model.<name>``. The step body -- which may run in another process, e.g. a Temporal activity
-- finds the real model by that name in this module's registry, so the module that builds the model must
be imported by the worker (``perdure worker --app``), like every perdure step.

After a crash, a recorded call returns its recorded ``AIMessage`` (content, tool calls, usage, ids)
without reaching the provider; only the call in flight is made again.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig
from langchain_core.runnables.config import var_child_runnable_config
from pydantic import ConfigDict, Field

from ...core.context import idempotency_key
from ...core.errors import ConfigurationError, RegistrationError
from ...core.registry import Step, check_retry, step
from ...core.retry import RetryPolicy
from .calls import current_graph_run, durable_call, give_up, take_ticket
from .messages import fingerprint, from_data, many_to_data, stable_id, to_data

_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,80}$")
_models: dict[str, BaseChatModel] = {}
_steps: dict[str, Step[Any, Any]] = {}
# The ticket of the model call that is beginning in this task (see calls.CallOrder): taken in ainvoke,
# before LangChain's callback machinery (which may run handlers in threads) can reorder calls.
_ticket: ContextVar[list[Any] | None] = ContextVar("perdure_langgraph_model_ticket", default=None)


def get_model(name: str) -> BaseChatModel:
    """The chat model registered under ``name`` in this process."""
    try:
        return _models[name]
    except KeyError:
        raise ConfigurationError(
            f"no LangGraph model named {name!r} is registered in this process; import the module that "
            "calls durable_model(..., name=...) in the worker (perdure worker --app MODULE)"
        ) from None


def _params(model: BaseChatModel) -> dict[str, Any]:
    try:
        return dict(model._identifying_params)
    except Exception:  # a model that cannot describe itself is compared by class only
        return {}


def _settings(model: BaseChatModel) -> Any:
    """Everything that configures ``model``: its pydantic fields (endpoint and key included; the clients
    built from them are excluded fields), else its identifying parameters."""
    try:
        return model.model_dump()
    except Exception:  # noqa: BLE001  # a field pydantic cannot dump
        return _params(model)


def _register(name: str, model: BaseChatModel, retry: RetryPolicy | None) -> Step[Any, Any]:
    if not _NAME.match(name):
        raise RegistrationError(f"a durable model name is 1-80 letters, digits, '_', '-' or '.', got {name!r}")
    existing = _models.get(name)
    # Re-importing the module that builds the model (tests, Temporal's sandbox) registers an equal model
    # again: allowed. Another model (another class, or any other setting: the model name, the temperature,
    # the endpoint, the key) under the same name would make one model's steps run the other: refused.
    if existing is not None and existing is not model and (
        type(existing).__name__ != type(model).__name__ or _settings(existing) != _settings(model)
    ):
        raise RegistrationError(
            f"two different chat models are registered as {name!r} ({type(existing).__name__} "
            f"{_params(existing)} and {type(model).__name__} {_params(model)}, or settings such as their "
            "endpoint differ); give each durable_model(...) its own name="
        )
    _models[name] = model
    if name in _steps:
        check_retry(_steps[name], retry, f"durable model {name!r}")
    if name not in _steps:

        async def call_model(
            messages: list[dict[str, Any]], stop: list[str] | None, options: dict[str, Any], fingerprint: str
        ) -> dict[str, Any]:
            """Call the registered model once; the result is recorded by perdure."""
            inner = get_model(name)
            kwargs = dict(options)
            if stop is not None:
                kwargs["stop"] = stop
            reply = await inner.ainvoke([from_data(m) for m in messages], **kwargs)
            if not isinstance(reply, BaseMessage):
                raise TypeError(f"model {name!r} returned {type(reply).__name__}, not a message")
            stable_id(reply, idempotency_key())
            return {"fingerprint": fingerprint, "message": to_data(reply, where=f"reply of model {name!r}")}

        _steps[name] = step(call_model, name=f"langgraph.model.{name}", retry=retry)
    return _steps[name]


class DurableChatModel(BaseChatModel):
    """A chat model whose calls are perdure steps. Build it with :func:`durable_model`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: BaseChatModel = Field(description="the real chat model, called inside the step")
    durable_name: str = Field(description="the registry name; the step is langgraph.model.<durable_name>")

    @property
    def _llm_type(self) -> str:
        return f"perdure-{self.model._llm_type}"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"durable_name": self.durable_name, **self.model._identifying_params}

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools the way the real model does; its provider options travel with each recorded call."""
        bound = self.model.bind_tools(tools, **kwargs)
        if bound is self.model:  # fake models that ignore tools
            return self
        if isinstance(bound, RunnableBinding) and bound.bound is self.model:
            return self.bind(**bound.kwargs)
        raise ConfigurationError(
            f"{type(self.model).__name__}.bind_tools returned a {type(bound).__name__}; durable_model "
            "supports models whose bind_tools binds provider options (every LangChain chat model does)"
        )

    async def ainvoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, *, stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        holder = [take_ticket(), False]
        token = _ticket.set(holder)
        try:
            return await super().ainvoke(input, config, stop=stop, **kwargs)
        finally:
            _ticket.reset(token)
            if not holder[1]:
                give_up(holder[0])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        holder = _ticket.get()
        ticket = None
        if holder is not None and not holder[1]:
            ticket, holder[1] = holder[0], True
        where = f"messages for model {self.durable_name!r}"
        data = many_to_data(messages, where=where)
        options = {k: v for k, v in kwargs.items() if v is not None}
        fp = fingerprint({"messages": data, "stop": stop, "options": options})
        config = var_child_runnable_config.get()
        step_ = _steps[self.durable_name]
        output = await durable_call(
            step_,
            {"messages": data, "stop": stop, "options": options, "fingerprint": fp},
            fingerprint=fp,
            config=config,
            ticket=ticket,
        )
        message = from_data(output["message"])
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        """Sync calls (sync nodes, which LangGraph runs in a thread) go to the workflow's event loop."""
        state = current_graph_run()
        try:
            asyncio.get_running_loop()
            in_loop = True
        except RuntimeError:
            in_loop = False
        if state is None or in_loop:
            raise ConfigurationError(
                f"durable model {self.durable_name!r} was called synchronously "
                + ("on the workflow's event loop" if in_loop else "outside run_graph")
                + "; use `await model.ainvoke(...)` in async nodes (or sync nodes run by run_graph)"
            )
        future = asyncio.run_coroutine_threadsafe(self._agenerate(messages, stop, None, **kwargs), state.loop)
        return future.result()


def durable_model(model: BaseChatModel, *, name: str | None = None, retry: RetryPolicy | None = None) -> DurableChatModel:
    """Make every call of ``model`` a durable perdure step named ``langgraph.model.<name>``.

    ``name`` (default: the model's ``model_name``/``model`` field, else its class name) identifies the
    model across processes and deploys: keep it stable while runs are in flight. ``retry`` is the step's
    :class:`~perdure.RetryPolicy` for failed provider calls (default: perdure's).
    """
    if isinstance(model, DurableChatModel):
        return model
    if not isinstance(model, BaseChatModel):
        raise RegistrationError(f"durable_model needs a LangChain BaseChatModel, got {type(model).__name__}")
    if name is None:
        name = str(getattr(model, "model_name", None) or getattr(model, "model", None) or type(model).__name__)
        name = re.sub(r"[^A-Za-z0-9_.\-]", "_", name)[:80]
    _register(name, model, retry)
    return DurableChatModel(model=model, durable_name=name)


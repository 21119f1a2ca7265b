"""``@workflow``, ``@step`` and ``@tool``: declarations and the per-process registry workers look them up in.

A worker runs a workflow by *name*; a step is executed by *name* too (possibly in another process, e.g. a
Temporal activity worker), so everything durable is registered under a stable name when its module is
imported. Names default to ``module.qualname`` and can be set explicitly -- do that before renaming code
that has runs in flight.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, ParamSpec, TypeVar, overload

import pydantic_core

from .codec import CallCodec
from .context import current_run
from .errors import RegistrationError, WorkflowNotFoundError
from .retry import DEFAULT_RETRY, RetryPolicy
from .types import StepKind

P = ParamSpec("P")
R = TypeVar("R")


def _default_name(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


@dataclass(eq=False)
class Workflow(Generic[P, R]):
    """A registered workflow. Start it with ``client.start(wf, *args)``; inside another workflow,
    ``await wf(*args)`` runs it inline as part of the caller's run."""

    name: str
    fn: Callable[P, Awaitable[R]]
    codec: CallCodec = field(repr=False)

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        current_run(f"workflow {self.name!r}")  # raises NotInWorkflowError with a hint
        return await self.fn(*args, **kwargs)


@dataclass(eq=False)
class Step(Generic[P, R]):
    """A registered step or tool. Awaiting it inside a workflow records its result once."""

    name: str
    fn: Callable[P, Any]
    kind: StepKind
    retry: RetryPolicy
    codec: CallCodec = field(repr=False)
    description: str = ""
    is_async: bool = True
    _schema: dict[str, Any] | None = field(default=None, repr=False)
    # Precomputed for the hot path (every call of the step): the kind's string value, and the start of
    # the JSON envelope of a successful attempt (see perdure.core.runtime.execute_attempt).
    kind_value: str = field(init=False, repr=False)
    ok_envelope_prefix: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.kind_value = self.kind.value
        self.ok_envelope_prefix = (
            '{"name":' + pydantic_core.to_json(self.name).decode() + ',"kind":"' + self.kind_value
            + '","ok":true,"output":'
        )

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        run = current_run(self.kind_value, self.name)
        result: R = await run.call_step(self, args, kwargs)
        return result

    async def invoke(self, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        """Run the function body once (no durability); sync functions run in a thread."""
        if self.is_async:
            return await self.fn(*args, **kwargs)
        return await asyncio.to_thread(functools.partial(self.fn, *args, **kwargs))

    @property
    def parameters_schema(self) -> dict[str, Any]:
        """JSON schema of the arguments, for agent frameworks (tools)."""
        if self._schema is None:
            from pydantic import create_model

            fields: dict[str, Any] = {}
            for p in self.codec.signature.parameters.values():
                if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                    continue
                ann = Any if p.annotation is inspect.Parameter.empty else p.annotation
                default = ... if p.default is inspect.Parameter.empty else p.default
                fields[p.name] = (ann, default)
            model = create_model(f"{self.name}_args", **fields)
            self._schema = model.model_json_schema()
        return self._schema


_workflows: dict[str, Workflow[Any, Any]] = {}
_steps: dict[str, Step[Any, Any]] = {}


def _equal(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001  # objects that cannot be compared are different
        return False


def _cells(fn: Any) -> list[Any]:
    out = []
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            out.append(cell.cell_contents)
        except ValueError:  # an empty cell
            out.append(_EMPTY)
    return out


_EMPTY = object()


def same_definition(a: Callable[..., Any], b: Callable[..., Any]) -> bool:
    """Whether two functions registered under one name are the same code working on the same values.

    Yes for the same object, for the same function imported again (a module imported twice, Temporal's
    sandbox: new code objects, same module and qualified name), and for two functions made by one
    definition whose captured values and defaults are equal. No for two functions one factory made
    around different values (a tool per tenant, per connection): a step found by name in another process
    or on replay would run the other one's code, silently.
    """
    if a is b:
        return True
    if not _equal(getattr(a, "__self__", None), getattr(b, "__self__", None)):  # bound methods
        return False
    a, b = getattr(a, "__func__", a), getattr(b, "__func__", b)
    if isinstance(a, functools.partial) and isinstance(b, functools.partial):
        return same_definition(a.func, b.func) and _equal(a.args, b.args) and _equal(a.keywords, b.keywords)
    code_a, code_b = getattr(a, "__code__", None), getattr(b, "__code__", None)
    if code_a is None or code_b is None:  # callable objects: the same class, equal attributes
        return equivalent(a, b)
    if code_a is not code_b:
        return (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)
    return (
        all(_equal(x, y) for x, y in zip(_cells(a), _cells(b), strict=True))
        and _equal(getattr(a, "__defaults__", None), getattr(b, "__defaults__", None))
        and _equal(getattr(a, "__kwdefaults__", None), getattr(b, "__kwdefaults__", None))
    )


def equivalent(a: Any, b: Any) -> bool:
    """Whether two objects registered under one name (a model, a class-based tool) do the same thing: the
    same object, or the same class with equal settings -- a pydantic model's dump (which leaves out its
    clients), else equal attributes. Two instances that differ in anything (an endpoint, a key, a
    captured connection) are not."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    dump = getattr(a, "model_dump", None)
    if callable(dump):
        try:
            return bool(dump() == b.model_dump())
        except Exception:  # noqa: BLE001  # a field pydantic cannot dump: compare attributes
            pass
    slots = [name for cls in type(a).__mro__ for name in getattr(cls, "__slots__", ())]
    if not all(_equal(getattr(a, name, _EMPTY), getattr(b, name, _EMPTY)) for name in slots):
        return False
    va, vb = getattr(a, "__dict__", {}), getattr(b, "__dict__", {})
    return va.keys() == vb.keys() and all(_equal(va[k], vb[k]) for k in va)


def check_retry(registered: Step[Any, Any], retry: RetryPolicy | None, what: str) -> None:
    """Refuse ``retry`` for a step registered with another policy (``None`` asks for none in particular):
    a step has one policy, and the later one would be silently ignored -- a payment tool meant never to
    be retried would keep the first registration's attempts."""
    if retry is not None and retry != registered.retry:
        raise RegistrationError(
            f"{what} is already registered with {registered.retry!r}; it cannot take {retry!r} too (one "
            "retry policy per name: pass the same one everywhere)"
        )


def _register(table: dict[str, Any], name: str, obj: Any, what: str) -> None:
    existing = table.get(name)
    # Re-importing the same module (Temporal's sandbox, importlib test mode) re-registers the same function:
    # allowed. A *different* function under the same name would make replays run the wrong code: refused.
    if existing is not None and not same_definition(existing.fn, obj.fn):
        origin = f"{obj.fn.__module__}.{obj.fn.__qualname__}"
        other = f"{existing.fn.__module__}.{existing.fn.__qualname__}"
        detail = (f"{other} and {origin}" if other != origin
                  else f"two functions {origin} made around different values")
        raise RegistrationError(
            f"two different {what}s are named {name!r} ({detail}); give each its own name= (a worker finds "
            f"{what}s by name, so one would run the other's code)"
        )
    table[name] = obj


@overload
def workflow(fn: Callable[P, Awaitable[R]], /) -> Workflow[P, R]: ...
@overload
def workflow(*, name: str | None = None) -> Callable[[Callable[P, Awaitable[R]]], Workflow[P, R]]: ...
def workflow(fn: Any = None, /, *, name: str | None = None) -> Any:
    """Declare an async function as a durable workflow.

    Its code must be deterministic: everything that touches the world goes through steps and tools, time
    through :func:`perdure.now`, randomness through :func:`perdure.uuid4` / :func:`perdure.random`.
    """

    def wrap(f: Callable[P, Awaitable[R]]) -> Workflow[P, R]:
        if not inspect.iscoroutinefunction(f):
            raise RegistrationError(
                f"@perdure.workflow needs an async function; {getattr(f, '__qualname__', f)!r} is not "
                "(write `async def`)"
            )
        codec = CallCodec(f, f"workflow {name or _default_name(f)!r}")
        if "run_id" in codec.signature.parameters:
            # client.start(workflow, ..., run_id=...) names the run: a parameter of that name could never be
            # passed by keyword, and passing it that way would silently name the run instead.
            raise RegistrationError(
                f"workflow {getattr(f, '__qualname__', f)!r} has a parameter named 'run_id', which "
                "client.start(..., run_id=...) reserves for the run's id; rename it (inside the workflow, "
                "perdure.run_id() gives the run's own id)"
            )
        wf: Workflow[P, R] = Workflow(name=name or _default_name(f), fn=f, codec=codec)
        functools.update_wrapper(wf, f)  # type: ignore[arg-type]
        _register(_workflows, wf.name, wf, "workflow")
        return wf

    return wrap(fn) if fn is not None else wrap


def _make_step(
    fn: Callable[..., Any],
    kind: StepKind,
    name: str | None,
    retry: RetryPolicy | None,
    description: str | None,
) -> Step[Any, Any]:
    if isinstance(fn, Step | Workflow):
        raise RegistrationError(f"{fn.name!r} is already a perdure {type(fn).__name__.lower()}")
    if not callable(fn):
        raise RegistrationError(f"@perdure.{kind.value} needs a function, got {fn!r}")
    if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
        raise RegistrationError(f"@perdure.{kind.value} cannot wrap a generator ({fn.__qualname__})")
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise RegistrationError(f"retry= must be a perdure.RetryPolicy, got {type(retry).__name__}")
    doc = inspect.getdoc(fn) or ""
    name = name or _default_name(fn)
    s: Step[Any, Any] = Step(
        name=name,
        fn=fn,
        kind=kind,
        retry=retry or DEFAULT_RETRY,
        codec=CallCodec(fn, f"{kind.value} {name!r}"),
        description=description if description is not None else doc,
        is_async=inspect.iscoroutinefunction(fn),
    )
    functools.update_wrapper(s, fn)  # type: ignore[arg-type]
    _register(_steps, s.name, s, kind.value)
    return s


def step(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
) -> Any:
    """Declare a step: its result is recorded once; after a crash, completed steps are not run again.

    Sync and async functions both work (sync ones run in a thread). Arguments and the result go through
    perdure's JSON codec and are decoded by the function's type hints.
    """
    if fn is not None:
        return _make_step(fn, StepKind.STEP, name, retry, None)
    return lambda f: _make_step(f, StepKind.STEP, name, retry, None)


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    retry: RetryPolicy | None = None,
) -> Any:
    """Declare a tool: a step meant for side effects, with an idempotency key and a JSON schema.

    Inside it, :func:`perdure.idempotency_key` is the same on every retry and recovery of this call and
    different for every other call -- pass it to the external system so the effect happens once.
    """
    if fn is not None:
        return _make_step(fn, StepKind.TOOL, name, retry, description)
    return lambda f: _make_step(f, StepKind.TOOL, name, retry, description)


def get_workflow(name: str) -> Workflow[Any, Any]:
    try:
        return _workflows[name]
    except KeyError:
        known = ", ".join(sorted(_workflows)) or "none"
        raise WorkflowNotFoundError(
            f"no workflow named {name!r} is registered in this process (registered: {known}). "
            "Import the module that defines it (perdure worker --app MODULE)."
        ) from None


def get_step(name: str) -> Step[Any, Any]:
    try:
        return _steps[name]
    except KeyError:
        raise WorkflowNotFoundError(
            f"no step or tool named {name!r} is registered in this process; import the module that defines it"
        ) from None


def workflows() -> dict[str, Workflow[Any, Any]]:
    return dict(_workflows)


def workflow_name(wf: Workflow[Any, Any] | str) -> str:
    if isinstance(wf, Workflow):
        return wf.name
    if isinstance(wf, str):
        return wf
    raise WorkflowNotFoundError(f"expected a @perdure.workflow function or its name, got {wf!r}")

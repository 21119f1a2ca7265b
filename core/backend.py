"""The backend interface: what an engine adapter implements (client side and worker side).

Like an httpx transport, a backend is small: the client-side calls below, and :meth:`Backend.serve`,
which runs a worker that executes registered workflows through a :class:`~perdure.core.runtime.Journal`.
Everything users call lives in :class:`perdure.Client`, which is the same code for every backend.
The reference implementation is :class:`perdure.adapters.memory.MemoryBackend`: it is the spec.
"""

from __future__ import annotations

import asyncio
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar
from urllib.parse import SplitResult, urlsplit

from .codec import max_payload_bytes
from .errors import ConfigurationError, InvalidBackendURLError, ResultTimeoutError
from .types import Decision, RunInfo, StepRecord


@dataclass(frozen=True)
class Capabilities:
    """What a backend declares to the conformance suite.

    ``unsupported`` maps an *optional* feature to the reason it is missing; required features cannot be
    declared unsupported (the suite refuses). ``known_failures`` maps a scenario to a reason: it runs as a
    strict expected failure, so it turns red the day it starts passing and the entry must go.
    """

    unsupported: dict[str, str] = field(default_factory=dict)
    known_failures: dict[str, str] = field(default_factory=dict)
    # Whether workers run in separate processes that can be SIGKILLed (every real engine). The reference
    # engine runs in the test process and simulates the crash instead.
    separate_worker_processes: bool = True


class DevServer(ABC):
    """A throwaway local engine for tests, the demo, ``perdure dev`` and ``perdure conformance ENGINE``.

    Binds to loopback only, keeps its state under ``workdir``, and is stopped by whoever started it.
    Synchronous on purpose: test fixtures and the CLI start it before any event loop runs.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    @abstractmethod
    def start(self) -> str:
        """Start the engine (idempotent) and return the backend URL that reaches it."""

    @abstractmethod
    def stop(self) -> None:
        """Stop everything :meth:`start` started (by PID); safe to call twice."""

    def worker_env(self) -> dict[str, str]:
        """Extra environment for worker processes of this engine (e.g. test-profile timeouts)."""
        return {}


class Backend(ABC):
    """One engine, addressed by a URL. Subclasses set ``schemes`` and implement the abstract methods."""

    schemes: ClassVar[tuple[str, ...]] = ()
    capabilities: ClassVar[Capabilities] = Capabilities()
    # The largest encoded value the engine carries in one message, if it has a limit: a higher
    # PERDURE_MAX_PAYLOAD_BYTES is refused at start (check_payload_limit).
    max_payload_ceiling: ClassVar[int | None] = None

    def __init__(self, url: str) -> None:
        self.url = url
        self.parts = parse_url(url, self.schemes)

    @property
    def journals_step_start(self) -> bool:
        """Whether the engine journals a step when it *starts* (Temporal activities, Restate's ``ctx.run``),
        not only when it completes (the memory engine, DBOS, Temporal local activities).

        It decides the one case the contract leaves to the engine: the step in flight at a crash is replaced
        by another step before the restart (a deploy). An engine that journals starts fails the run with
        :class:`NonDeterminismError` naming both steps; the others run the new step, the replaced one's
        position never having been recorded. On every engine the replaced step never runs again
        (conformance ``step_replaced_while_in_flight``).
        """
        return False

    @property
    def safe_url(self) -> str:
        """The URL without its password, for messages (:func:`redact_url`)."""
        return redact_url(self.url)

    @classmethod
    def anchor_url(cls, url: str, folder: Path) -> str:
        """``url`` as written in a config file in ``folder``. A backend whose URLs can hold a relative file
        path makes it relative to that folder, so every command in the project finds the same state
        wherever it runs from (a URL given as an argument or in ``PERDURE_BACKEND`` stays as it is)."""
        return url

    def check_payload_limit(self) -> None:
        """Refuse a ``PERDURE_MAX_PAYLOAD_BYTES`` this engine cannot carry (:class:`ConfigurationError`):
        a value under perdure's limit but over the engine's would fail inside the engine -- Restate
        retries such a step for ever -- instead of as a :class:`PayloadTooLargeError` where it is made."""
        limit = max_payload_bytes()
        ceiling = self.max_payload_ceiling
        if ceiling is not None and limit > ceiling:
            raise ConfigurationError(
                f"PERDURE_MAX_PAYLOAD_BYTES={limit} is over what {self.schemes[0]}:// can carry in one "
                f"message ({ceiling} bytes); set it to {ceiling} or less"
            )

    # --- client side ------------------------------------------------------------------------------
    @abstractmethod
    async def start(self, workflow: str, args_json: str, run_id: str) -> RunInfo:
        """Start a run, or return the existing run with this id (same workflow) without a second execution.

        Raises :class:`RunConflictError` if ``run_id`` names a run of another workflow.
        """

    @abstractmethod
    async def describe(self, run_id: str) -> RunInfo:
        """The run's status, output or error, and pending approval. :class:`RunNotFoundError` if unknown."""

    @abstractmethod
    async def steps(self, run_id: str) -> list[StepRecord]:
        """The run's journal as :class:`StepRecord` s, in position order."""

    @abstractmethod
    async def list_runs(self, limit: int = 50) -> list[RunInfo]:
        """The most recent runs, newest first."""

    @abstractmethod
    async def decide(self, run_id: str, approval_id: str, decision: Decision) -> None:
        """Deliver a decision, durably, exactly once.

        Must work while no worker runs (the decision is kept for the next one) and must raise
        :class:`ApprovalAlreadyDecidedError` for a second decision on the same approval, even one sent
        before any worker consumed the first. :class:`perdure.Client` has already checked that the
        approval is pending and set ``decision.digest``.
        """

    @abstractmethod
    async def cancel(self, run_id: str) -> None:
        """Cancel the run: it ends CANCELLED and no further step starts."""

    async def wait(self, run_id: str, timeout: float | None = None) -> RunInfo:
        """Wait until the run is terminal. Backends with a push channel override this polling loop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.005
        while True:
            info = await self.describe(run_id)
            if info.status.terminal:
                return info
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeoutError(f"run {run_id!r} is still {info.status.value} after {timeout} s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

    # --- worker side ------------------------------------------------------------------------------
    @abstractmethod
    async def serve(self, *, ready: Callable[[], None] | None = None) -> None:
        """Run a worker for every workflow registered in this process until cancelled.

        Recovers runs left unfinished by a dead worker. ``ready`` is called once the worker accepts work.
        """

    async def aclose(self) -> None:
        """Release connections. The engine's state is untouched."""

    @classmethod
    def dev_server(cls, scheme: str, workdir: Path) -> DevServer | None:
        """A :class:`DevServer` that starts a throwaway engine for ``scheme``, or None if there is none."""
        return None


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``: the form that goes into errors, logs and output."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    userinfo, at, host = netloc.rpartition("@")
    if not (sep and at) or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}{slash}{tail}"


# Engines that bound every attempt of a step themselves (Temporal's start-to-close, Restate's abort timeout)
# get a bound this much longer than perdure's ``step_timeout``, so perdure's fires first and the attempt
# fails with a StepTimeoutError the step's retry policy handles (see core.runtime.execute_attempt).
STEP_TIMEOUT_GRACE = 10.0


def seconds_option(url: str, query: dict[str, list[str]], key: str) -> float | None:
    """Pop the URL option ``key`` (a ``parse_qs`` dict) as a positive, finite number of seconds; None if absent."""
    if key not in query:
        return None
    text = query.pop(key)[-1]
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise InvalidBackendURLError(f"{redact_url(url)!r}: {key}= must be a number of seconds > 0, got {text!r}")
    return value


def parse_url(url: str, schemes: tuple[str, ...]) -> SplitResult:
    if not isinstance(url, str) or "://" not in url:
        raise InvalidBackendURLError(f"a backend URL looks like scheme://..., got {url!r}")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidBackendURLError(f"cannot parse backend URL {redact_url(url)!r}: {exc}") from None
    if schemes and parts.scheme not in schemes:
        raise InvalidBackendURLError(f"{redact_url(url)!r}: expected scheme {' or '.join(schemes)}")
    return parts

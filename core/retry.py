"""Retry policy and the transient/permanent classification, shared by every engine.

Engines with native retries (Temporal activities, Restate ``ctx.run``) translate the policy with
:meth:`RetryPolicy.to_dict`; the others run :func:`perdure.core.steps.execute_step`'s loop. Either way
the outcome is the same: a :class:`PermanentError` (or a ``non_retryable`` type) fails at once, anything
else is retried until ``max_attempts``, then the workflow sees :class:`StepFailedError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import PermanentError, RegistrationError, SerializationError


@dataclass(frozen=True)
class RetryPolicy:
    """How a failing step is retried.

    ``non_retryable`` holds exception classes or class names (``"ValueError"``) that fail the step at once.
    The delay before attempt ``n+1`` is ``min(initial_interval * backoff**(n-1), max_interval)`` seconds.
    """

    max_attempts: int = 3
    initial_interval: float = 1.0
    backoff: float = 2.0
    max_interval: float = 60.0
    non_retryable: tuple[type[BaseException] | str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise RegistrationError(f"RetryPolicy.max_attempts must be >= 1, got {self.max_attempts}")
        if self.initial_interval < 0 or self.max_interval < 0:
            raise RegistrationError("RetryPolicy intervals must be >= 0")
        if self.backoff < 1:
            raise RegistrationError(f"RetryPolicy.backoff must be >= 1, got {self.backoff}")
        object.__setattr__(self, "non_retryable", tuple(self.non_retryable))

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.initial_interval * self.backoff ** (attempt - 1), self.max_interval))

    def non_retryable_names(self) -> list[str]:
        names = [t if isinstance(t, str) else t.__name__ for t in self.non_retryable]
        return ["PermanentError", "SerializationError", "PayloadTooLargeError", *names]

    def is_retryable(self, exc: BaseException) -> bool:
        # Serialization failures happen after the step's side effects; running it again would repeat them
        # and fail the same way, so they are permanent.
        if isinstance(exc, PermanentError | SerializationError):
            return False
        for t in self.non_retryable:
            if isinstance(t, str):
                if any(cls.__name__ == t for cls in type(exc).__mro__):
                    return False
            elif isinstance(exc, t):
                return False
        return True

    def to_dict(self) -> dict[str, Any]:
        """Plain data, for engines that take the policy as options."""
        return {
            "max_attempts": self.max_attempts,
            "initial_interval": self.initial_interval,
            "backoff": self.backoff,
            "max_interval": self.max_interval,
            "non_retryable": self.non_retryable_names(),
        }


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(max_attempts=1)

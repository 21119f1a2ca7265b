"""The typed error hierarchy. Every error perdure raises derives from :class:`PerdureError`.

Errors that cross the engine boundary (a step failure, a workflow failure) travel as
``ErrorInfo(type, message)`` and are rebuilt on the other side, so they read the same on every engine.
"""

from __future__ import annotations

from typing import Any


class PerdureError(Exception):
    """Base of every error perdure raises."""


# --- configuration --------------------------------------------------------------------------------
class ConfigurationError(PerdureError):
    """perdure is set up wrongly (backend URL, settings, registration)."""


class InvalidBackendURLError(ConfigurationError):
    """A backend URL that cannot be parsed or lacks a required part."""


class UnknownBackendError(ConfigurationError):
    """No installed backend handles the URL's scheme. The message lists the schemes that are installed."""


class BackendNotInstalledError(ConfigurationError):
    """The backend exists but its engine package is missing. The message says what to ``pip install``."""


class RegistrationError(ConfigurationError):
    """A workflow, step or tool was declared wrongly (not async, duplicate name, bad policy)."""


class InvalidArgumentError(PerdureError, ValueError):
    """An argument perdure cannot accept (an empty approval name, a negative timeout, ...)."""


class SignatureMismatchError(InvalidArgumentError, TypeError):
    """Arguments that do not fit a workflow's or step's signature (a missing or unexpected one). Also a
    ``TypeError``, which is what calling the plain function that way raises."""


# --- calls in the wrong place ---------------------------------------------------------------------
class NotInWorkflowError(PerdureError):
    """A durable operation (step, tool, approval, sleep, now) was called outside a running workflow."""


class NotInStepError(PerdureError):
    """``perdure.idempotency_key()`` was called outside a step or tool."""


# --- runs -----------------------------------------------------------------------------------------
class WorkflowNotFoundError(PerdureError):
    """A workflow name that no ``@perdure.workflow`` registered in this process."""


class RunNotFoundError(PerdureError):
    """No run with this ``run_id`` exists on the backend."""


class RunConflictError(PerdureError):
    """A ``run_id`` that already names a run of another workflow."""


class RunFailedError(PerdureError):
    """``client.result()`` on a run that ended FAILED. ``error_type`` names the original error class."""

    def __init__(self, run_id: str, error_type: str, message: str) -> None:
        super().__init__(f"run {run_id!r} failed: {error_type}: {message}")
        self.run_id = run_id
        self.error_type = error_type
        self.message = message


class RunCancelledError(PerdureError):
    """``client.result()`` on a run that ended CANCELLED; inside a workflow, the run was cancelled."""


class ResultTimeoutError(PerdureError):
    """``client.result(timeout=...)`` gave up before the run finished. The run itself goes on."""


# --- replay ---------------------------------------------------------------------------------------
class NonDeterminismError(PerdureError):
    """On replay, the workflow asked for a different operation than the one recorded at that position."""

    def __init__(self, position: int, recorded: str, requested: str) -> None:
        super().__init__(
            f"non-deterministic replay at position {position}: the journal has {recorded}, "
            f"the workflow now asks for {requested}. The workflow code changed under a running run; "
            "finish or cancel old runs before deploying reordered steps."
        )
        self.position = position
        self.recorded = recorded
        self.requested = requested


class FencedError(PerdureError):
    """A worker that lost ownership of a run (a zombie) tried to write to its journal; the write is refused."""


# --- values ---------------------------------------------------------------------------------------
class SerializationError(PerdureError):
    """A value that perdure's JSON codec cannot encode or decode. The message names where and the type."""


class PayloadTooLargeError(SerializationError):
    """An encoded value over the configured limit (``PERDURE_MAX_PAYLOAD_BYTES``)."""


# --- steps ----------------------------------------------------------------------------------------
class PermanentError(PerdureError):
    """Raise from a step or tool to fail it at once: a PermanentError is never retried."""


class StepTimeoutError(PerdureError):
    """An attempt of a step ran past the backend's step timeout (``step_timeout=`` of ``temporal://`` and
    ``restate://``, whose engines bound every attempt). The attempt fails with it and the step's
    ``RetryPolicy`` decides what follows, as for any failure; list it in ``non_retryable`` to stop at one."""


class StepFailedError(PerdureError):
    """Raised in the workflow when a step failed for good (retries exhausted or a permanent error).

    ``error_type`` and ``error_message`` are the original exception's class name and message, so the
    workflow can decide what to do (compensate, fall back) the same way on every engine.
    """

    def __init__(self, step: str, error_type: str, error_message: str, attempts: int) -> None:
        super().__init__(f"step {step!r} failed after {attempts} attempt(s): {error_type}: {error_message}")
        self.step = step
        self.error_type = error_type
        self.error_message = error_message
        self.attempts = attempts


# --- approvals ------------------------------------------------------------------------------------
class ApprovalError(PerdureError):
    """Base of approval errors."""


class ApprovalNotFoundError(ApprovalError):
    """No approval with this id is pending (or was ever requested) in the run."""


class ApprovalAlreadyDecidedError(ApprovalError):
    """The approval was already decided (or timed out); a decision is taken exactly once."""


class ApprovalMismatchError(ApprovalError):
    """The decision was made for a payload other than the one the workflow asks approval for."""


class ApprovalTimeoutError(ApprovalError):
    """Raised in the workflow when nobody decided an approval before its timeout."""


def error_class(type_name: str) -> type[PerdureError] | None:
    """The perdure error class called ``type_name``, if there is one (used to rebuild errors)."""
    found: Any = globals().get(type_name)
    if isinstance(found, type) and issubclass(found, PerdureError):
        return found
    return None

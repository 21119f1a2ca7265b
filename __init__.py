"""perdure: durable AI agents on the engine of your choice.

One small API -- workflow, step, tool, approval, idempotency key -- over Temporal, DBOS, Restate and an
in-memory reference engine. See SEMANTICS.md for the contract every backend keeps.
"""

from .core.backend import Backend, Capabilities
from .core.client import Client
from .core.context import (
    StepInfo,
    approval,
    current_step,
    idempotency_key,
    now,
    random,
    run_id,
    sleep,
    uuid4,
)
from .core.errors import (
    ApprovalAlreadyDecidedError,
    ApprovalError,
    ApprovalMismatchError,
    ApprovalNotFoundError,
    ApprovalTimeoutError,
    BackendNotInstalledError,
    ConfigurationError,
    FencedError,
    InvalidArgumentError,
    InvalidBackendURLError,
    NonDeterminismError,
    NotInStepError,
    NotInWorkflowError,
    PayloadTooLargeError,
    PerdureError,
    PermanentError,
    RegistrationError,
    ResultTimeoutError,
    RunCancelledError,
    RunConflictError,
    RunFailedError,
    RunNotFoundError,
    SerializationError,
    SignatureMismatchError,
    StepFailedError,
    StepTimeoutError,
    UnknownBackendError,
    WorkflowNotFoundError,
)
from .core.registry import Step, Workflow, step, tool, workflow
from .core.retry import RetryPolicy
from .core.types import (
    Decision,
    ErrorInfo,
    PendingApproval,
    RunInfo,
    RunStatus,
    StepKind,
    StepRecord,
    StepStatus,
)
from .core.worker import serve

__version__ = "0.1.0"

__all__ = [
    "ApprovalAlreadyDecidedError", "ApprovalError", "ApprovalMismatchError", "ApprovalNotFoundError",
    "ApprovalTimeoutError", "Backend", "BackendNotInstalledError", "Capabilities", "Client",
    "ConfigurationError", "Decision", "ErrorInfo", "FencedError", "InvalidArgumentError",
    "InvalidBackendURLError", "NonDeterminismError", "NotInStepError", "NotInWorkflowError",
    "PayloadTooLargeError", "PendingApproval", "PerdureError", "PermanentError", "RegistrationError",
    "ResultTimeoutError", "RetryPolicy", "RunCancelledError", "RunConflictError", "RunFailedError", "RunInfo",
    "RunNotFoundError", "RunStatus", "SerializationError", "SignatureMismatchError", "Step", "StepFailedError", "StepInfo", "StepKind", "StepTimeoutError",
    "StepRecord", "StepStatus", "UnknownBackendError", "Workflow", "WorkflowNotFoundError", "approval",
    "current_step", "idempotency_key", "now", "random", "run_id", "serve", "sleep", "step", "tool", "uuid4",
    "workflow",
]

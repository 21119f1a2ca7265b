"""``perdure.Client``: start, inspect, decide and cancel runs on any backend, with one API."""

from __future__ import annotations

import uuid
from types import TracebackType
from typing import Any

from .backend import Backend
from .codec import is_digest, max_payload_bytes
from .config import open_backend
from .errors import (
    ApprovalAlreadyDecidedError,
    ApprovalMismatchError,
    ApprovalNotFoundError,
    InvalidArgumentError,
    RunCancelledError,
    RunFailedError,
)
from .registry import Workflow, workflow_name, workflows
from .types import Decision, RunInfo, RunStatus, StepKind, StepRecord


class Client:
    """A handle on one backend.

    >>> async with perdure.Client("memory://") as client:
    ...     run_id = await client.start(research, "durable agents")
    ...     print(await client.result(run_id))
    """

    def __init__(self, backend: str | Backend | None = None) -> None:
        max_payload_bytes()  # a bad PERDURE_MAX_PAYLOAD_BYTES fails here, not at the first large value
        self.backend = backend if isinstance(backend, Backend) else open_backend(backend)
        self.backend.check_payload_limit()

    @property
    def url(self) -> str:
        return self.backend.url

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: tuple[type[BaseException], BaseException, TracebackType] | Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.backend.aclose()

    async def start(
        self, workflow: Workflow[Any, Any] | str, /, *args: Any, run_id: str | None = None, **kwargs: Any
    ) -> str:
        """Start ``workflow(*args, **kwargs)`` as a durable run and return its run id.

        Starting a ``run_id`` that exists returns it without a second execution; the same id with another
        workflow raises :class:`RunConflictError`. Arguments are encoded before anything is sent, so an
        unserializable argument raises :class:`SerializationError` and starts nothing.
        """
        name = workflow_name(workflow)
        if not name.strip():
            raise InvalidArgumentError(f"a workflow name must not be blank, got {name!r}")
        if run_id is not None and (
            not isinstance(run_id, str) or not run_id.strip() or len(run_id) > 200 or not run_id.isprintable()
        ):
            raise InvalidArgumentError(
                f"run_id must be 1-200 printable characters, not only spaces, got {run_id!r}"
            )
        wf = workflow if isinstance(workflow, Workflow) else workflows().get(name)
        if wf is not None:
            args_json = wf.codec.encode_args(args, kwargs)
            # Decoded here as the worker will decode them: an argument of the wrong type is refused now,
            # naming the parameter, instead of failing the run once a worker takes it.
            wf.codec.decode_args(args_json)
        else:  # not importable here (a CLI, another service): send the arguments as given
            from .codec import encode

            if args:
                raise InvalidArgumentError(
                    f"workflow {name!r} is not registered in this process, so its parameter names are "
                    "unknown: pass its arguments by keyword"
                )
            args_json = encode(kwargs, where=f"arguments of workflow {name!r}")
        rid = run_id or str(uuid.uuid4())
        await self.backend.start(name, args_json, rid)
        return rid

    async def status(self, run_id: str) -> RunInfo:
        """The run's status, output or error, and pending approval."""
        return await self.backend.describe(run_id)

    async def result(self, run_id: str, *, timeout: float | None = None) -> Any:
        """Wait for the run and return its output (decoded by the workflow's return annotation when the
        workflow is registered here). Raises :class:`RunFailedError`, :class:`RunCancelledError`, or
        :class:`ResultTimeoutError` after ``timeout`` seconds (the run goes on)."""
        if timeout is not None and not timeout >= 0:  # also NaN, which would wait forever
            raise InvalidArgumentError(f"timeout must be a number of seconds >= 0, or None; got {timeout!r}")
        info = await self.backend.wait(run_id, timeout)
        if info.status is RunStatus.FAILED:
            err = info.error
            raise RunFailedError(run_id, err.type if err else "Error", err.message if err else "")
        if info.status is RunStatus.CANCELLED:
            raise RunCancelledError(f"run {run_id!r} was cancelled")
        wf = workflows().get(info.workflow)
        if wf is None:
            return info.output
        return wf.codec.decode_result_value(info.output)

    async def steps(self, run_id: str) -> list[StepRecord]:
        """The run's journal: one record per step, tool, approval and sleep, in position order."""
        return await self.backend.steps(run_id)

    async def runs(self, limit: int = 50) -> list[RunInfo]:
        """The most recent runs, newest first (at most ``limit``, a positive int)."""
        if type(limit) is not int or limit < 1:
            raise InvalidArgumentError(f"limit must be a positive int, got {limit!r}")
        return await self.backend.list_runs(limit)

    async def cancel(self, run_id: str) -> None:
        """Cancel the run: it ends CANCELLED and no further step starts."""
        await self.backend.cancel(run_id)

    async def approve(
        self,
        run_id: str,
        approval_id: str,
        *,
        by: str | None = None,
        comment: str | None = None,
        data: Any = None,
        digest: str | None = None,
    ) -> None:
        """Approve a pending approval. Pass ``digest`` (from ``status().pending_approval``) to make sure you
        approve the payload you saw; a stale digest raises :class:`ApprovalMismatchError`."""
        await self._decide(run_id, approval_id, Decision(approved=True, by=by, comment=comment, data=data), digest)

    async def reject(
        self,
        run_id: str,
        approval_id: str,
        *,
        by: str | None = None,
        comment: str | None = None,
        data: Any = None,
        digest: str | None = None,
    ) -> None:
        """Reject a pending approval (the workflow gets ``Decision(approved=False, ...)``)."""
        await self._decide(run_id, approval_id, Decision(approved=False, by=by, comment=comment, data=data), digest)

    async def _decide(self, run_id: str, approval_id: str, decision: Decision, digest: str | None) -> None:
        from .codec import to_jsonable

        to_jsonable(decision.data, where=f"data of the decision on {approval_id!r}")
        info = await self.backend.describe(run_id)  # RunNotFoundError for an unknown run
        pending = info.pending_approval
        if pending is None or pending.approval_id != approval_id:
            recorded = [
                r for r in await self.backend.steps(run_id)
                if r.kind is StepKind.APPROVAL and f"{r.name}-{r.position}" == approval_id
            ]
            if recorded and recorded[0].status.value != "WAITING":
                raise ApprovalAlreadyDecidedError(
                    f"approval {approval_id!r} of run {run_id!r} was already decided or timed out"
                )
            waiting = f"; it waits for {pending.approval_id!r}" if pending else ""
            raise ApprovalNotFoundError(
                f"run {run_id!r} ({info.status.value}) has no pending approval {approval_id!r}{waiting}"
            )
        if digest is not None and not is_digest(digest):
            raise InvalidArgumentError(f"a digest is 64 lowercase hex characters (as `perdure status` shows), got {digest!r}")
        if digest is not None and digest != pending.digest:
            raise ApprovalMismatchError(
                f"approval {approval_id!r}: the payload is not the one you saw (digest {digest[:12]}... "
                f"!= {pending.digest[:12]}...); read it again with `perdure status {run_id}`"
            )
        await self.backend.decide(run_id, approval_id, decision.model_copy(update={"digest": pending.digest}))


"""The one generic Restate service every perdure worker serves: a Restate *workflow* keyed by run id.

* ``run`` (the workflow handler) executes ``perdure.core.runtime.run_workflow`` on a
  :class:`~.journal.RestateJournal`. Its input is ``{"workflow": name, "args_json": text}``; its output is
  the workflow's encoded result. A failure ends it with a ``TerminalError("<Type>: <message>")`` -- no
  Restate retries for workflow errors, exactly like the memory engine.
* ``decide`` (a shared handler) resolves the durable promise an approval waits on. Clients call it with
  the approval id as *idempotency key*, so Restate itself keeps a decision sent while no worker runs and
  answers a second one ``PreviouslyAccepted`` (refused by the client as already decided).

Restate accepts a final result only once the workflow replayed its whole journal. When the code took
another path than the recorded one (a nondeterministic deploy, or a workflow that now ends earlier), the
outcome perdure owes the user (:class:`NonDeterminismError`, or whatever the workflow did) is recorded in
the workflow's state through the admin API and the invocation is killed -- otherwise Restate would retry
it forever. The client reads that outcome back (:data:`OUTCOME_STATE`).
"""

from __future__ import annotations

import json
import os
from datetime import timedelta

import restate
from restate import InvocationRetryPolicy, TerminalError, WorkflowContext, WorkflowSharedContext
from restate.exceptions import SdkInternalBaseException
from restate.serde import BytesSerde
from restate.server_context import DisconnectedException

from ...core.backend import STEP_TIMEOUT_GRACE
from ...core.runtime import run_workflow
from ...core.types import ErrorInfo
from .entries import first_op_from, parse_journal
from .http import RestateHTTP, sql_literal
from .journal import RestateJournal, VMException, is_journal_mismatch
from .settings import RETRY_PROFILE_ENV, RestateSettings

OUTCOME_STATE = "perdure.outcome"  # {"ok", "output", "error"}: a result Restate could not take
OPTIONS_METADATA = "perdure.options"  # the service metadata key holding the options a worker declared
_BYTES = BytesSerde()


class _EndedOutOfBand(SdkInternalBaseException):
    """Ends an attempt whose invocation perdure just killed (the SDK then writes nothing)."""

    def __init__(self) -> None:
        super().__init__("perdure recorded this run's outcome out of band and killed the invocation.")


def invocation_retry_policy() -> InvocationRetryPolicy | None:
    """How Restate retries the perdure service after a worker died.

    ``test`` (set by the dev server's ``worker_env``): retry every 50-100 ms, practically forever, so a
    killed worker's runs resume within ~0.1 s of a new worker and never end up paused during a test.
    Unset: the server's default policy (which pauses after its attempt limit; workers resume paused runs
    when they start).
    """
    profile = os.environ.get(RETRY_PROFILE_ENV, "")
    if profile == "test":
        return InvocationRetryPolicy(
            initial_interval=timedelta(milliseconds=50),
            exponentiation_factor=2.0,
            max_interval=timedelta(milliseconds=100),
            max_attempts=1_000_000,
            on_max_attempts="pause",
        )
    return None


def abort_timeout(settings: RestateSettings) -> float:
    """The abort timeout a worker declares, in seconds: a running step sends Restate nothing, so let it run
    its step timeout (perdure's, which ends it first)."""
    return settings.step_timeout + STEP_TIMEOUT_GRACE


def declared_options(settings: RestateSettings) -> str:
    """Every service option a worker declares, as one text. Registered as the service's metadata, it tells
    a restarted worker whether the options in force are its own (then recovery need not wait for its
    registration) without parsing the durations Restate reports (``"1h 10s"``) or knowing its defaults."""
    return json.dumps({
        "retry_profile": os.environ.get(RETRY_PROFILE_ENV, ""),  # all invocation_retry_policy() depends on
        "abort_timeout": abort_timeout(settings),
        "retention": settings.retention,
    }, sort_keys=True)


def build_service(settings: RestateSettings, http: RestateHTTP) -> restate.Workflow:
    """The Restate workflow ``settings.service`` with its ``run`` and ``decide`` handlers."""
    # A finished run's state (its outcome) and its journal (its steps) are kept equally long.
    retention = None if settings.retention is None else timedelta(seconds=settings.retention)
    service = restate.Workflow(
        settings.service, invocation_retry_policy=invocation_retry_policy(),
        abort_timeout=timedelta(seconds=abort_timeout(settings)),
        journal_retention=retention,
        metadata={OPTIONS_METADATA: declared_options(settings)},
    )

    @service.main(input_serde=_BYTES, output_serde=_BYTES, workflow_retention=retention)
    async def run(ctx: WorkflowContext, request: bytes) -> bytes:
        return await execute_run(ctx, request, settings, http)

    @service.handler(input_serde=_BYTES)
    async def decide(ctx: WorkflowSharedContext, request: bytes) -> None:
        body = json.loads(request)
        await ctx.promise(body["approval_id"], serde=_BYTES).resolve(body["decision"].encode())

    return service


async def execute_run(ctx: WorkflowContext, request: bytes, settings: RestateSettings, http: RestateHTTP) -> bytes:
    """The body of the ``run`` handler: one perdure run, replayed from Restate's journal."""
    body = json.loads(request)
    run_id = ctx.key()
    invocation_id = ctx.request().id

    async def recorded_at(position: int) -> str:
        rows = await http.query(
            "SELECT index, entry_type, name, entry_json FROM sys_journal "
            f"WHERE id = {sql_literal(invocation_id)}"
        )
        op = first_op_from(parse_journal(rows), position)
        return op.describe() if op is not None else "nothing"

    async def decision_sent(approval_id: str) -> bool:
        # The client's decide call, once Restate accepted it: an invocation keyed by the approval id. Its
        # handler resolves the promise when a worker runs it -- maybe not yet, when workers just came back.
        rows = await http.query(
            "SELECT id FROM sys_invocation "
            f"WHERE target_service_name = {sql_literal(settings.service)} "
            f"AND target_service_key = {sql_literal(run_id)} AND target_handler_name = 'decide' "
            f"AND idempotency_key = {sql_literal(approval_id)}"
        )
        return bool(rows)

    journal = RestateJournal(ctx, recorded_at, decision_sent, settings.step_timeout)
    output: str | None = None
    error: ErrorInfo | None = None
    try:
        output = await run_workflow(journal, run_id, body["workflow"], body["args_json"])
    except (TerminalError, DisconnectedException):
        raise  # Restate's own cancellation, or a lost connection (Restate retries the attempt)
    except Exception as exc:
        if isinstance(exc, VMException) and not is_journal_mismatch(exc):
            raise  # an SDK-level failure: Restate retries the attempt
        error = ErrorInfo.of(exc)
    if journal.diverged is not None:
        error, output = ErrorInfo.of(journal.diverged), None
    if journal.diverged is not None or _replaying(ctx):
        outcome = {
            "ok": error is None,
            "output": None if output is None else json.loads(output),
            "error": None if error is None else error.model_dump(),
        }
        await http.replace_state(settings.service, run_id, {OUTCOME_STATE: json.dumps(outcome).encode()})
        await http.kill(invocation_id)
        raise _EndedOutOfBand()
    if error is not None:
        raise TerminalError(f"{error.type}: {error.message}")
    assert output is not None
    return output.encode()


def _replaying(ctx: WorkflowContext) -> bool:
    """Whether Restate still holds journal entries this execution did not reach."""
    vm = getattr(ctx, "vm", None)
    return bool(vm is not None and vm.is_replaying())

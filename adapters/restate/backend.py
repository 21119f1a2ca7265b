"""``restate://``: perdure's client side on Restate's ingress and admin APIs, and the worker side.

Mapping of SEMANTICS.md (see also :mod:`.service` and :mod:`.journal`):

* a run is one invocation of the perdure Restate *workflow*, keyed by ``run_id``: starting an existing key
  returns the same invocation (``PreviouslyAccepted``); its recorded input names the workflow, so another
  workflow under the same id is a :class:`RunConflictError`;
* status, output, error and the pending approval come from SQL over ``sys_invocation``, ``sys_journal``
  and the workflow's ``state`` -- readable while no worker runs;
* ``steps()`` reads the run's journal (:mod:`.entries`);
* a decision is a ``decide`` invocation whose idempotency key is the approval id: Restate keeps it while
  no worker runs and reports a second one as ``PreviouslyAccepted`` -> :class:`ApprovalAlreadyDecidedError`;
* cancel kills the invocation (no further step starts, even with no worker alive) -> CANCELLED.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import httpx

from ...core.backend import Backend, Capabilities, DevServer
from ...core.errors import ApprovalAlreadyDecidedError, ResultTimeoutError, RunConflictError, RunNotFoundError
from ...core.types import Decision, ErrorInfo, PendingApproval, RunInfo, RunStatus, StepRecord
from .entries import PENDING_KEY, parse_journal, records
from .http import RestateHTTP, sql_literal
from .journal import PENDING_STATE_PREFIX
from .service import OUTCOME_STATE
from .settings import RestateSettings

_FAILURE = re.compile(r"^\[(\d+)\] ?(.*)$", re.DOTALL)
_TYPED = re.compile(r"^([A-Za-z_]\w*):(?: (.*))?$", re.DOTALL)
_INVOCATION_COLUMNS = (
    "i.id, i.target_service_key, i.status, i.completion_result, i.completion_failure, i.created_at, "
    "i.pinned_deployment_id"
)


class _Run:
    """What the admin API knows about one run's invocation."""

    def __init__(self, row: dict[str, Any]) -> None:
        self.id: str = row["id"]
        self.run_id: str = row["target_service_key"]
        self.status: str = row.get("status") or ""
        self.result: str | None = row.get("completion_result")
        self.failure: str | None = row.get("completion_failure")
        self.created_at = _epoch(row.get("created_at"))
        self.pinned = row.get("pinned_deployment_id") is not None
        self.request: dict[str, Any] = {}
        self.output: bytes | None = None

    def add_entry(self, entry_type: str | None, entry_json: str | None) -> None:
        if not entry_type or not entry_json:
            return
        command = json.loads(entry_json).get("Command", {})
        if entry_type == "Command: Input":
            payload = command.get("Input", {}).get("payload") or []
            try:
                self.request = json.loads(bytes(payload))
            except ValueError:
                self.request = {}
        elif entry_type == "Command: Output":
            result = command.get("Output", {}).get("result") or {}
            if isinstance(result.get("Success"), list):
                self.output = bytes(result["Success"])


def _epoch(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return _dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class RestateBackend(Backend):
    """perdure on a Restate server: ``restate://HOST:PORT?admin=HOST:PORT[&deployment=HOST:PORT]``."""

    schemes: ClassVar[tuple[str, ...]] = ("restate",)
    capabilities: ClassVar[Capabilities] = Capabilities()
    # restate-server refuses a message over worker.invoker.message-size-limit (32 MiB; then the invocation
    # is retried, the step running again each time); 2 MiB stay for the envelope and the protocol.
    max_payload_ceiling: ClassVar[int | None] = 30 * 1024 * 1024

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.settings = RestateSettings.from_url(url)
        self.http = RestateHTTP(self.settings.ingress, self.settings.admin)

    @property
    def journals_step_start(self) -> bool:
        """A ``ctx.run`` command is journaled, with its name, when the step starts."""
        return True

    # --- reading runs --------------------------------------------------------------------------------
    async def _runs(self, where: str) -> list[_Run]:
        """Invocations of the run handler matching ``where`` (over ``sys_invocation i``), with their
        recorded input and output."""
        rows = await self.http.query(
            f"SELECT {_INVOCATION_COLUMNS}, j.entry_type, j.entry_json FROM sys_invocation i "
            "LEFT JOIN sys_journal j ON j.id = i.id AND j.entry_type IN ('Command: Input', 'Command: Output') "
            f"WHERE i.target_service_name = {sql_literal(self.settings.service)} "
            f"AND i.target_handler_name = 'run' AND {where}"
        )
        runs: dict[str, _Run] = {}
        for row in rows:
            run = runs.get(row["id"])
            if run is None:
                run = runs[row["id"]] = _Run(row)
            run.add_entry(row.get("entry_type"), row.get("entry_json"))
        return sorted(runs.values(), key=lambda r: r.created_at or 0.0, reverse=True)

    async def _states(self, run_ids: list[str]) -> dict[str, dict[str, str]]:
        if not run_ids:
            return {}
        keys = ", ".join(sql_literal(k) for k in run_ids)
        rows = await self.http.query(
            "SELECT service_key, key, value_utf8 FROM state "
            f"WHERE service_name = {sql_literal(self.settings.service)} AND service_key IN ({keys})"
        )
        out: dict[str, dict[str, str]] = {}
        for row in rows:
            out.setdefault(row["service_key"], {})[row["key"]] = row.get("value_utf8") or ""
        return out

    async def _load(self, run_id: str) -> tuple[_Run, dict[str, str]]:
        runs, states = await asyncio.gather(
            self._runs(f"i.target_service_key = {sql_literal(run_id)}"), self._states([run_id])
        )
        if not runs:
            raise RunNotFoundError(f"no run {run_id!r} on {self.safe_url}")
        return runs[0], states.get(run_id, {})

    @staticmethod
    def _info(run: _Run, state: dict[str, str]) -> RunInfo:
        status, output, error = RunStatus.PENDING, None, None
        outcome = state.get(OUTCOME_STATE)
        if outcome:  # a result Restate could not take (see service.py), recorded out of band
            data = json.loads(outcome)
            status = RunStatus.SUCCEEDED if data["ok"] else RunStatus.FAILED
            output = data.get("output")
            error = None if data.get("error") is None else ErrorInfo.model_validate(data["error"])
        elif run.status == "completed":
            if run.result == "success":
                status = RunStatus.SUCCEEDED
                output = None if run.output is None else json.loads(run.output)
            else:
                status, error = _failure(run.failure or "")
        elif any(k.startswith(PENDING_STATE_PREFIX) for k in state):
            status = RunStatus.WAITING
        elif run.pinned or run.status == "running":
            status = RunStatus.RUNNING
        pending = None
        if not status.terminal:
            waiting = sorted(
                (int(k.removeprefix(PENDING_STATE_PREFIX)), v) for k, v in state.items() if k.startswith(PENDING_STATE_PREFIX)
            )
            if waiting:
                pending = PendingApproval.model_validate(json.loads(waiting[-1][1])[PENDING_KEY])
        return RunInfo(
            run_id=run.run_id,
            workflow=str(run.request.get("workflow", "")),
            status=status,
            output=output,
            error=error,
            pending_approval=pending,
            created_at=run.created_at,
        )

    # --- client side -------------------------------------------------------------------------------
    async def start(self, workflow: str, args_json: str, run_id: str) -> RunInfo:
        await self.http.send(
            self.settings.service, run_id, "run", {"workflow": workflow, "args_json": args_json}
        )
        # The invocation is durable once /send answers; the SQL tables show it a moment later.
        info = await self._visible(run_id)
        if info.workflow and info.workflow != workflow:  # "" once Restate purged the recorded input
            raise RunConflictError(f"run {run_id!r} already exists for workflow {info.workflow!r}, not {workflow!r}")
        return info

    async def _visible(self, run_id: str, patience: float = 10.0) -> RunInfo:
        deadline = time.monotonic() + patience
        delay = 0.002
        while True:
            try:
                return await self.describe(run_id)
            except RunNotFoundError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def describe(self, run_id: str) -> RunInfo:
        run, state = await self._load(run_id)
        return self._info(run, state)

    async def steps(self, run_id: str) -> list[StepRecord]:
        (run, state), rows = await asyncio.gather(
            self._load(run_id),
            self.http.query(
                "SELECT j.index, j.entry_type, j.name, j.entry_json FROM sys_journal j "
                "JOIN sys_invocation i ON j.id = i.id "
                f"WHERE i.target_service_name = {sql_literal(self.settings.service)} "
                f"AND i.target_service_key = {sql_literal(run_id)} AND i.target_handler_name = 'run' "
                "AND j.entry_type IN ('Command: Run', 'Command: Sleep', 'Notification: Run', 'Notification: Sleep')"
            ),
        )
        cancelled = self._info(run, state).status is RunStatus.CANCELLED
        return records(parse_journal(rows), recorded_only=cancelled)

    async def list_runs(self, limit: int = 50) -> list[RunInfo]:
        limit = max(0, int(limit))
        runs = await self._runs(
            "i.id IN (SELECT id FROM sys_invocation "
            f"WHERE target_service_name = {sql_literal(self.settings.service)} AND target_handler_name = 'run' "
            f"ORDER BY created_at DESC LIMIT {limit})"
        )
        states = await self._states([r.run_id for r in runs])
        return [self._info(r, states.get(r.run_id, {})) for r in runs[:limit]]

    async def decide(self, run_id: str, approval_id: str, decision: Decision) -> None:
        # Restate deduplicates by idempotency key atomically, and keeps the call while no worker runs.
        _, new = await self.http.send(
            self.settings.service, run_id, "decide",
            {"approval_id": approval_id, "decision": decision.model_dump_json()},
            idempotency_key=approval_id,
        )
        if not new:
            raise ApprovalAlreadyDecidedError(f"approval {approval_id!r} of run {run_id!r} was already decided")

    async def cancel(self, run_id: str) -> None:
        run, state = await self._load(run_id)
        if self._info(run, state).status.terminal:
            return
        await self.http.kill(run.id)
        deadline = time.monotonic() + 10.0
        while not (await self.describe(run_id)).status.terminal and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def wait(self, run_id: str, timeout: float | None = None) -> RunInfo:
        """Wait on Restate's attach endpoint (a push), re-reading the run when it returns."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            info = await self.describe(run_id)
            if info.status.terminal:
                return info
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise ResultTimeoutError(f"run {run_id!r} is still {info.status.value} after {timeout} s")
            t0 = time.monotonic()
            try:
                await self.http.attach(self.settings.service, run_id, min(left or 30.0, 30.0))
            except httpx.HTTPError:
                pass
            if time.monotonic() - t0 < 0.02:
                await asyncio.sleep(0.02)  # attach answered at once (e.g. out-of-band outcome pending)

    async def aclose(self) -> None:
        await self.http.aclose()

    # --- worker side -------------------------------------------------------------------------------
    async def serve(self, *, ready: Callable[[], None] | None = None) -> None:
        from .worker import serve_deployment

        await serve_deployment(self.settings, self.http, ready)

    @classmethod
    def dev_server(cls, scheme: str, workdir: Path) -> DevServer | None:
        from .devserver import RestateDevServer

        return RestateDevServer(workdir)


def _failure(text: str) -> tuple[RunStatus, ErrorInfo | None]:
    """Restate's ``completion_failure`` (``"[500] ValueError: boom"``) -> status and perdure error."""
    m = _FAILURE.match(text)
    code, message = (int(m.group(1)), m.group(2)) if m else (500, text)
    if code == 409 and message in ("killed", "cancelled"):
        return RunStatus.CANCELLED, None
    typed = _TYPED.match(message)
    if typed:
        return RunStatus.FAILED, ErrorInfo(type=typed.group(1), message=typed.group(2) or "")
    return RunStatus.FAILED, ErrorInfo(type="TerminalError", message=message)

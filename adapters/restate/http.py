"""The two HTTP APIs of a Restate server, as perdure uses them (httpx, async).

* the **ingress** (``/<service>/<key>/<handler>/send``, ``/restate/workflow/.../attach``): start runs and
  deliver decisions -- both deduplicated by Restate itself (the workflow key, the idempotency key);
* the **admin API**: SQL introspection (``/query`` over ``sys_invocation``, ``sys_journal``, ``state``),
  which answers while no worker runs; ``kill``; state edits; deployment registration.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote

import httpx

from ...core.errors import PerdureError


class RestateHTTPError(PerdureError):
    """The Restate server answered an HTTP call with an unexpected status."""


def sql_literal(value: str) -> str:
    """``value`` as a SQL string literal (run ids are arbitrary text)."""
    return "'" + value.replace("'", "''") + "'"


def path_segment(value: str) -> str:
    return quote(value, safe="")


class RestateHTTP:
    """One connection pool to a Restate server's ingress and admin API, bound to the running event loop."""

    def __init__(self, ingress: str, admin: str) -> None:
        self.ingress = ingress
        self.admin = admin
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            # A Backend may outlive one asyncio.run(); httpx pools are tied to their loop. Plain-http
            # servers need no TLS context (loading one blocks the loop for ~0.1 s).
            secure = self.ingress.startswith("https:") or self.admin.startswith("https:")
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0), verify=secure)
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.aclose()
            except RuntimeError:  # its loop is gone already
                pass

    # --- admin --------------------------------------------------------------------------------------
    async def query(self, sql: str) -> list[dict[str, Any]]:
        """Rows of a SQL query over Restate's introspection tables."""
        r = await self.client.post(
            f"{self.admin}/query", json={"query": sql}, headers={"accept": "application/json"}
        )
        if r.status_code != 200:
            raise RestateHTTPError(f"Restate admin query failed ({r.status_code}): {r.text[:500]}\n{sql}")
        rows: list[dict[str, Any]] = r.json().get("rows", [])
        return rows

    async def kill(self, invocation_id: str) -> None:
        """End an invocation at once, without running its handler again (works while no worker runs)."""
        r = await self.client.patch(f"{self.admin}/invocations/{path_segment(invocation_id)}/kill")
        if r.status_code not in (200, 202, 404, 409):
            raise RestateHTTPError(f"cannot kill {invocation_id}: {r.status_code} {r.text[:300]}")

    async def replace_state(self, service: str, key: str, state: dict[str, bytes]) -> None:
        """Replace the whole K/V state of one workflow key (admin state edit)."""
        body = {"object_key": key, "new_state": {k: list(v) for k, v in state.items()}}
        r = await self.client.post(f"{self.admin}/services/{path_segment(service)}/state", json=body)
        if r.status_code not in (200, 202):
            raise RestateHTTPError(f"cannot write state of {service}/{key}: {r.status_code} {r.text[:300]}")

    async def register(self, uri: str) -> dict[str, Any]:
        """Register (or re-register, forcing an update) the deployment served at ``uri``."""
        r = await self.client.post(f"{self.admin}/deployments", json={"uri": uri, "force": True})
        if r.status_code not in (200, 201):
            raise RestateHTTPError(f"cannot register deployment {uri}: {r.status_code} {r.text[:500]}")
        result: dict[str, Any] = r.json()
        return result

    async def service(self, name: str) -> dict[str, Any] | None:
        """The registered service ``name`` (its options, metadata and handlers), or None if unknown."""
        r = await self.client.get(f"{self.admin}/services/{path_segment(name)}")
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise RestateHTTPError(f"cannot read service {name}: {r.status_code} {r.text[:300]}")
        found: dict[str, Any] = r.json()
        return found

    async def deployments(self) -> list[dict[str, Any]]:
        r = await self.client.get(f"{self.admin}/deployments")
        if r.status_code != 200:
            raise RestateHTTPError(f"cannot list deployments: {r.status_code} {r.text[:300]}")
        found: list[dict[str, Any]] = r.json().get("deployments", [])
        return found

    async def resume(self, invocation_id: str) -> None:
        r = await self.client.patch(f"{self.admin}/invocations/{path_segment(invocation_id)}/resume")
        if r.status_code not in (200, 202, 404, 409):
            raise RestateHTTPError(f"cannot resume {invocation_id}: {r.status_code} {r.text[:300]}")

    # --- ingress ------------------------------------------------------------------------------------
    async def send(
        self, service: str, key: str, handler: str, body: Any, idempotency_key: str | None = None
    ) -> tuple[str, bool]:
        """Submit an invocation without waiting for it. Returns (invocation id, whether it is new):
        Restate answers ``PreviouslyAccepted`` for a workflow key or idempotency key it already holds."""
        headers = {"content-type": "application/json"}
        if idempotency_key is not None:
            headers["idempotency-key"] = idempotency_key
        url = f"{self.ingress}/{path_segment(service)}/{path_segment(key)}/{handler}/send"
        r = await self.client.post(url, content=json.dumps(body).encode(), headers=headers)
        if r.status_code not in (200, 202):
            raise RestateHTTPError(f"Restate ingress refused {handler} of {service}/{key}: {r.status_code} {r.text[:500]}")
        data = r.json()
        return data["invocationId"], data.get("status") != "PreviouslyAccepted"

    async def attach(self, service: str, key: str, timeout: float | None) -> None:
        """Block until the workflow's run handler has finished (or ``timeout`` passes: httpx error)."""
        url = f"{self.ingress}/restate/workflow/{path_segment(service)}/{path_segment(key)}/attach"
        await self.client.get(url, timeout=httpx.Timeout(timeout, connect=5.0))

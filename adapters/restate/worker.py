"""A perdure worker on Restate: serve the perdure service (hypercorn, in this process) and register it.

Restate pushes work to the service over HTTP/2 and pins each invocation to the deployment it started on,
so a worker restarted after a crash serves the *same* address; the socket is opened with ``SO_REUSEPORT``
so several workers can share that address. After a SIGKILL, Restate retries the dead worker's invocations
(test profile: every 50-100 ms) and the next worker replays them from their journals.

The service's options (retry profile, step timeout, retention) are what the last registration declared; a
worker whose options are not in force registers before it reports ready, and again, in the background,
while older workers sharing its address answer Restate in its place (:func:`register`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable
from typing import Any

import httpx
import restate
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config
from restate.server import install_shutdown_hook

from ...core.errors import ConfigurationError
from .http import RestateHTTP, RestateHTTPError, sql_literal
from .service import OPTIONS_METADATA, build_service, declared_options
from .settings import RestateSettings

log = logging.getLogger("perdure.restate")


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(1024)  # listening before registration: Restate's discovery call waits in the backlog
    sock.setblocking(False)
    return sock


def _options_in(services: list[dict[str, Any]], name: str) -> str:
    """The declared options (:func:`~.service.declared_options`) of service ``name`` in an admin API answer;
    empty when it has none (registered by an older perdure)."""
    for service in services:
        if service.get("name") == name:
            return str((service.get("metadata") or {}).get(OPTIONS_METADATA, ""))
    return ""


async def register(http: RestateHTTP, settings: RestateSettings, patience: float = 30.0) -> str:
    """Register the deployment (forcing an update of an existing one at the same address); returns the
    options now in force. Restate reads them from whichever worker serving the address answers its
    discovery call -- over a connection it keeps, so while older workers share the address (``SO_REUSEPORT``,
    a rolling restart) it is one of theirs, and their options stay in force."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    while True:
        try:
            answer = await http.register(settings.deployment)
            return _options_in(answer.get("services", []), settings.service)
        except (RestateHTTPError, OSError) as exc:
            if loop.time() > deadline:
                raise RestateHTTPError(f"cannot register {settings.deployment} with {settings.admin}: {exc}") from exc
            await asyncio.sleep(0.2)


async def _register_until_in_force(http: RestateHTTP, settings: RestateSettings, declared: str) -> None:
    """Register again and again (0.5 s, doubling to 5 s, apart) until this worker's options are in force:
    once the older workers sharing the address stop, Restate's next discovery call reaches this one."""
    delay = 0.5
    while True:
        await asyncio.sleep(delay)
        try:
            if await register(http, settings) == declared:
                log.warning("the %s service's options are now this worker's", settings.service)
                return
        except Exception:  # the worker serves anyway; try again
            log.exception("could not register the Restate deployment %s", settings.deployment)
        delay = min(delay * 2, 5.0)


async def _make_in_force(http: RestateHTTP, settings: RestateSettings, declared: str) -> bool:
    """Register; False (and a warning) when another worker's options answered, so they stay in force."""
    if await register(http, settings) == declared:
        return True
    log.warning(
        "another worker serving %s declares other options for the %s service (a rolling restart, or a "
        "different URL or environment), and Restate took theirs; this worker registers again until its "
        "own are in force", settings.deployment, settings.service,
    )
    return False


async def registered_options(http: RestateHTTP, settings: RestateSettings, patience: float = 10.0) -> str | None:
    """The options in force for the perdure service if a deployment at this worker's address already
    serves it (a restart), else None. The worker's first call to the admin API: an admin API it cannot
    reach (a server still starting gets ``patience``) is a :class:`ConfigurationError` naming it, not a
    transport traceback."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    while True:
        try:
            deployments = await http.deployments()
            break
        except (httpx.TransportError, OSError) as exc:
            if loop.time() > deadline:
                raise ConfigurationError(
                    f"a restate:// worker needs Restate's admin API, and {settings.admin} does not answer "
                    f"({type(exc).__name__}: {exc}); check the URL's admin= part"
                ) from None
            await asyncio.sleep(0.2)
    for deployment in deployments:
        if deployment.get("uri", "").rstrip("/") == settings.deployment.rstrip("/"):
            if any(s.get("name") == settings.service for s in deployment.get("services", [])):
                service = await http.service(settings.service)
                return _options_in([service] if service else [], settings.service)
    return None


async def _resume_paused(http: RestateHTTP, settings: RestateSettings) -> None:
    """Resume this service's invocations Restate paused after its retry limit (a long worker outage)."""
    rows = await http.query(
        "SELECT id FROM sys_invocation "
        f"WHERE target_service_name = {sql_literal(settings.service)} AND status = 'paused'"
    )
    for row in rows:
        await http.resume(row["id"])
    if rows:
        log.warning("resumed %d paused perdure invocation(s)", len(rows))


async def _refresh(http: RestateHTTP, settings: RestateSettings, declared: str) -> None:
    """A restarted worker's registration, behind its "ready" -- made only while the options in force are
    still its own: a worker started since with other options keeps its own."""
    try:
        lost = await registered_options(http, settings) == declared and not await _make_in_force(
            http, settings, declared)
        await _resume_paused(http, settings)
        if lost:
            await _register_until_in_force(http, settings, declared)
    except Exception:  # the worker serves anyway; say why the registration could not be refreshed
        log.exception("could not refresh the Restate deployment %s", settings.deployment)


def _answer_lifespan(app: Any) -> Any:
    """The SDK's ASGI app refuses lifespan events (hypercorn then logs a warning): answer them here."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    return wrapped


def _stop_on_sigterm(task: asyncio.Task[object] | None) -> None:
    """The SDK takes over SIGTERM (to drain its streams) when it sees its first request, replacing any
    handler set before; register with its dispatcher so SIGTERM still stops this worker."""
    if task is None:
        return

    def stop() -> None:
        task.cancel()

    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        install_shutdown_hook(asyncio.get_running_loop(), stop, signal.SIGTERM)


async def serve_deployment(settings: RestateSettings, http: RestateHTTP, ready: Callable[[], None] | None) -> None:
    """Serve until cancelled; ``ready`` is called once Restate has the deployment registered."""
    app = _answer_lifespan(restate.app([build_service(settings, http)]))
    declared = declared_options(settings)
    # Ask the admin API first: the first request creates the HTTP client (lazy imports, ~0.1 s of blocked
    # loop) -- better done before the socket listens and Restate's retries start arriving.
    in_force = await registered_options(http, settings)
    host, port = settings.deployment_address
    sock = _listen(host, port)
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns (and closes) the socket from here
    config.accesslog = None
    config.loglevel = "WARNING"
    config.h2_max_concurrent_streams = 1000
    stop = asyncio.Event()
    _stop_on_sigterm(asyncio.current_task())
    server = asyncio.create_task(hypercorn_serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    background: asyncio.Task[None] | None = None
    try:
        if in_force == declared:
            # A restart with the options in force: Restate already routes this address's runs here.
            # Refreshing the registration takes 0.1-0.5 s and need not delay recovery.
            background = asyncio.create_task(_refresh(http, settings, declared))
        else:
            # A first start, or options that changed (retention, step timeout, retry profile): they are
            # in force before the worker says it is ready.
            if not await _make_in_force(http, settings, declared):
                background = asyncio.create_task(_register_until_in_force(http, settings, declared))
            await _resume_paused(http, settings)
        if ready is not None:
            ready()
        await server
    finally:
        if background is not None:
            background.cancel()
        stop.set()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(server), 2.0)
        server.cancel()

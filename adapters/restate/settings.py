"""What a ``restate://`` URL names: the ingress, the admin API, the deployment a worker serves, the service.

``restate://HOST:PORT?admin=HOST:PORT&deployment=HOST:PORT&service=perdure``

* ``HOST:PORT`` -- the Restate ingress (default port 8080): runs are started and decided there.
* ``admin`` -- the admin API (default: the ingress host, port 9070): SQL introspection, kill, registration.
* ``deployment`` -- where a worker serves the perdure service and the URI it registers (default
  ``127.0.0.1:9080``). Restate pins every invocation to the deployment it started on, so a restarted worker
  must come back on the *same* address; several workers may share it (``SO_REUSEPORT``).
* ``service`` -- the Restate workflow name perdure registers (default ``perdure``).
* ``step_timeout`` -- the longest one attempt of a step may run, in seconds (default 3600; read by
  workers). A step body sends Restate nothing while it runs, and Restate aborts an invocation that stays
  silent for its inactivity timeout (1 min) plus its abort timeout (10 min by default): the step would run
  again from the start, forever if it is always that slow. So a worker declares an abort timeout of
  ``step_timeout`` + 10 s for its service, and perdure cancels an attempt at ``step_timeout`` itself: the
  attempt fails with ``StepTimeoutError``, retried by the step's ``RetryPolicy`` like any failure.
* ``retention`` -- how long a finished run is kept, in seconds (default: the server's, 1 day on 1.7; read
  by workers). It is the run's whole lifetime after it ends: its status and steps, and the run id staying
  taken (a start of the same id returns it). Past it, at the server's next cleanup pass (hourly by
  default), Restate purges the run, and a start of the same id runs the workflow again. A worker declares
  it for its service as both the workflow's completion retention and its journal retention, so a run's
  status and its steps go together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from ...core.backend import redact_url, seconds_option
from ...core.errors import InvalidBackendURLError

DEFAULT_INGRESS_PORT = 8080
DEFAULT_ADMIN_PORT = 9070
DEFAULT_DEPLOYMENT = "http://127.0.0.1:9080"
DEFAULT_SERVICE = "perdure"
DEFAULT_STEP_TIMEOUT = 3600.0
RETRY_PROFILE_ENV = "PERDURE_RESTATE_RETRY_PROFILE"  # "test": workers declare the fast test retry policy
_SERVICE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def _http(value: str, default_port: int, url: str, what: str) -> str:
    """``host:port`` or ``http://host:port`` -> ``http://host:port`` (no trailing slash)."""
    text = value if "://" in value else f"http://{value}"
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidBackendURLError(f"{redact_url(url)!r}: {what} must look like host:port or http://host:port, got {value!r}")
    try:
        port = parts.port or default_port
    except ValueError:
        raise InvalidBackendURLError(f"{redact_url(url)!r}: {what} has an invalid port: {value!r}") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port}"


@dataclass(frozen=True)
class RestateSettings:
    """The parsed parts of a ``restate://`` URL."""

    ingress: str
    admin: str
    deployment: str
    service: str
    step_timeout: float = DEFAULT_STEP_TIMEOUT
    retention: float | None = None  # None: the server's default retentions

    @classmethod
    def from_url(cls, url: str) -> RestateSettings:
        parts = urlsplit(url)
        if parts.path not in ("", "/") or parts.fragment:
            raise InvalidBackendURLError(f"{redact_url(url)!r}: a restate URL is restate://HOST:PORT?admin=HOST:PORT")
        if not parts.hostname:
            raise InvalidBackendURLError(f"{redact_url(url)!r}: name the Restate ingress, e.g. restate://127.0.0.1:8080")
        query = parse_qs(parts.query, keep_blank_values=True)
        step_timeout = seconds_option(url, query, "step_timeout")
        retention = seconds_option(url, query, "retention")
        unknown = set(query) - {"admin", "deployment", "service"}
        if unknown:
            raise InvalidBackendURLError(
                f"{redact_url(url)!r}: unknown parameter(s) {', '.join(sorted(unknown))}; known: admin, deployment, "
                "service, step_timeout, retention"
            )
        one = {k: v[-1] for k, v in query.items()}
        ingress = _http(parts.netloc, DEFAULT_INGRESS_PORT, url, "the ingress")
        host = urlsplit(ingress).hostname or "127.0.0.1"
        admin = _http(one.get("admin") or f"{host}:{DEFAULT_ADMIN_PORT}", DEFAULT_ADMIN_PORT, url, "admin")
        deployment = _http(one.get("deployment") or DEFAULT_DEPLOYMENT, 9080, url, "deployment")
        service = one.get("service") or DEFAULT_SERVICE
        if not _SERVICE_NAME.match(service):
            raise InvalidBackendURLError(f"{redact_url(url)!r}: service must be a Restate service name, got {service!r}")
        return cls(ingress=ingress, admin=admin, deployment=deployment, service=service,
                   step_timeout=DEFAULT_STEP_TIMEOUT if step_timeout is None else step_timeout, retention=retention)

    @property
    def deployment_address(self) -> tuple[str, int]:
        """The (host, port) a worker binds to serve the deployment."""
        parts = urlsplit(self.deployment)
        return parts.hostname or "127.0.0.1", parts.port or 9080

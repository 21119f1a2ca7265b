"""Running a worker: import the user's modules (which registers their workflows) and serve them."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable

from .codec import max_payload_bytes
from .config import open_backend
from .errors import ConfigurationError


def import_apps(modules: Iterable[str]) -> None:
    """Import each module so its ``@perdure.workflow`` / ``@step`` / ``@tool`` declarations register."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                raise ConfigurationError(f"cannot import app module {name!r}: {exc}") from exc
            raise


async def serve(
    backend: str | None = None, *, apps: Iterable[str] = (), ready: Callable[[], None] | None = None
) -> None:
    """Serve every registered workflow on ``backend`` until cancelled (after importing ``apps``)."""
    max_payload_bytes()  # a bad PERDURE_MAX_PAYLOAD_BYTES fails at start, not at the first large value
    import_apps(apps)
    b = open_backend(backend)
    b.check_payload_limit()
    try:
        await b.serve(ready=ready)
    finally:
        await b.aclose()

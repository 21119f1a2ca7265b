"""Choosing a backend: the URL argument, else ``PERDURE_BACKEND``, else ``[tool.perdure]`` / perdure.toml.

A relative file path in a config file's URL (``dbos+sqlite:///state/app.sqlite``) is relative to that file's
folder, so the CLI run from any subfolder of the project reaches the same database.

Backends are found by URL scheme in the ``perdure.backends`` entry-point group (third parties register
there) and in the built-in table below. An engine that is not installed gives an install hint; an
unknown scheme gives the list of schemes that are installed.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import tomllib
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from .backend import Backend
from .errors import (
    BackendNotInstalledError,
    ConfigurationError,
    InvalidBackendURLError,
    PerdureError,
    UnknownBackendError,
)

# scheme -> (import path, extra to install, engine module whose absence means "not installed")
BUILTIN: dict[str, tuple[str, str | None, str | None]] = {
    "memory": ("perdure.adapters.memory:MemoryBackend", None, None),
    "dbos+sqlite": ("perdure.adapters.dbos:DBOSBackend", "dbos", "dbos"),
    "dbos+postgresql": ("perdure.adapters.dbos:DBOSBackend", "dbos", "dbos"),
    "temporal": ("perdure.adapters.temporal:TemporalBackend", "temporal", "temporalio"),
    "restate": ("perdure.adapters.restate:RestateBackend", "restate", "restate"),
}


def find_config(start: Path | None = None) -> tuple[Path, str] | None:
    """The nearest perdure.toml (``backend = ...``) or pyproject.toml with ``[tool.perdure] backend``."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        for name, section in (("perdure.toml", ()), ("pyproject.toml", ("tool", "perdure"))):
            path = folder / name
            if not path.is_file():
                continue
            try:
                data: Any = tomllib.loads(path.read_text())
            except tomllib.TOMLDecodeError as exc:
                raise ConfigurationError(f"{path}: invalid TOML: {exc}") from None
            for key in section:
                data = data.get(key, {}) if isinstance(data, dict) else {}
            backend = data.get("backend") if isinstance(data, dict) else None
            if backend is not None:
                if not isinstance(backend, str):
                    raise ConfigurationError(f"{path}: backend must be a URL string, got {backend!r}")
                return path, backend
    return None


def resolve_url(url: str | None = None) -> str:
    """The backend URL to use: ``url``, else ``PERDURE_BACKEND``, else the config file, else an error."""
    if url:
        return url
    env = os.environ.get("PERDURE_BACKEND")
    if env:
        return env
    found = find_config()
    if found is not None:
        path, configured = found
        return _anchored(configured, path.parent)
    raise ConfigurationError(
        "no backend chosen: pass a URL (e.g. memory:// or dbos+sqlite:///perdure.sqlite), set "
        "PERDURE_BACKEND, or add `backend = \"...\"` under [tool.perdure] in pyproject.toml"
    )


def _anchored(url: str, folder: Path) -> str:
    """A config file's URL with its relative paths made relative to the file (:meth:`Backend.anchor_url`)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url  # open_backend says what a URL looks like
    try:
        cls = backend_class(scheme.lower())
    except PerdureError:
        return url  # open_backend raises the same error, where a backend is actually needed
    return cls.anchor_url(f"{scheme.lower()}://{rest}", folder)  # schemes lowercased, as open_backend does


def _registered() -> dict[str, str]:
    """scheme -> "module:attr" for every backend, entry points overriding nothing built in."""
    table = {scheme: target for scheme, (target, _, _) in BUILTIN.items()}
    for ep in entry_points(group="perdure.backends"):
        table.setdefault(ep.name, ep.value)
    return table


def installed_schemes() -> list[str]:
    """Schemes whose backend can be loaded here (engine package importable)."""
    out = []
    for scheme in _registered():
        engine = BUILTIN.get(scheme, (None, None, None))[2]
        if engine is None or importlib.util.find_spec(engine) is not None:
            out.append(scheme)
    return sorted(out)


def backend_class(scheme: str) -> type[Backend]:
    table = _registered()
    if scheme not in table:
        raise UnknownBackendError(
            f"no backend handles {scheme}:// -- installed: {', '.join(s + '://' for s in installed_schemes())}. "
            "Third-party backends register in the 'perdure.backends' entry-point group."
        )
    module_name, _, attr = table[scheme].partition(":")
    _, extra, engine = BUILTIN.get(scheme, (None, None, None))
    if engine is not None and importlib.util.find_spec(engine) is None:
        raise BackendNotInstalledError(
            f"{scheme}:// needs the {engine!r} package: pip install 'perdure[{extra}]'"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        hint = f"pip install 'perdure[{extra}]'" if extra else f"install the package that provides {module_name}"
        raise BackendNotInstalledError(f"{scheme}:// cannot be loaded ({exc}): {hint}") from exc
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise ConfigurationError(f"{table[scheme]} (for {scheme}://) is not a perdure Backend class")
    return cls


def open_backend(url: str | None = None) -> Backend:
    """A backend instance for ``url`` (resolved as :func:`resolve_url` says)."""
    resolved = resolve_url(url)
    if not isinstance(resolved, str) or "://" not in resolved:
        raise InvalidBackendURLError(
            f"a backend URL looks like scheme://..., got {resolved!r} (e.g. memory://, dbos+sqlite:///app.sqlite)"
        )
    scheme, rest = resolved.split("://", 1)
    scheme = scheme.lower()  # schemes are case-insensitive (RFC 3986); backends see them lowercase
    return backend_class(scheme)(f"{scheme}://{rest}")

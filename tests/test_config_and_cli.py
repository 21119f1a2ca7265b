"""Choosing a backend (URL, env, config files, entry points) and the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from perdure.core import config
from perdure.core.errors import (
    BackendNotInstalledError,
    ConfigurationError,
    InvalidBackendURLError,
    UnknownBackendError,
)


def test_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PERDURE_BACKEND", raising=False)
    with pytest.raises(ConfigurationError, match="no backend chosen"):
        config.resolve_url()
    (tmp_path / "pyproject.toml").write_text('[tool.perdure]\nbackend = "memory://from-pyproject"\n')
    assert config.resolve_url() == "memory://from-pyproject"
    sub = tmp_path / "pkg"
    sub.mkdir()
    (sub / "perdure.toml").write_text('backend = "memory://from-perdure-toml"\n')
    monkeypatch.chdir(sub)
    assert config.resolve_url() == "memory://from-perdure-toml"
    monkeypatch.setenv("PERDURE_BACKEND", "memory://from-env")
    assert config.resolve_url() == "memory://from-env"
    assert config.resolve_url("memory://explicit") == "memory://explicit"
    (sub / "perdure.toml").write_text("backend = [1]\n")
    monkeypatch.delenv("PERDURE_BACKEND")
    with pytest.raises(ConfigurationError, match="must be a URL string"):
        config.resolve_url()


def test_a_relative_sqlite_path_in_a_config_file_is_relative_to_that_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PERDURE_BACKEND", raising=False)
    (tmp_path / "pyproject.toml").write_text('[tool.perdure]\nbackend = "dbos+sqlite:///state/app.sqlite"\n')
    deep = tmp_path / "src" / "pkg"
    deep.mkdir(parents=True)
    for where in (tmp_path, deep):  # the same database from the project root and from a subfolder
        monkeypatch.chdir(where)
        assert config.resolve_url() == f"dbos+sqlite:///{tmp_path / 'state' / 'app.sqlite'}"
        assert config.open_backend().db.dbos_url == f"sqlite:///{tmp_path / 'state' / 'app.sqlite'}"  # type: ignore[attr-defined]
    # Absolute paths, other engines, and URLs from the environment or an argument are left as they are.
    for url in (f"dbos+sqlite:///{tmp_path / 'abs.sqlite'}", "memory://rel", "dbos+postgresql://u@h:5432/db"):
        (tmp_path / "pyproject.toml").write_text(f'[tool.perdure]\nbackend = "{url}"\n')
        assert config.resolve_url() == url
    monkeypatch.setenv("PERDURE_BACKEND", "dbos+sqlite:///rel.sqlite")
    assert config.resolve_url() == "dbos+sqlite:///rel.sqlite"
    # A config URL naming an engine that is not installed still fails where a backend is opened, as before.
    monkeypatch.delenv("PERDURE_BACKEND")
    (tmp_path / "pyproject.toml").write_text('[tool.perdure]\nbackend = "kafka:///rel"\n')
    assert config.resolve_url() == "kafka:///rel"
    with pytest.raises(UnknownBackendError):
        config.open_backend()


def test_passwords_are_redacted_from_urls_in_messages() -> None:
    from perdure.core.backend import redact_url

    assert redact_url("dbos+postgresql://app:pa:ss@db.internal:5432/prod?sslmode=require") == (
        "dbos+postgresql://app:***@db.internal:5432/prod?sslmode=require")
    for url in ("dbos+postgresql://app@db:5432/prod", "dbos+sqlite:////tmp/a@b:c.sqlite", "memory://x", "temporal://h:7233/ns"):
        assert redact_url(url) == url
    with pytest.raises(InvalidBackendURLError) as failed:
        config.open_backend("dbos+postgresql://app:hunter2@/nodb")
    assert "hunter2" not in str(failed.value) and "app:***@" in str(failed.value)


def test_bad_urls_and_schemes(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidBackendURLError, match="scheme://"):
        config.open_backend("localhost:7233")
    with pytest.raises(UnknownBackendError, match="memory://"):
        config.open_backend("kafka://localhost")
    monkeypatch.setitem(config.BUILTIN, "fake", ("perdure.adapters.fake:FakeBackend", "fake", "no_such_engine_pkg"))
    with pytest.raises(BackendNotInstalledError, match=r"pip install 'perdure\[fake\]'"):
        config.open_backend("fake://x")


def test_url_schemes_are_case_insensitive(tmp_path: Path) -> None:
    backend = config.open_backend(f"DBOS+SQLite:///{tmp_path / 'x.sqlite'}")
    assert backend.url == f"dbos+sqlite:///{tmp_path / 'x.sqlite'}"
    assert config.open_backend("MEMORY://upper").url == "memory://upper"


def test_entry_point_backends_are_found(monkeypatch: pytest.MonkeyPatch) -> None:
    class EP:
        name, value = "thirdparty", "perdure.adapters.memory:MemoryBackend"

    monkeypatch.setattr(config, "entry_points", lambda group: [EP()] if group == "perdure.backends" else [])
    assert "thirdparty" in config.installed_schemes()
    assert config.backend_class("thirdparty").__name__ == "MemoryBackend"


def _perdure(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PERDURE_BACKEND": "memory://"}
    return subprocess.run([sys.executable, "-m", "perdure", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120)


def test_help_everywhere() -> None:
    top = _perdure("--help")
    assert top.returncode == 0 and "conformance" in top.stdout and "examples:" in top.stdout
    for cmd in ("worker", "start", "status", "result", "steps", "runs", "approve", "reject", "cancel",
                "conformance", "demo", "dev"):
        out = _perdure(cmd, "--help")
        assert out.returncode == 0 and out.stdout.startswith("usage: perdure " + cmd), cmd


def test_cli_errors_are_explained_with_exit_code_2() -> None:
    out = _perdure("status", "nope", "--backend", "kafka://x")
    assert out.returncode == 2 and "UnknownBackendError" in out.stderr and "installed:" in out.stderr
    out = _perdure("worker", "memory://")
    assert out.returncode == 2 and "separate worker cannot reach it" in out.stderr
    out = _perdure("start", "x.y", "--arg", "topic=not json")
    assert out.returncode == 2 and "is not JSON" in out.stderr
    out = _perdure("start", "x.y", "--arg", 'run_id="r-1"')
    assert out.returncode == 2 and "given with --run-id ID" in out.stderr
    out = _perdure("dev", "temporal://127.0.0.1:7233/default")  # the address would be silently ignored
    assert out.returncode == 2 and "takes an engine name (temporal), not a URL" in out.stderr


def test_conformance_cli_lists_and_runs(tmp_path: Path) -> None:
    out = _perdure("conformance", "--list")
    assert out.returncode == 0 and "approval_double_decision" in out.stdout
    out = _perdure("conformance", "--list", "--json")
    assert out.returncode == 0 and "approval_double_decision" in [s["name"] for s in json.loads(out.stdout)]
    out = _perdure("conformance")
    assert out.returncode == 2 and "needs a TARGET" in out.stderr
    # An unwritable --output is refused before the run, not after it (when the results would be lost).
    out = _perdure("conformance", "memory", "--output", str(tmp_path / "no-such-dir" / "m.json"))
    assert out.returncode == 2 and "cannot write there" in out.stderr and "happy_path" not in out.stderr
    matrix = tmp_path / "m.json"
    out = _perdure("conformance", "memory", "-k", "happy", "-k", "retry_permanent", "--output", str(matrix))
    assert out.returncode == 0, out.stderr
    assert "happy_path" in out.stdout and "PASS" in out.stdout
    data = json.loads(matrix.read_text())
    assert data["backends"]["memory"]["happy_path"]["result"] == "PASS"


def test_start_with_app_refuses_a_workflow_the_app_does_not_define(tmp_path: Path) -> None:
    (tmp_path / "flowsapp.py").write_text(
        "import perdure\n\n@perdure.workflow(name='flowsapp.hello')\nasync def hello(who: str) -> str:\n"
        "    return who\n"
    )
    out = _perdure("start", "flowsapp.nope", "--app", "flowsapp", cwd=tmp_path)
    assert out.returncode == 2 and "WorkflowNotFoundError" in out.stderr and "flowsapp.hello" in out.stderr
    out = _perdure("start", "flowsapp.hello", "--app", "flowsapp", "--arg", "who=3", cwd=tmp_path)
    assert out.returncode == 2 and "SerializationError" in out.stderr and "'who'" in out.stderr


def test_commands_run_from_a_subfolder_reach_the_config_file_s_database(tmp_path: Path) -> None:
    (tmp_path / "perdure.toml").write_text('backend = "dbos+sqlite:///app.sqlite"\n')
    (tmp_path / "sub").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PERDURE_BACKEND"}

    def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "perdure", *args], capture_output=True, text=True, env=env,
                              cwd=cwd, timeout=120)

    out = cli("start", "some.flow", "--run-id", "from-sub", cwd=tmp_path / "sub")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "app.sqlite").is_file() and not (tmp_path / "sub" / "app.sqlite").exists()
    out = cli("runs", cwd=tmp_path)
    assert out.returncode == 0 and "from-sub" in out.stdout, out.stdout + out.stderr


def test_the_worker_script_imports_apps_from_the_current_directory_and_warns_when_it_serves_nothing(
    tmp_path: Path,
) -> None:
    """The ``perdure`` console script (not ``python -m``, which puts the current directory on sys.path by
    itself) finds ``--app`` modules where the user runs it, as ``python -m`` would."""
    (tmp_path / "localapp.py").write_text("import perdure\n\n@perdure.workflow(name='localapp.flow')\n"
                                          "async def flow() -> int:\n    return 1\n")
    script = Path(sys.executable).parent / "perdure"
    url = f"dbos+sqlite:///{tmp_path / 'w.sqlite'}"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for apps, expected in ((["--app", "localapp"], "perdure worker ready"), ([], "no workflow is registered")):
        proc = subprocess.Popen([str(script), "worker", url, *apps], cwd=tmp_path, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            seen = []
            assert proc.stdout is not None
            for line in proc.stdout:
                seen.append(line)
                if expected in line or "Error" in line:
                    break
            assert any(expected in line for line in seen), "".join(seen)
        finally:
            proc.kill()
            proc.wait()


def test_json_output_parses_with_a_strict_parser_even_for_nan_and_infinity(capsys: pytest.CaptureFixture[str]) -> None:
    from perdure.cli.commands import _print_json

    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    _print_json({"output": float("nan"), "deadline": float("inf"), "xs": [float("-inf"), 1.5, "t"]})
    data = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert data == {"output": "NaN", "deadline": "Infinity", "xs": ["-Infinity", 1.5, "t"]}

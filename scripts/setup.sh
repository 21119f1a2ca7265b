#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: .venv with perdure and every engine and framework extra.
# `scripts/setup.sh --engines` also installs what the engine tests need beyond PyPI: Debian's PostgreSQL
# (apt, as root) and the pinned Restate server (npm, into perdure's cache).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}

if [ ! -x "$ROOT/.venv/bin/python" ]; then
  "$PY" -m venv "$ROOT/.venv"
fi
stamp="$ROOT/.venv/.perdure-installed"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
  echo "setup: installing perdure[all,dev] into .venv" >&2
  "$ROOT/.venv/bin/python" -m pip install -q --upgrade pip
  "$ROOT/.venv/bin/python" -m pip install -q -e "$ROOT[all,dev]"
  touch "$stamp"
fi

if [ "${1:-}" = "--engines" ]; then
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
      echo "setup: installing PostgreSQL (Debian)" >&2
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    else
      echo "setup: PostgreSQL is missing and this is not root: dbos+postgresql tests will fail" >&2
    fi
  fi
  # The pinned restate-server from npm, into ~/.cache/perdure (a no-op when it is there).
  "$ROOT/.venv/bin/python" -c "from perdure.adapters.restate import ensure_restate_server; ensure_restate_server()"
fi

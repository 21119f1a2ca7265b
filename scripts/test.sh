#!/usr/bin/env bash
# Every check, from a fresh clone: set-up (venv, PostgreSQL, Restate server), ruff, mypy, then pytest over
# tests/ -- the core, the reference engine, the conformance suite with real servers and real SIGKILLs on
# every engine, and the agent integrations. Extra arguments go to pytest (e.g. -k dbos).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh" --engines
cd "$ROOT"
export PERDURE_REQUIRE_POSTGRES=1   # the dbos+postgresql tests fail, never skip, without PostgreSQL
.venv/bin/ruff check .
# mypy names a package after its folder, and a checkout's folder may have any name (perdure-main,
# ci-clone): check the repo through a link named perdure, as it is imported.
MYPY_DIR=$(mktemp -d)
ln -s "$ROOT" "$MYPY_DIR/perdure"
(cd "$MYPY_DIR" && "$ROOT/.venv/bin/mypy" --config-file "$ROOT/pyproject.toml" perdure)
rm -rf "$MYPY_DIR"
set +e
# --rootdir: the repository root is the package itself; as pytest's rootdir it would be collected as a
# package and its __init__.py imported under the checkout folder's name (which fails for perdure-main).
.venv/bin/python -m pytest --rootdir "$ROOT/tests" tests -ra "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests -- that is a failure here" >&2
  exit 1
fi
exit "$rc"

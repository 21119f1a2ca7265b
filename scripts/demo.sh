#!/usr/bin/env bash
# The crash-and-resume demo, from a fresh clone: sets up .venv, then `perdure demo` (a worker process is
# SIGKILLed mid-run and a new one resumes it). Extra arguments go to `perdure demo`.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec .venv/bin/perdure demo "$@"

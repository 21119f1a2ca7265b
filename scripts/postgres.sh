#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on 127.0.0.1 for dbos+postgresql (CI and local tests; no Docker).
#
#   scripts/postgres.sh start DIR PORT   initdb in DIR/pgdata if needed, start, print the backend URL
#   scripts/postgres.sh stop  DIR        stop the cluster started in DIR
#
# Uses the machine's own PostgreSQL binaries ($PERDURE_PG_BIN, else pg_ctl on PATH, else the newest
# /usr/lib/postgresql/*/bin). As root the server runs as the `postgres` user, as Postgres requires.
# The Python equivalent is perdure.adapters.dbos.devserver.PostgresDevServer.
set -euo pipefail

usage() { echo "usage: $0 start DIR PORT | stop DIR" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)

bin=${PERDURE_PG_BIN:-}
if [ -z "$bin" ]; then
  if command -v pg_ctl >/dev/null 2>&1; then
    bin=$(dirname "$(command -v pg_ctl)")
  else
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  fi
fi
[ -x "$bin/pg_ctl" ] || { echo "postgres.sh: PostgreSQL binaries not found (set PERDURE_PG_BIN)" >&2; exit 1; }

as_server() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
  start)
    [ $# -eq 3 ] || usage
    port=$3
    mkdir -p "$dir/socket"
    if [ "$(id -u)" = 0 ]; then
      chown postgres:postgres "$dir" "$dir/socket"
      # Let the postgres user traverse (not list) parents that shut it out, e.g. 0700 temp dirs.
      p=$dir
      while [ "$p" != / ]; do p=$(dirname "$p"); [ "$(stat -c %u "$p")" = 0 ] && chmod o+x "$p"; done
    fi
    if [ ! -f "$dir/pgdata/PG_VERSION" ]; then
      as_server "$bin/initdb" -D "$dir/pgdata" -U postgres --auth=trust --encoding=UTF8 --no-instructions >/dev/null
    fi
    as_server "$bin/pg_ctl" -D "$dir/pgdata" -l "$dir/postgres.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir/socket -c max_connections=200" start >/dev/null
    echo "dbos+postgresql://postgres@127.0.0.1:$port/perdure"
    ;;
  stop)
    if [ -f "$dir/pgdata/postmaster.pid" ]; then
      as_server "$bin/pg_ctl" -D "$dir/pgdata" -m fast -w stop >/dev/null
    fi
    ;;
  *) usage ;;
esac

#!/usr/bin/env bash
# Run a command against a throwaway PostgreSQL server: `scripts/pg_test.sh .venv/bin/python -m pytest`.
#
# Debian's postgresql binaries (/usr/lib/postgresql/<version>/bin; `.ci/run` installs the package
# when missing) start a fresh cluster in a temporary folder on a free loopback port, with
# durability off (a test database is thrown away). The command runs with DATABASE_URL pointing at
# it (pytest-django then creates and drops test_tunelab there, one test_tunelab_gwN per
# pytest-xdist worker); the cluster is stopped and deleted on exit, whatever the command's
# outcome, and the command's exit status is returned.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
  echo "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: apt-get install postgresql" >&2
  exit 2
fi

# Not under var/: the settings keep var/ closed to other accounts (0700), and as root the server
# runs as `postgres`, which must reach its cluster.
CLUSTER=$(mktemp -d "${TMPDIR:-/tmp}/tunelab-pg-test.XXXXXX")
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# PostgreSQL refuses to run as root: when we are root, the server runs as the package's
# `postgres` user, which owns the cluster directory.
as_pg() { "$@"; }
if [ "$(id -u)" = 0 ]; then
  chown postgres: "$CLUSTER"
  as_pg() { runuser -u postgres -- "$@"; }
fi

stop() {
  as_pg "$PG_BIN/pg_ctl" -D "$CLUSTER/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$CLUSTER"
}
trap stop EXIT

as_pg "$PG_BIN/initdb" -D "$CLUSTER/data" -U tunelab --auth=trust --encoding=UTF8 --no-locale >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$CLUSTER/data" -l "$CLUSTER/server.log" -w -t 60 start -o \
  "-p $PORT -k $CLUSTER -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" >/dev/null
as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$PORT" -U tunelab tunelab

export DATABASE_URL="postgres://tunelab@127.0.0.1:$PORT/tunelab"
echo "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT (cluster $CLUSTER)"
status=0
"$@" || status=$?
exit $status

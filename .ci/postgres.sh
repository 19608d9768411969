#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on loopback for the shared-storage tune test.
# Usage: source .ci/postgres.sh  (exports COMPKIT_TEST_POSTGRES_URL; `pg_stop` stops the server)
set -euo pipefail
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
fi
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
PG_DIR=$(mktemp -d /tmp/compkit-pg.XXXXXX)
PG_PORT=${PG_PORT:-54329}
chown postgres "$PG_DIR"
runuser -u postgres -- "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust >/dev/null
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w start \
  -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1" >/dev/null
runuser -u postgres -- "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" compkit
export COMPKIT_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$PG_PORT/compkit"
pg_stop() { runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast stop >/dev/null; rm -rf "$PG_DIR"; }
echo "PostgreSQL on 127.0.0.1:$PG_PORT ($PG_DIR)"

#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the store tests, from Debian's `postgresql` package
# (no Docker, no system service): initdb into a temporary directory, trust authentication
# on 127.0.0.1 only, fsync off (test data only).
#   scripts/test-postgres.sh [PORT]   starts one (on a free port unless PORT is given) and prints
#     SEALED_EDGE_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:PORT/postgres
#     SEALED_EDGE_TEST_POSTGRES_DIR=DIR
#   scripts/test-postgres.sh stop DIR  stops it and removes DIR
#   scripts/test-postgres.sh down DIR  kills it as a crash would (immediate shutdown), keeping DIR
#   scripts/test-postgres.sh up DIR    starts it again on the same port (after down)
#   SEALED_EDGE_POSTGRES_DURABLE=1 scripts/test-postgres.sh [PORT]   fsync on, for benchmarks
# As root the cluster runs as the `postgres` user the package creates.
set -euo pipefail
bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
if [ -z "$bin" ]; then
  echo "test-postgres: Debian's postgresql is not installed (apt-get install postgresql)" >&2
  exit 1
fi
as_owner=()
if [ "$(id -u)" = 0 ]; then as_owner=(runuser -u postgres --); fi

if [ "${1:-}" = stop ]; then
  dir="${2:?usage: test-postgres.sh stop DIR}"
  "${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
  rm -rf "$dir"
  exit 0
fi
if [ "${1:-}" = down ]; then
  dir="${2:?usage: test-postgres.sh down DIR}"
  "${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null
  exit 0
fi
if [ "${1:-}" = up ]; then
  dir="${2:?usage: test-postgres.sh up DIR}"
  "${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start -o "$(cat "$dir/options")" >/dev/null
  exit 0
fi

port="${1:-$(node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")}"
dir="$(mktemp -d /tmp/sealed-edge-postgres.XXXXXX)"
if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
"${as_owner[@]}" "$bin/initdb" -D "$dir/data" -A trust -U postgres --no-sync -E UTF8 --locale C >"$dir/initdb.log"
fsync=off
if [ "${SEALED_EDGE_POSTGRES_DURABLE:-}" = 1 ]; then fsync=on; fi
echo "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=$fsync -c max_connections=200" >"$dir/options"
"${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start -o "$(cat "$dir/options")" >/dev/null
echo "SEALED_EDGE_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$port/postgres"
echo "SEALED_EDGE_TEST_POSTGRES_DIR=$dir"

#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the demo, the SQL tests and the benchmarks.
# PostgreSQL refuses to run as root, so the cluster runs as the postgres user.
#   scripts/cluster.sh start   # creates it on first use, then starts it
#   scripts/cluster.sh stop
#   scripts/cluster.sh destroy
#   scripts/cluster.sh dir     # prints its directory (the socket's too)
# Environment: PG_CONFIG (any installation) or AB_PG_VERSION (15, 16 or 18; default 15: see
# scripts/pg-versions.sh),
# AB_PGDIR (default /tmp/ab_testing_pg, with the version appended when it is not 15),
# PGPORT (default 5499).
set -euo pipefail

if [ -n "${PG_CONFIG:-}" ]; then
    VERSION=$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
    PG_BIN=$("$PG_CONFIG" --bindir)
else
    VERSION=${AB_PG_VERSION:-15}
    PG_BIN=$("$(dirname "$0")/pg-versions.sh" bin "$VERSION")
fi
if [ "$VERSION" = 15 ]; then
    DIR=${AB_PGDIR:-/tmp/ab_testing_pg}
else
    DIR=${AB_PGDIR:-/tmp/ab_testing_pg$VERSION}
fi
PORT=${PGPORT:-5499}

as_postgres() {
    if [ "$(id -un)" = postgres ]; then "$@"; else sudo -u postgres "$@"; fi
}

case "${1:-start}" in
start)
    if [ ! -f "$DIR/data/PG_VERSION" ]; then
        mkdir -p "$DIR"
        chown postgres:postgres "$DIR" 2>/dev/null || true
        as_postgres "$PG_BIN/initdb" -D "$DIR/data" -A trust -U postgres --no-sync >/dev/null
        cat >> "$DIR/data/postgresql.conf" <<CONF
port = $PORT
unix_socket_directories = '$DIR'
listen_addresses = '127.0.0.1'
fsync = on
max_connections = 50
shared_buffers = 256MB
max_prepared_transactions = 10
CONF
    fi
    # A postmaster killed with SIGKILL can linger as a zombie where nothing reaps orphans
    # (some containers); its pid files would make PostgreSQL believe it still runs.
    if [ -f "$DIR/data/postmaster.pid" ]; then
        pid=$(head -1 "$DIR/data/postmaster.pid")
        if [ ! -d "/proc/$pid" ] || [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ]; then
            rm -f "$DIR/data/postmaster.pid" "$DIR"/.s.PGSQL.*.lock
        fi
    fi
    if ! as_postgres "$PG_BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
        as_postgres "$PG_BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w start >/dev/null
    fi
    echo "cluster running: psql -h $DIR -p $PORT -U postgres"
    ;;
stop)
    as_postgres "$PG_BIN/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    ;;
destroy)
    as_postgres "$PG_BIN/pg_ctl" -D "$DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$DIR"
    ;;
dir)
    echo "$DIR"
    ;;
*)
    echo "usage: $0 start|stop|destroy|dir" >&2
    exit 2
    ;;
esac

#!/usr/bin/env bash
# A throwaway Citus cluster on loopback: a coordinator and two workers, each a PostgreSQL 15
# cluster run as the postgres user, with citus and ab_testing installed and ab_distribute() run.
#   scripts/citus-cluster.sh start     # creates it on first use, then starts it
#   scripts/citus-cluster.sh stop
#   scripts/citus-cluster.sh destroy
#   scripts/citus-cluster.sh spare-start   # a third worker with citus created, not yet added
#   scripts/citus-cluster.sh spare-destroy
#   scripts/citus-cluster.sh crash N       # stops node N (1, 2: workers) as a crash would
# Environment: AB_CITUS_DIR (default /tmp/ab_testing_citus), AB_CITUS_PORT (the coordinator's
# port, default 5510; the workers take the next two, the spare the one after). Needs Citus (scripts/citus-build.sh) and
# ab_testing (scripts/install.sh) installed.
set -euo pipefail

PG_BIN=/usr/lib/postgresql/15/bin
DIR=${AB_CITUS_DIR:-/tmp/ab_testing_citus}
PORT=${AB_CITUS_PORT:-5510}
NODES=(coordinator worker1 worker2 worker3)

as_postgres() {
    if [ "$(id -un)" = postgres ]; then "$@"; else sudo -u postgres "$@"; fi
}
port_of() { echo $((PORT + $1)); }
psql_node() {
    local i=$1
    shift
    as_postgres "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$DIR" -p "$(port_of "$i")" -U postgres -d postgres "$@"
}

init_node() {
    local i=$1
    as_postgres "$PG_BIN/initdb" -D "$DIR/${NODES[$i]}" -A trust -U postgres --no-sync >/dev/null
    cat >> "$DIR/${NODES[$i]}/postgresql.conf" <<CONF
port = $(port_of "$i")
unix_socket_directories = '$DIR'
listen_addresses = '127.0.0.1'
shared_preload_libraries = 'citus'
max_prepared_transactions = 100
max_connections = 100
shared_buffers = 256MB
citus.max_cached_conns_per_worker = 4
CONF
}

start_node() {
    local i=$1 data="$DIR/${NODES[$1]}"
    if [ -f "$data/postmaster.pid" ]; then
        pid=$(head -1 "$data/postmaster.pid")
        if [ ! -d "/proc/$pid" ] || [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ]; then
            rm -f "$data/postmaster.pid" "$DIR"/.s.PGSQL."$(port_of "$i")".lock
        fi
    fi
    if ! as_postgres "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        as_postgres "$PG_BIN/pg_ctl" -D "$data" -l "$DIR/${NODES[$i]}.log" -w start >/dev/null
    fi
}

case "${1:-start}" in
start)
    fresh=0
    if [ ! -f "$DIR/coordinator/PG_VERSION" ]; then
        fresh=1
        rm -rf "$DIR"
        mkdir -p "$DIR"
        chown postgres:postgres "$DIR" 2>/dev/null || true
        for i in 0 1 2; do init_node "$i"; done
    fi
    for i in 0 1 2 3; do
        if [ -f "$DIR/${NODES[$i]}/PG_VERSION" ]; then start_node "$i"; fi
    done
    if [ $fresh = 1 ]; then
        for i in 0 1 2; do psql_node "$i" -c "CREATE EXTENSION citus"; done
        psql_node 0 <<SQL
SELECT citus_set_coordinator_host('127.0.0.1', $(port_of 0));
SELECT citus_add_node('127.0.0.1', $(port_of 1));
SELECT citus_add_node('127.0.0.1', $(port_of 2));
CREATE EXTENSION ab_testing;
SELECT ab_distribute();
SQL
    fi
    echo "citus cluster running: psql -h $DIR -p $(port_of 0) -U postgres (workers on $(port_of 1), $(port_of 2))"
    ;;
spare-start)
    if [ ! -f "$DIR/${NODES[3]}/PG_VERSION" ]; then
        init_node 3
        start_node 3
        psql_node 3 -c "CREATE EXTENSION citus"
    fi
    start_node 3
    echo "spare worker running on port $(port_of 3)"
    ;;
spare-destroy)
    as_postgres "$PG_BIN/pg_ctl" -D "$DIR/${NODES[3]}" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "${DIR:?}/${NODES[3]}"
    ;;
crash)
    case "${2:-}" in 1 | 2 | 3) ;; *) echo "usage: $0 crash 1|2|3" >&2; exit 2 ;; esac
    as_postgres "$PG_BIN/pg_ctl" -D "$DIR/${NODES[$2]}" -m immediate -w stop >/dev/null
    ;;
stop)
    for i in 3 2 1 0; do
        as_postgres "$PG_BIN/pg_ctl" -D "$DIR/${NODES[$i]}" -m fast -w stop >/dev/null 2>&1 || true
    done
    ;;
destroy)
    for i in 3 2 1 0; do
        as_postgres "$PG_BIN/pg_ctl" -D "$DIR/${NODES[$i]}" -m immediate -w stop >/dev/null 2>&1 || true
    done
    rm -rf "$DIR"
    ;;
*)
    echo "usage: $0 start|stop|destroy|spare-start|spare-destroy|crash N" >&2
    exit 2
    ;;
esac

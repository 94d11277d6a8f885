#!/usr/bin/env bash
# The benchmark harness: installs the release build, starts a dedicated cluster (port 5498,
# /tmp/ab_bench_pg) and runs bench/bench.py. Arguments are passed to bench.py
# (--seconds, --rounds, --repeat, --sizes, --covariate-users, --sources, --skip-analysis, --skip-hot-path,
# --only "CASE[;CASE...]").
#   --citus: the hot path through a fresh Citus coordinator + 2 workers (scripts/citus-cluster.sh)
#   against bare routed queries, and ab_analyze of 10M results there and on the single node.
#   With --bulk N: ab_record_results of N rows through the coordinator against the bare
#   distributed INSERT ... SELECT instead.
#   --pg 16|18: against that PostgreSQL (scripts/pg-versions.sh) instead of 15.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

args=()
export AB_PG_VERSION=15
while [ $# -gt 0 ]; do
    if [ "$1" = --pg ]; then
        AB_PG_VERSION=${2:?--pg needs a version}
        shift 2
    else
        args+=("$1")
        shift
    fi
done
set -- "${args[@]}"
if [ "$AB_PG_VERSION" = 15 ]; then
    export AB_PGDIR=/tmp/ab_bench_pg PGPORT=5498 PGHOST=/tmp/ab_bench_pg
else
    export AB_PGDIR=/tmp/ab_bench_pg$AB_PG_VERSION PGPORT=56$AB_PG_VERSION PGHOST=/tmp/ab_bench_pg$AB_PG_VERSION
fi

# Other versions and Citus come with the test matrix.
if [ "$AB_PG_VERSION" = 15 ] && [[ " ${args[*]:-} " != *" --citus "* ]]; then scripts/setup.sh; else scripts/setup.sh --all; fi
scripts/install.sh >/dev/null
# psql and pgbench of the same version.
PATH="$(scripts/pg-versions.sh bin "$AB_PG_VERSION"):$PATH"
scripts/cluster.sh start >/dev/null
[ -x target/venv/bin/python ] || python3 -m venv target/venv
target/venv/bin/pip install -q --disable-pip-version-check -r tests/client/requirements.txt
if [ "${AB_BENCH_FRESH:-0}" = 1 ]; then
    psql -X -q -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres -c "DROP DATABASE IF EXISTS ab_bench WITH (FORCE)"
fi
for a in "${args[@]}"; do
    if [ "$a" = --citus ]; then
        AB_CITUS_DIR=/tmp/ab_bench_citus AB_CITUS_PORT=5520 scripts/citus-cluster.sh destroy
        AB_CITUS_DIR=/tmp/ab_bench_citus AB_CITUS_PORT=5520 scripts/citus-cluster.sh start >/dev/null
    fi
done
AB_CITUS_DIR=/tmp/ab_bench_citus AB_CITUS_PORT=5520 target/venv/bin/python bench/bench.py "${args[@]}"

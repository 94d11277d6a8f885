#!/usr/bin/env bash
# The benchmark harness: installs the release build, starts a dedicated cluster (port 5498,
# /tmp/ab_bench_pg) and runs bench/bench.py. Arguments are passed to bench.py
# (--seconds, --rounds, --repeat, --sizes, --covariate-users, --skip-analysis, --skip-hot-path,
# --only "CASE[;CASE...]").
#   --citus: the hot path through a fresh Citus coordinator + 2 workers (scripts/citus-cluster.sh)
#   against bare routed queries, and ab_analyze of 10M results there and on the single node.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export AB_PGDIR=/tmp/ab_bench_pg PGPORT=5498 PGHOST=/tmp/ab_bench_pg

scripts/setup.sh
scripts/install.sh >/dev/null
scripts/cluster.sh start >/dev/null
[ -x target/venv/bin/python ] || python3 -m venv target/venv
target/venv/bin/pip install -q --disable-pip-version-check -r tests/client/requirements.txt
if [ "${AB_BENCH_FRESH:-0}" = 1 ]; then
    psql -X -q -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres -c "DROP DATABASE IF EXISTS ab_bench WITH (FORCE)"
fi
for a in "$@"; do
    if [ "$a" = --citus ]; then
        AB_CITUS_DIR=/tmp/ab_bench_citus AB_CITUS_PORT=5520 scripts/citus-cluster.sh destroy
        AB_CITUS_DIR=/tmp/ab_bench_citus AB_CITUS_PORT=5520 scripts/citus-cluster.sh start >/dev/null
    fi
done
AB_CITUS_DIR=/tmp/ab_bench_citus AB_CITUS_PORT=5520 target/venv/bin/python bench/bench.py "$@"

#!/usr/bin/env bash
# The benchmark harness: installs the release build, starts a dedicated cluster (port 5498,
# /tmp/ab_bench_pg) and runs bench/bench.py. Arguments are passed to bench.py
# (--seconds, --rounds, --repeat, --sizes, --covariate-users, --skip-analysis, --skip-hot-path,
# --only "CASE[;CASE...]").
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
target/venv/bin/python bench/bench.py "$@"

#!/usr/bin/env bash
# Runs the pg_regress suite (tests/pg_regress) against the local cluster of scripts/cluster.sh.
# The extension must be installed first (scripts/test.sh does it).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${AB_PGDIR:-/tmp/ab_testing_pg}
PORT=${PGPORT:-5499}
OUT=target/regress
mkdir -p "$OUT"
chmod 777 "$OUT"
TESTS=(install lifecycle definitions assignment results analysis statistics security hostile hardening dashboards layers)
/usr/lib/postgresql/15/lib/pgxs/src/test/regress/pg_regress \
    --bindir=/usr/lib/postgresql/15/bin \
    --inputdir=tests/pg_regress --outputdir="$OUT" \
    --host="$DIR" --port="$PORT" --user=postgres \
    --dbname=ab_regress "${TESTS[@]}"

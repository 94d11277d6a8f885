#!/usr/bin/env bash
# Runs the pg_regress suite (tests/pg_regress) against the local cluster of scripts/cluster.sh.
# The extension must be installed first (scripts/test.sh does it).
# Environment: AB_PG_VERSION (default 15), AB_PGDIR and PGPORT as for scripts/cluster.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${AB_PG_VERSION:-15}
BIN=$(scripts/pg-versions.sh bin "$VERSION")
if [ "$VERSION" = 15 ]; then DIR=${AB_PGDIR:-/tmp/ab_testing_pg}; else DIR=${AB_PGDIR:-/tmp/ab_testing_pg$VERSION}; fi
PORT=${PGPORT:-5499}
OUT=target/regress${VERSION#15}
mkdir -p "$OUT"
chmod 777 "$OUT"
# AB_REGRESS_TESTS="sources security" runs only those (while working on them).
read -r -a TESTS <<<"${AB_REGRESS_TESTS:-install lifecycle definitions assignment results bulk analysis metrics timeline breakdowns impact funnels adjusted sources trust statistics security hostile hardening dashboards layers rollouts}"
"$(scripts/pg-versions.sh regress "$VERSION")" \
    --bindir="$BIN" \
    --inputdir=tests/pg_regress --outputdir="$OUT" \
    --host="$DIR" --port="$PORT" --user=postgres \
    --dbname=ab_regress "${TESTS[@]}"

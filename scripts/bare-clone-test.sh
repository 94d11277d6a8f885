#!/usr/bin/env bash
# The path of someone who clones the repository with nothing beside it: a clone of HEAD in an
# empty directory runs scripts/demo.sh to the declared winner on PostgreSQL 15 alone (its own
# cluster, port 5497). Builds into this checkout's target directory to reuse its dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$(mktemp -d /tmp/ab_bare.XXXXXX)
trap 'PGPORT=5497 AB_PGDIR=/tmp/ab_bare_pg "$WORK/ab_testing/scripts/cluster.sh" destroy >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
git clone -q "$ROOT" "$WORK/ab_testing"
[ "$(ls -A "$WORK")" = ab_testing ]
out=$(cd "$WORK/ab_testing" && env -u PG_CONFIG -u AB_PG_VERSION -u CITUS_TARBALL CARGO_TARGET_DIR="$ROOT/target" \
    AB_PGDIR=/tmp/ab_bare_pg PGPORT=5497 scripts/demo.sh 2>&1) || { echo "$out" | tail -40; exit 1; }
winner=$(psql -X -At -h /tmp/ab_bare_pg -p 5497 -U postgres -d ab_demo \
    -c "SELECT winner_variant FROM ab_experiment_overview WHERE name = 'Lead Qualification Prompt Test'")
if [ -z "$winner" ]; then
    echo "bare clone: the demo declared no winner" >&2
    echo "$out" | tail -40
    exit 1
fi
echo "bare clone: demo declared the winner \"$winner\" with PostgreSQL 15 alone"

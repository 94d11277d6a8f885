#!/usr/bin/env bash
# Builds and installs ab_testing, starts a local PostgreSQL cluster of its own and runs the
# demo (demo/demo.sql) in a fresh database ab_demo. PostgreSQL 15 from Debian, or the
# installation PG_CONFIG names (15, 16, 17 or 18); nothing else is needed.
# Environment: PG_CONFIG, AB_PGDIR and PGPORT as for scripts/cluster.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
PORT=${PGPORT:-5499}

scripts/setup.sh
scripts/install.sh
scripts/cluster.sh start
DIR=$(scripts/cluster.sh dir)
BIN=$("${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}" --bindir)

PSQL=("$BIN/psql" -X -q -h "$DIR" -p "$PORT" -U postgres)
"${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS ab_demo WITH (FORCE)" -c "CREATE DATABASE ab_demo"
"${PSQL[@]}" -d ab_demo -c "CREATE EXTENSION ab_testing"
"${PSQL[@]}" -d ab_demo -f demo/demo.sql
echo
echo "Explore the demo database: $BIN/psql -h $DIR -p $PORT -U postgres ab_demo"

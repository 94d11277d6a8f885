#!/usr/bin/env bash
# Builds and installs ab_testing, starts a local PostgreSQL 15 cluster of its own and runs
# the demo (demo/demo.sql) in a fresh database ab_demo.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
DIR=${AB_PGDIR:-/tmp/ab_testing_pg}
PORT=${PGPORT:-5499}

scripts/setup.sh
scripts/install.sh
scripts/cluster.sh start

PSQL=(psql -X -q -h "$DIR" -p "$PORT" -U postgres)
"${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS ab_demo WITH (FORCE)" -c "CREATE DATABASE ab_demo"
"${PSQL[@]}" -d ab_demo -c "CREATE EXTENSION ab_testing"
"${PSQL[@]}" -d ab_demo -f demo/demo.sql
echo
echo "Explore the demo database: psql -h $DIR -p $PORT -U postgres ab_demo"

#!/usr/bin/env bash
# Builds the release library and installs it into PostgreSQL 15 with the install scripts of
# every earlier release (sql/releases), so that CREATE EXTENSION ... VERSION and ALTER
# EXTENSION ... UPDATE work from any of them.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
cargo pgrx install --release --pg-config "$PG_CONFIG"
cp sql/releases/ab_testing--*.sql "$("$PG_CONFIG" --sharedir)/extension/"

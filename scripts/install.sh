#!/usr/bin/env bash
# Builds the release library and installs it into PostgreSQL with this version's install
# script, every update script and the install script of 0.1.0 (sql/ab_testing--0.1.0.sql):
# PostgreSQL runs CREATE EXTENSION ... VERSION of any earlier release as 0.1.0's script and
# the update scripts up to that version, and ALTER EXTENSION ... UPDATE from any of them.
# Environment: AB_PG_VERSION (15, 16 or 18: the installations of scripts/setup.sh; default
# 15), or PG_CONFIG for any other installation (its major version is read from it, and must
# agree with AB_PG_VERSION when both are set; `cargo pgrx init --pgNN` must know it).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
if [ -n "${PG_CONFIG:-}" ]; then
    VERSION=$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
    if [ -n "${AB_PG_VERSION:-}" ] && [ "$AB_PG_VERSION" != "$VERSION" ]; then
        echo "install: PG_CONFIG is PostgreSQL $VERSION but AB_PG_VERSION is $AB_PG_VERSION" >&2
        exit 1
    fi
else
    VERSION=${AB_PG_VERSION:-15}
fi
case "$VERSION" in
    15|16|17|18) ;;
    *) echo "install: PostgreSQL $VERSION is not supported (15, 16, 17 or 18)" >&2; exit 1 ;;
esac
PG_CONFIG=${PG_CONFIG:-$(scripts/pg-versions.sh bin "$VERSION")/pg_config}
features=()
[ "$VERSION" = 15 ] || features=(--no-default-features --features "pg$VERSION")
cargo pgrx install --release --pg-config "$PG_CONFIG" "${features[@]}"
EXT="$("$PG_CONFIG" --sharedir)/extension"
CURRENT=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
# Scripts of earlier installs that sql/ no longer has (the full install scripts of other
# releases) would stand in for the update chain.
for f in "$EXT"/ab_testing--*.sql; do
    name=${f##*/}
    [ -e "sql/$name" ] || [ "$name" = "ab_testing--$CURRENT.sql" ] || rm -f "$f"
done
cp sql/ab_testing--0.1.0.sql "$EXT/"

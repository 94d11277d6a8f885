#!/usr/bin/env bash
# Builds Citus 13.2.2 from its source tarball and installs it into the system PostgreSQL 15.
# Skipped when citus.so is already there. Called by scripts/setup.sh --all.
# Environment: CITUS_TARBALL, the path of the tarball (the v13.2.2 source archive of
# https://github.com/citusdata/citus).
set -euo pipefail
cd "$(dirname "$0")/.."

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
PKGLIBDIR=$("$PG_CONFIG" --pkglibdir)
[ -f "$PKGLIBDIR/citus.so" ] && exit 0

TARBALL=${CITUS_TARBALL:-}
if [ -z "$TARBALL" ] || [ ! -f "$TARBALL" ]; then
    echo "citus-build: set CITUS_TARBALL to the Citus 13.2.2 source tarball" \
         "(https://github.com/citusdata/citus/archive/refs/tags/v13.2.2.tar.gz)${TARBALL:+; $TARBALL not found}" >&2
    exit 1
fi

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
"$(dirname "$0")/apt-install.sh" libkrb5-dev libcurl4-openssl-dev liblz4-dev libzstd-dev libselinux1-dev libxslt1-dev \
         libpam0g-dev libreadline-dev make gcc

BUILD=$(mktemp -d /tmp/citus-build.XXXXXX)
trap 'rm -rf "$BUILD"' EXIT
tar xzf "$TARBALL" -C "$BUILD"
SRC=$(echo "$BUILD"/citus-*)

# PostgreSQL 15.20 exports have_createdb_privilege(); Citus's PG15 shim declares a static
# function of the same name. Give the shim its own name (PG16+ maps it to the real one).
COMPAT="$SRC/src/include/pg_version_compat.h"
if grep -q '^have_createdb_privilege(void)' "$COMPAT"; then
    sed -i 's/^have_createdb_privilege(void)/citus_compat_have_createdb_privilege(void)/' "$COMPAT"
    sed -i 's/^#define have_createdb_privilege() have_createdb_privilege()/#define citus_compat_have_createdb_privilege() have_createdb_privilege()/' "$COMPAT"
    sed -i 's/!have_createdb_privilege()/!citus_compat_have_createdb_privilege()/' \
        "$SRC/src/backend/distributed/commands/serialize_distributed_ddls.c"
fi

echo "citus-build: building $(basename "$SRC") (a few minutes)"
(
    cd "$SRC"
    ./configure PG_CONFIG="$PG_CONFIG" >"$BUILD/configure.log" 2>&1 || { tail -30 "$BUILD/configure.log"; exit 1; }
    make -j"$(nproc)" >"$BUILD/make.log" 2>&1 || { grep -m20 -B2 -A5 'error' "$BUILD/make.log"; exit 1; }
    $SUDO make install >"$BUILD/install.log" 2>&1 || { tail -30 "$BUILD/install.log"; exit 1; }
)
echo "citus-build: installed $(ls "$PKGLIBDIR"/citus*.so | xargs -n1 basename | tr '\n' ' ')"

#!/usr/bin/env bash
# Builds a Debian package of the extension per PostgreSQL major version, from `cargo pgrx
# package`: dist/postgresql-<major>-ab-testing_<version>_<arch>.deb, with the library, the
# control file, this version's install script, every update script and 0.1.0's install script
# (PostgreSQL installs any earlier release from it and the update scripts; ALTER EXTENSION
# ab_testing UPDATE follows them from any release). Files go
# where Debian's (and the PGDG's) postgresql-<major> packages look for them:
# /usr/lib/postgresql/<major>/lib and /usr/share/postgresql/<major>/extension.
#   scripts/package.sh            # 15, 16 and 18 (the installations of scripts/setup.sh)
#   scripts/package.sh 15         # one version
#   PG_CONFIG=/path/pg_config scripts/package.sh   # any other installation
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
ARCH=$(dpkg --print-architecture)
mkdir -p dist

build() {  # build <pg_config>
    local pg_config=$1 major features=() out root name deb
    major=$("$pg_config" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
    [ "$major" = 15 ] || features=(--no-default-features --features "pg$major")
    out=target/release/ab_testing-pg$major
    rm -rf "$out"
    cargo pgrx package --pg-config "$pg_config" "${features[@]}" >/dev/null
    name=postgresql-$major-ab-testing
    root=target/deb/$name
    rm -rf "$root"
    mkdir -p "$root/DEBIAN" "$root/usr/lib/postgresql/$major/lib" "$root/usr/share/postgresql/$major/extension" \
        "$root/usr/share/doc/$name/docs"
    install -m 644 "$out$("$pg_config" --pkglibdir)/ab_testing.so" "$root/usr/lib/postgresql/$major/lib/"
    strip --strip-unneeded "$root/usr/lib/postgresql/$major/lib/ab_testing.so"
    install -m 644 "$out$("$pg_config" --sharedir)"/extension/ab_testing* sql/ab_testing--0.1.0.sql \
        "$root/usr/share/postgresql/$major/extension/"
    install -m 644 LICENSE "$root/usr/share/doc/$name/copyright"
    install -m 644 CHANGELOG.md README.md "$root/usr/share/doc/$name/"
    install -m 644 docs/*.md docs/*.png "$root/usr/share/doc/$name/docs/"   # the README's links
    cat > "$root/DEBIAN/control" <<CONTROL
Package: $name
Version: $VERSION
Architecture: $ARCH
Maintainer: ab_testing maintainers <maintainers@ab-testing.invalid>
Depends: postgresql-$major, libc6
Section: database
Priority: optional
Installed-Size: $(du -sk "$root/usr" | cut -f1)
Description: A/B testing inside PostgreSQL $major
 Experiment definitions, deterministic variant assignment, result recording and
 statistical analysis as SQL functions. After installing: CREATE EXTENSION ab_testing;
 (as a superuser, in each database), or ALTER EXTENSION ab_testing UPDATE; to update.
CONTROL
    deb=dist/${name}_${VERSION}_${ARCH}.deb
    dpkg-deb --build --root-owner-group "$root" "$deb" >/dev/null
    echo "$deb"
}

if [ -n "${PG_CONFIG:-}" ]; then
    build "$PG_CONFIG"
else
    for V in ${*:-15 16 18}; do
        build "$(scripts/pg-versions.sh bin "$V")/pg_config"
    done
fi

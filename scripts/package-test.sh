#!/usr/bin/env bash
# The Debian package for PostgreSQL 15, as a DBA uses it: dpkg -i into the system, CREATE
# EXTENSION and the README's Quick start in a fresh cluster, an update from 0.1.0, then dpkg -r
# and a check that nothing of it is left. Afterwards the development install
# (scripts/install.sh) is put back, since the package's files replaced it.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export AB_PGDIR=/tmp/ab_testing_pkg PGPORT=5530
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h "$AB_PGDIR" -p "$PGPORT" -U postgres)
LIB=/usr/lib/postgresql/15/lib/ab_testing.so
EXT=/usr/share/postgresql/15/extension

deb=$(scripts/package.sh 15 | tail -1)
echo "package-test: $deb"
$SUDO dpkg -i "$deb" >/dev/null
dpkg-query -W -f='${Status} ${Version}\n' postgresql-15-ab-testing | grep -q "install ok installed"
dpkg -L postgresql-15-ab-testing | grep -qx "$LIB"
# The README's links resolve in the package's doc directory too.
dpkg -L postgresql-15-ab-testing | grep -qx /usr/share/doc/postgresql-15-ab-testing/docs/guide.md
# What PostgreSQL needs for any release: this version's and 0.1.0's install scripts and the chain.
full=$(dpkg -L postgresql-15-ab-testing | grep -E '/ab_testing--[0-9.]+\.sql$' | sed 's#.*/##' | sort | tr '\n' ' ')
[ "$full" = "ab_testing--0.1.0.sql ab_testing--$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1).sql " ] \
    || { echo "package-test: full install scripts in the package: $full" >&2; exit 1; }

scripts/cluster.sh destroy >/dev/null 2>&1 || true
scripts/cluster.sh start >/dev/null
"${PSQL[@]}" -d postgres -c "CREATE DATABASE pkg" -c "CREATE DATABASE pkg_old"
"${PSQL[@]}" -d pkg -c "CREATE EXTENSION ab_testing"
# The README's Quick start, as written there.
python3 - README.md > /tmp/ab_testing_pkg/quickstart.sql <<'PY'
import re, sys
text = open(sys.argv[1]).read()
print(re.search(r"## Quick start\n.*?```sql\n(.*?)```", text, re.S).group(1))
PY
"${PSQL[@]}" -d pkg -f /tmp/ab_testing_pkg/quickstart.sql >/dev/null
winner=$("${PSQL[@]}" -d pkg -At -c "SELECT winner_variant FROM ab_experiments")
[ "$winner" = Treatment ] || { echo "package-test: the Quick start declared '$winner', not Treatment" >&2; exit 1; }
"${PSQL[@]}" -d pkg_old -c "CREATE EXTENSION ab_testing VERSION '0.1.0'" -c "ALTER EXTENSION ab_testing UPDATE"
version=$("${PSQL[@]}" -d pkg_old -At -c "SELECT extversion FROM pg_extension WHERE extname = 'ab_testing'")
[ "$version" = "$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)" ] \
    || { echo "package-test: updated to $version" >&2; exit 1; }
scripts/cluster.sh stop >/dev/null

$SUDO dpkg -r postgresql-15-ab-testing >/dev/null
if dpkg-query -W -f='${Status}' postgresql-15-ab-testing 2>/dev/null | grep -q "ok installed"; then
    echo "package-test: still installed after dpkg -r" >&2; exit 1
fi
if [ -e "$LIB" ] || ls "$EXT"/ab_testing* >/dev/null 2>&1; then
    echo "package-test: files left after dpkg -r: $(ls $LIB $EXT/ab_testing* 2>/dev/null)" >&2; exit 1
fi
scripts/cluster.sh start >/dev/null
if out=$("${PSQL[@]}" -d postgres -c "CREATE DATABASE gone" -c "\c gone" -c "CREATE EXTENSION ab_testing" 2>&1); then
    echo "package-test: CREATE EXTENSION worked after removal" >&2; exit 1
fi
grep -q 'extension "ab_testing" is not available\|could not open extension control file' <<<"$out" \
    || { echo "package-test: unexpected error after removal: $out" >&2; exit 1; }
scripts/cluster.sh destroy >/dev/null
echo "package-test: installed, Quick start and update from 0.1.0 passed, removed cleanly"

scripts/install.sh >/dev/null

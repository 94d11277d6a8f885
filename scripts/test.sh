#!/usr/bin/env bash
# Runs the whole test suite on a fresh or prepared machine:
#   1. ab_core and the gateway: unit tests and agreement with scipy (no database)
#   on each of PostgreSQL 15, 16 and 18 (AB_TEST_VERSIONS="15" narrows it):
#   2. #[pg_test]s inside a PostgreSQL backend (cargo pgrx test)
#   3. pg_regress: the SQL surface and every error path (tests/pg_regress)
#   4. client tests through psycopg: full flow, racing sessions, cross-session caching,
#      dump/restore, upgrades, crash recovery, the Python examples, the REST gateway with
#      the curl Quick Start, its results pages in headless Chromium, and every code block of
#      the README and docs/ (tests/client/test_readme.py)
#   5. the Node example with the pg driver
#   6. Citus: the flow, cache and concurrency client tests and the Citus-only tests against
#      a coordinator + 2 workers started here (scripts/citus-cluster.sh)
#   7. a clone with nothing beside it runs the demo on PostgreSQL 15 alone (scripts/bare-clone-test.sh)
#   8. the Debian package for 15: dpkg -i, the Quick start, dpkg -r (scripts/package-test.sh)
# (and, after step 1, the documentation built as a book with MkDocs)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/setup.sh --all
# Headless Chromium: the results pages are tested in a real browser.
command -v chromium >/dev/null || scripts/apt-install.sh chromium
# pg_cron for 15: the guide's schedule for bandit reweighting is run as written.
scripts/apt-install.sh postgresql-15-cron

echo "== ab_core: unit tests and scipy reference values; the gateway's unit tests"
cargo test -p ab_core
cargo test -p ab_gateway
cargo build -p ab_gateway

[ -x target/venv/bin/python ] || python3 -m venv target/venv
target/venv/bin/pip install -q --disable-pip-version-check -r tests/client/requirements.txt -r docs/requirements.txt

echo "== The documentation, built as a book (MkDocs; broken links and anchors fail it)"
target/venv/bin/mkdocs build --strict --quiet --site-dir target/site

# Each supported PostgreSQL: its #[pg_test]s, pg_regress and the whole client suite against
# a cluster of that version (15: Debian's; 16 and 18: scripts/pg-versions.sh).
for V in ${AB_TEST_VERSIONS:-15 16 18}; do
    case $V in 15) PORT=5499 ;; *) PORT=55$V ;; esac
    BIN=$(scripts/pg-versions.sh bin "$V")

    echo "== PostgreSQL $V: #[pg_test] (cargo pgrx test)"
    PGRX_TEST_DIR=/tmp/ab_testing_pgrx_test$V
    rm -rf "$PGRX_TEST_DIR"
    mkdir -p "$PGRX_TEST_DIR"
    chown postgres:postgres "$PGRX_TEST_DIR"
    cargo pgrx test "pg$V" --runas postgres --pgdata "$PGRX_TEST_DIR/data"

    echo "== PostgreSQL $V: install the release build and start a local cluster"
    # By its pg_config alone, as for any installation (the version is read from it).
    PG_CONFIG=$(scripts/pg-versions.sh bin "$V")/pg_config scripts/install.sh
    AB_PG_VERSION=$V PGPORT=$PORT scripts/cluster.sh start

    echo "== PostgreSQL $V: pg_regress"
    if ! AB_PG_VERSION=$V PGPORT=$PORT scripts/regress.sh; then
        cat "target/regress${V#15}/regression.diffs" 2>/dev/null | head -200
        exit 1
    fi

    echo "== PostgreSQL $V: client tests (psycopg)"
    AB_PG_VERSION=$V PGPORT=$PORT PGHOST=$(AB_PG_VERSION=$V scripts/cluster.sh dir) PATH="$BIN:$PATH" \
        target/venv/bin/python -m pytest -q tests/client
done

echo "== Node example (pg driver)"
(cd examples/node && npm install --no-audit --no-fund --no-package-lock --silent && node --test)

echo "== Citus: coordinator + 2 workers on loopback"
scripts/citus-cluster.sh destroy
scripts/citus-cluster.sh start
# AB_SINGLE_NODE_DSN: the PostgreSQL 15 cluster above, to compare every answer with.
AB_CITUS=1 PGHOST=/tmp/ab_testing_citus PGPORT=5510 AB_CITUS_WORKERS=5511,5512 \
    AB_SINGLE_NODE_DSN="host=/tmp/ab_testing_pg port=5499 user=postgres dbname=postgres" \
    target/venv/bin/python -m pytest -q tests/client
scripts/citus-cluster.sh destroy

echo "== A bare clone: the demo with nothing beside it, PostgreSQL 15 alone"
scripts/bare-clone-test.sh

echo "== Debian package (PostgreSQL 15)"
scripts/package-test.sh

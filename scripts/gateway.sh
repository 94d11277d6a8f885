#!/usr/bin/env bash
# Serves the REST API (ab-gateway) over a database of the local cluster, for curl users:
#   scripts/gateway.sh                      # database ab_gateway, http://127.0.0.1:8000
#   examples/curl/quickstart.sh             # in another shell; the results pages: http://127.0.0.1:8000/
# Builds and installs what is missing first (as scripts/demo.sh does). The database is made on
# first use with the extension and a role ab_gateway holding ab_grant_admin, which the gateway
# logs in as. Environment: AB_GATEWAY_DB (default ab_gateway), AB_GATEWAY_LISTEN
# (default 127.0.0.1:8000), AB_PGDIR and PGPORT as for scripts/cluster.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
DIR=${AB_PGDIR:-/tmp/ab_testing_pg}
PORT=${PGPORT:-5499}
DB=${AB_GATEWAY_DB:-ab_gateway}

scripts/setup.sh
[ -f "$(/usr/lib/postgresql/15/bin/pg_config --sharedir)/extension/ab_testing.control" ] || scripts/install.sh
scripts/cluster.sh start
cargo build --release -p ab_gateway

PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h "$DIR" -p "$PORT" -U postgres)
if [ -z "$("${PSQL[@]}" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" ]; then
    "${PSQL[@]}" -d postgres -c "CREATE DATABASE \"$DB\""
    "${PSQL[@]}" -d "$DB" -c "CREATE EXTENSION ab_testing"
fi
"${PSQL[@]}" -d "$DB" -c "DO \$\$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ab_gateway') THEN CREATE ROLE ab_gateway LOGIN; END IF; END \$\$" \
    -c "SELECT ab_grant_admin('ab_gateway')" >/dev/null

export AB_GATEWAY_DATABASE_URL="host=$DIR port=$PORT dbname=$DB user=ab_gateway"
export AB_GATEWAY_LISTEN=${AB_GATEWAY_LISTEN:-127.0.0.1:8000}
exec target/release/ab-gateway

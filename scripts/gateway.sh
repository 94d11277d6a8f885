#!/usr/bin/env bash
# Serves the REST API (ab-gateway) over a database of the local cluster, for curl users:
#   scripts/gateway.sh                      # database ab_gateway, http://127.0.0.1:8000
#   examples/curl/quickstart.sh             # in another shell; the results pages: http://127.0.0.1:8000/
# Builds and installs what is missing first (as scripts/demo.sh does). The database is made on
# first use with the extension. The gateway logs in as ab_gateway, a NOINHERIT role with no
# rights of its own, a member of ab_gateway_app (ab_grant_app), ab_gateway_analyst
# (ab_grant_analyst) and ab_gateway_admin (ab_grant_admin); each request switches to the role of
# its token. Tokens, one per role, are generated on first use into target/gateway/tokens
# (readable by its owner only; AB_GATEWAY_TOKENS_FILE to use another file), and the script
# prints where they are. Environment: AB_GATEWAY_DB (default ab_gateway), AB_GATEWAY_LISTEN
# (default 127.0.0.1:8000), PG_CONFIG, AB_PGDIR and PGPORT as for scripts/cluster.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
PORT=${PGPORT:-5499}
DB=${AB_GATEWAY_DB:-ab_gateway}

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
scripts/setup.sh
[ -f "$("$PG_CONFIG" --sharedir)/extension/ab_testing.control" ] || scripts/install.sh
scripts/cluster.sh start
DIR=$(scripts/cluster.sh dir)
cargo build --release -p ab_gateway

PSQL=("$("$PG_CONFIG" --bindir)/psql" -X -q -v ON_ERROR_STOP=1 -h "$DIR" -p "$PORT" -U postgres)
if [ -z "$("${PSQL[@]}" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" ]; then
    "${PSQL[@]}" -d postgres -c "CREATE DATABASE \"$DB\""
    "${PSQL[@]}" -d "$DB" -c "CREATE EXTENSION ab_testing"
fi
"${PSQL[@]}" -d "$DB" >/dev/null <<'SQL'
DO $$
DECLARE r text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ab_gateway') THEN
        CREATE ROLE ab_gateway LOGIN NOINHERIT;
    END IF;
    ALTER ROLE ab_gateway NOINHERIT;
    FOREACH r IN ARRAY ARRAY['ab_gateway_app', 'ab_gateway_analyst', 'ab_gateway_admin'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END $$;
-- Before 0.12.0 the gateway's login role held the administrator's rights itself.
SELECT ab_revoke_admin('ab_gateway');
SELECT ab_grant_app('ab_gateway_app'), ab_grant_analyst('ab_gateway_analyst'), ab_grant_admin('ab_gateway_admin');
SET client_min_messages = error;
-- Granted anew after NOINHERIT, so that on 16 and later the memberships do not inherit either.
REVOKE ab_gateway_app, ab_gateway_analyst, ab_gateway_admin FROM ab_gateway;
GRANT ab_gateway_app, ab_gateway_analyst, ab_gateway_admin TO ab_gateway;
SQL

TOKENS=${AB_GATEWAY_TOKENS_FILE:-target/gateway/tokens}
if [ ! -s "$TOKENS" ]; then
    mkdir -p "$(dirname "$TOKENS")"
    (
        umask 077
        for role in ab_gateway_app ab_gateway_analyst ab_gateway_admin; do
            echo "$role $(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
        done >"$TOKENS"
    )
fi
echo "gateway.sh: tokens (application, analyst, administrator) in $TOKENS; open" \
     "http://${AB_GATEWAY_LISTEN:-127.0.0.1:8000}/login with the analyst's to see the results" >&2

export AB_GATEWAY_DATABASE_URL="host=$DIR port=$PORT dbname=$DB user=ab_gateway"
export AB_GATEWAY_LISTEN=${AB_GATEWAY_LISTEN:-127.0.0.1:8000}
export AB_GATEWAY_TOKENS_FILE=$TOKENS
exec target/release/ab-gateway

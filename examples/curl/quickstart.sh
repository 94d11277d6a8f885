#!/usr/bin/env bash
# The Quick Start of the original REST API, with curl against ab-gateway: create an
# experiment, start it, send users through it, record their results, analyse it, read the
# summary and stop it with a winner. Needs only bash and curl. Every request carries an
# administrator's token (creating and stopping experiments needs one); by default the one
# scripts/gateway.sh wrote for the role ab_gateway_admin.
#
#   API=http://127.0.0.1:8000/api/v1/experiments TOKEN=... examples/curl/quickstart.sh
set -euo pipefail
API=${API:-http://127.0.0.1:8000/api/v1/experiments}
TOKENS_FILE=${AB_GATEWAY_TOKENS_FILE:-$(dirname "$0")/../../target/gateway/tokens}
TOKEN=${TOKEN:-$(awk '$1 == "ab_gateway_admin" {print $2}' "$TOKENS_FILE")}
USERS=${USERS:-400}
RANDOM=42  # the same simulated outcomes on every run (and the fixed salt below: the same arms)
# The token goes in a header read from standard input, so that it never shows in `ps`.
curl() { printf 'Authorization: Bearer %s\n' "$TOKEN" | command curl -H @- "$@"; }
post() { curl -fsS -X POST -H 'Content-Type: application/json' "$@"; }

name="Lead%20Qualification%20Prompt%20Test"
echo "0. Remove the experiment an earlier run left (errors mean there was none)"
curl -sS -o /dev/null -X POST "$API/$name/stop" || true
curl -sS -o /dev/null -X DELETE "$API/$name" || true

echo "1. Create the experiment"
created=$(post "$API/" -d '{
  "name": "Lead Qualification Prompt Test",
  "description": "Testing new prompt with examples",
  "experiment_type": "prompt",
  "primary_metric": "resolution_rate",
  "variants": [
    {"name": "Control", "is_control": true, "traffic_allocation": 50.0,
     "config": {"system_prompt": "Current prompt..."}},
    {"name": "Treatment", "is_control": false, "traffic_allocation": 50.0,
     "config": {"system_prompt": "New prompt with examples..."}}
  ],
  "min_sample_size": 100,
  "salt": "curl-quick-start"
}')
id=$(grep -o '"id": *[0-9]*' <<<"$created" | head -1 | grep -o '[0-9]*$')
echo "   id $id"

echo "2. Start it"
post "$API/$id/start"; echo

echo "3. Get a user's variant"
post "$API/get-variant" -d "{\"experiment_id\": $id, \"user_id\": \"user_123\", \"user_attributes\": {\"loan_type\": \"conventional\"}}"
echo

echo "4. Record a result"
post "$API/record-result" -d "{\"experiment_id\": $id, \"user_id\": \"user_123\", \"metric_name\": \"resolution_rate\", \"metric_value\": 0.85}"
echo

echo "5. Simulate $USERS users (the treatment resolves more conversations)"
for i in $(seq 1 "$USERS"); do
    variant=$(post "$API/get-variant" -d "{\"experiment_id\": $id, \"user_id\": \"sim_$i\"}" | grep -o '"variant": *"[^"]*"')
    if [[ $variant == *Treatment* ]]; then rate=65; else rate=45; fi
    resolved=$(( RANDOM % 100 < rate ? 1 : 0 ))
    post "$API/record-result" -o /dev/null \
        -d "{\"experiment_id\": $id, \"user_id\": \"sim_$i\", \"metric_name\": \"resolution_rate\", \"metric_value\": $resolved}"
done

echo "6. Analyse"
curl -fsS "$API/$id/analyze"; echo

echo "7. Summary"
curl -fsS "$API/$id/summary"; echo

echo "8. Stop and declare the winner"
post "$API/$id/stop?declare_winner=true"; echo

echo "9. The experiment now"
curl -fsS "$API/$id"; echo

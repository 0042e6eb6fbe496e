#!/usr/bin/env bash
# The API calls behind each audit-console page, timed against a running annal serve
# (auth off), median of three: the figures in docs/console.md, "Measured". Build the
# store with `cargo run --release -p annal-cli --example audit_store -- PATH N`, serve it
# with a release `annal serve --data DIR --listen 127.0.0.1:PORT`, then:
# scripts/console-timings.sh http://127.0.0.1:PORT
set -euo pipefail
base="${1:?usage: console-timings.sh BASE_URL}"

median_ms() {
  local url="$1" times=()
  for _ in 1 2 3; do
    times+=("$(curl -s -o /dev/null -w '%{time_total}' "$url")")
  done
  printf '%s\n' "${times[@]}" | sort -n | sed -n 2p | awk '{printf "%.0f", $1 * 1000}'
}

row() {
  local label="$1"; shift
  local out=()
  for path in "$@"; do out+=("$(median_ms "$base$path") ms"); done
  local IFS=', '
  echo "| $label | ${out[*]} |"
}

json() { curl -s "$base$1"; }
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

head=$(json /v1/head | field 'd["position"]')
lock=$(json '/v1/events?event_type=PortalAccessLocked&limit=1' | field 'd["events"][0]["event_id"]')
lockpos=$(json "/v1/events/$lock" | field 'd["position"]')
cause=$(json "/v1/events/$lock" | field 'd["causation_id"]')
newest=$((head - 50))

echo "head $head"
row "overview" /v1/overview /v1/digest /v1/checkpoints /v1/persistent-subscriptions
row "events, first and newest page; head" "/v1/events?after_position=0&limit=50" "/v1/events?after_position=$newest&limit=50" /v1/head
row "events by type (q1, q2, q3)" "/v1/events?event_type=FamilyEnrolled&limit=50" "/v1/events?event_type=PaymentOverdue&limit=50" "/v1/events?event_type=PortalAccessLocked&limit=50"
row "event detail (q3): event, previous, effects, aggregate" "/v1/events/$lock" "/v1/events?after_position=$((lockpos - 2))&limit=1" "/v1/events?causation_id=$lock&limit=100" "/v1/streams/family_456?from_version=1&limit=1000"
row "its cause (q3)" "/v1/events/$cause" "/v1/events?causation_id=$cause&limit=100"
row "aggregate timeline (q1, q4)" "/v1/streams/family_123?from_version=1&limit=1000"
row "correlation graph (q3)" "/v1/events?correlation_id=billing_run_2024_10&after_position=0&limit=1000"
row "prefix: family_4, member_0000123, member_ (wide)" "/v1/events?aggregate_id_prefix=family_4&limit=50" "/v1/events?aggregate_id_prefix=member_0000123&limit=50" "/v1/events?aggregate_id_prefix=member_&limit=50"
row "audit portal-access: counts, first 500" "/v1/events/counts?user_id=portal-access" "/v1/events?user_id=portal-access&after_position=0&limit=500"
row "audit sarah (2M events): counts, first 500" "/v1/events/counts?user_id=sarah" "/v1/events?user_id=sarah&after_position=0&limit=500"
row "audit sarah, one day: counts" "/v1/events/counts?user_id=sarah&since=$(date -u +%Y-%m-%d)"
row "principal loader (every member event): counts, first 50" "/v1/events/counts?principal=loader" "/v1/events?principal=loader&limit=50"
row "principal nobody wrote with (reads the log)" "/v1/events?principal=nobody&limit=50"

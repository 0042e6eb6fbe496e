#!/usr/bin/env bash
# The seed's co-op story told through the annal command: the Martinez family enrols and
# adds Sofia, pays in September; then who did what and when, everything the enrolment
# tied together, and the hash chain checked. Each step is a line for people, not JSON.
# Usage: scripts/quickstart.sh [STORE_URL]
#   STORE_URL: default a new store in a temporary folder (kept, named at the end), so the
#   story can be told any number of times; a store that already holds family_123 is
#   refused by annal (the enrolment expects no such family).
#   ANNAL_BIN=path/to/annal to use a given binary (default: build target/release/annal).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${1:-}" ]; then
  store="$1"
else
  store="sqlite:$(mktemp -d "${TMPDIR:-/tmp}/annal-quickstart.XXXXXX")/annal.db"
fi
if [ -z "${ANNAL_BIN:-}" ]; then
  cargo build --release --quiet -p annal-cli
  ANNAL_BIN="$PWD/target/release/annal"
fi
annal() { "$ANNAL_BIN" "$@" --store "$store"; }

# One line per append result: where it landed and the family's new version.
stored() {
  local line
  while IFS= read -r line; do
    if [[ $line =~ \"aggregate_version\":([0-9]+),\"first_position\":([0-9]+),\"last_position\":([0-9]+) ]]; then
      local at="positions ${BASH_REMATCH[2]}-${BASH_REMATCH[3]}"
      [ "${BASH_REMATCH[2]}" = "${BASH_REMATCH[3]}" ] && at="position ${BASH_REMATCH[2]}"
      echo "   stored at $at; family_123 is now at version ${BASH_REMATCH[1]}"
    else
      echo "   $line"
    fi
  done
}

echo "1. Sarah enrols the Martinez family and adds Sofia, as one action (enrollment_abc123)"
annal append <<'JSON' | stored
{"aggregate_type":"Family","aggregate_id":"family_123","expected_version":"no_stream","user_id":"sarah","correlation_id":"enrollment_abc123","events":[{"event_type":"FamilyEnrolled","data":{"family_id":"family_123","family_name":"Martinez Family","enrollment_date":"2024-09-01","parent_name":"Maria Martinez","children_count":2}},{"event_type":"ChildAdded","data":{"child_name":"Sofia Martinez","age":8,"grade":3},"metadata":{"occurred_at":"2024-09-01T00:00:00Z"}}]}
JSON

echo
echo "2. The family pays 450 by credit card on 15 September (payment_xyz789)"
annal append <<'JSON' | stored
{"aggregate_type":"Family","aggregate_id":"family_123","expected_version":2,"user_id":"system","correlation_id":"payment_xyz789","events":[{"event_type":"PaymentReceived","event_version":2,"data":{"amount":450,"date":"2024-09-15","method":"credit_card"}}]}
JSON

echo
echo "3. Who changed family_123, when (recorded, and the date the event speaks of), and how"
annal audit family_123

echo
echo "4. Everything the enrolment tied together"
annal correlated enrollment_abc123

echo
echo "5. The hash chain, checked from the first event to the last"
report=$(annal verify)
if [[ $report =~ \"ok\":true,\"checked\":([0-9]+) ]]; then
  echo "   intact: ${BASH_REMATCH[1]} events, each linked to the one before"
else
  echo "   $report"
  exit 1
fi

echo
echo "The store is $store. Read it yourself:"
echo "   annal read --aggregate family_123 --store $store"
echo "   annal audit family_123 --store $store"

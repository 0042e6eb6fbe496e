#!/usr/bin/env bash
# The seed's co-op story on the embedded store: append the Martinez family's events,
# read them back, ask who did what, and verify the hash chain.
# Usage: scripts/quickstart.sh [STORE_URL]   (default sqlite:./annal-data/annal.db)
set -euo pipefail
cd "$(dirname "$0")/.."
store="${1:-sqlite:./annal-data/annal.db}"
cargo build --release --quiet -p annal-cli
annal=target/release/annal

echo "== appending to $store"
family="family_$(date +%s)"
"$annal" append --store "$store" <<JSON
{"aggregate_type":"Family","aggregate_id":"$family","expected_version":"no_stream","user_id":"sarah","correlation_id":"enrollment_abc123","events":[{"event_type":"FamilyEnrolled","data":{"family_id":"$family","family_name":"Martinez Family","enrollment_date":"2024-09-01","parent_name":"Maria Martinez","children_count":2}},{"event_type":"ChildAdded","data":{"child":{"child_name":"Sofia Martinez","age":8,"grade":3}}}]}
{"aggregate_type":"Family","aggregate_id":"$family","expected_version":2,"user_id":"system","correlation_id":"payment_xyz789","events":[{"event_type":"PaymentReceived","event_version":2,"data":{"amount":450,"date":"2024-09-15","method":"credit_card"}}]}
JSON

echo "== the family's events, in order"
"$annal" read --store "$store" --aggregate "$family"

echo "== everything the enrolment tied together"
"$annal" read --store "$store" --correlation-id enrollment_abc123 --limit 10

echo "== verifying the hash chain"
"$annal" verify --store "$store"

#!/usr/bin/env bash
# Property-based tests of the admin API against its own OpenAPI document, with Schemathesis.
#
# Usage: tests/schemathesis/run.sh TOLLGATE_BIN FAKE_UPSTREAM_BIN
#
# Builds nothing: give it the built `tollgate` and `fake-upstream` binaries. In a temp dir it
# writes a gateway config (both providers pointed at fake-upstream, the admin listener and the
# proxy on free loopback ports, the SQLite store in the temp dir), starts fake-upstream and
# `tollgate serve`, seeds some traffic through the proxy (chat completions and a Gemini call
# from a few users with JWTs minted by `tollgate token`, one user blocked and one with limit
# overrides) so the endpoints return real data, mints an admin JWT, fetches
# http://127.0.0.1:PORT/api/admin/openapi.json with it and runs Schemathesis with that document
# against the live admin listener, the JWT being the credentials of the document's `bearer`
# scheme (schemathesis.toml beside this script). A bounded number of cases (about a minute).
# Exits non-zero when Schemathesis finds any failure; stops every process it started.
#
# Environment:
#   SCHEMATHESIS               the schemathesis executable (default: `schemathesis` on PATH)
#   SCHEMATHESIS_MAX_EXAMPLES  test cases per operation and phase (default 100)
#   SCHEMATHESIS_SEED          the random seed (default fixed, so that CI runs are reproducible;
#                              set another, or "random", to explore further)
#   SCHEMATHESIS_CHECKS, SCHEMATHESIS_EXCLUDE_CHECKS
#                              override the checks run (see below for the defaults and why)
#   SCHEMATHESIS_KEEP          1 = keep the temp dir (config, logs, VCR and JUnit reports)
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 TOLLGATE_BIN FAKE_UPSTREAM_BIN" >&2
  exit 2
fi
HERE=$(cd "$(dirname "$0")" && pwd)
TOLLGATE=$(realpath "$1")
FAKE=$(realpath "$2")
for bin in "$TOLLGATE" "$FAKE"; do
  [ -x "$bin" ] || { echo "error: $bin is not an executable (build it first)" >&2; exit 2; }
done
SCHEMATHESIS=${SCHEMATHESIS:-schemathesis}
[[ $SCHEMATHESIS != */* ]] || SCHEMATHESIS=$(realpath "$SCHEMATHESIS")
command -v "$SCHEMATHESIS" >/dev/null ||
  { echo "error: $SCHEMATHESIS not found (pip install -r tests/schemathesis/requirements.txt)" >&2; exit 2; }
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-100}
SEED=${SCHEMATHESIS_SEED:-20250601}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-schemathesis.XXXXXX")
PIDS=()
cleanup() {
  local status=$?
  # SIGTERM each process this script started (tollgate first: it drains, then flushes), then
  # wait for it; SIGKILL whatever is still there after 20 s.
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    local pid=${PIDS[i]}
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 200); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  if [ "$status" -ne 0 ]; then
    for log in "$WORK"/*.log; do
      [ -s "$log" ] || continue
      echo "--- last lines of $(basename "$log")" >&2
      tail -n 30 "$log" >&2
    done
  fi
  if [ "${SCHEMATHESIS_KEEP:-0}" = 1 ]; then
    echo "kept $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Wait until `curl URL` answers 200, or fail after 30 s (or when process $2 died).
wait_for() {
  local url=$1 pid=$2
  for _ in $(seq 300); do
    if curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; then
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || { echo "error: the process serving $url exited" >&2; return 1; }
    sleep 0.1
  done
  echo "error: $url did not answer within 30 s" >&2
  return 1
}

# === fake-upstream ===

OPENAI_KEY=sk-schemathesis-openai-0123456789
GEMINI_KEY=AIza-schemathesis-gemini-0123456789
FAKE_EXPECT_OPENAI_KEY=$OPENAI_KEY FAKE_EXPECT_GEMINI_KEY=$GEMINI_KEY \
  "$FAKE" --listen 127.0.0.1:0 --chunks 8 >"$WORK/fake.out" 2>"$WORK/fake.log" &
PIDS+=($!)
FAKE_ADDR=
for _ in $(seq 300); do
  FAKE_ADDR=$(sed -n 's/^listening on //p' "$WORK/fake.out")
  [ -n "$FAKE_ADDR" ] && break
  kill -0 "${PIDS[0]}" 2>/dev/null || { echo "error: fake-upstream exited" >&2; exit 1; }
  sleep 0.1
done
[ -n "$FAKE_ADDR" ] || { echo "error: fake-upstream did not start" >&2; exit 1; }

# === tollgate ===

PROXY_PORT=$(free_port)
ADMIN_PORT=$(free_port)
while [ "$ADMIN_PORT" = "$PROXY_PORT" ]; do ADMIN_PORT=$(free_port); done
CONFIG=$WORK/gateway.toml
cat >"$CONFIG" <<EOF
[server]
listen = "127.0.0.1:$PROXY_PORT"
watch_config = false

[admin]
listen = "127.0.0.1:$ADMIN_PORT"

[store]
path = "$WORK/tollgate.db"

[log]
level = "warn"

[[providers]]
name = "openai"
kind = "openai"
prefix = "/openai"
upstream = "http://$FAKE_ADDR"
api_key_env = "OPENAI_API_KEY"

[[providers]]
name = "gemini"
kind = "gemini"
prefix = "/gemini"
upstream = "http://$FAKE_ADDR"
api_key_env = "GEMINI_API_KEY"

[pricing."gpt-4o-mini"]
input = 0.15
cached_input = 0.075
output = 0.60

[pricing."gemini-2.5-flash"]
input = 0.30
output = 2.50
EOF

export JWT_SECRET=schemathesis-secret-that-is-long-enough-0123456789
export OPENAI_API_KEY=$OPENAI_KEY GEMINI_API_KEY=$GEMINI_KEY
"$TOLLGATE" serve --config "$CONFIG" >"$WORK/tollgate.log" 2>&1 &
PIDS+=($!)
TOLLGATE_PID=$!
PROXY=http://127.0.0.1:$PROXY_PORT
ADMIN=http://127.0.0.1:$ADMIN_PORT
wait_for "$PROXY/healthz" "$TOLLGATE_PID"
wait_for "$ADMIN/healthz" "$TOLLGATE_PID"

token() {
  "$TOLLGATE" token --config "$CONFIG" --ttl 1h "$@"
}

# === some traffic, so that the endpoints answer with real rows ===

post() {
  local url=$1 jwt=$2 body=$3 status
  status=$(curl -sS -o "$WORK/last-body" -w '%{http_code}' --max-time 20 \
    -H "Authorization: Bearer $jwt" -H 'Content-Type: application/json' -d "$body" "$url")
  if [ "$status" != 200 ]; then
    echo "error: POST $url answered $status: $(head -c 500 "$WORK/last-body")" >&2
    exit 1
  fi
}

ADMIN_JWT=$(token --sub schemathesis --admin)
CALLS=0
for user in alice bob carol; do
  jwt=$(token --sub "$user" --email "$user@example.com" --name "User $user")
  for i in 1 2; do
    post "$PROXY/openai/v1/chat/completions" "$jwt" \
      "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"hello number $i\"}]}"
    CALLS=$((CALLS + 1))
  done
  post "$PROXY/openai/v1/chat/completions" "$jwt" \
    '{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"stream please"}]}'
  post "$PROXY/gemini/v1beta/models/gemini-2.5-flash:generateContent" "$jwt" \
    '{"contents":[{"parts":[{"text":"hello gemini"}]}]}'
  CALLS=$((CALLS + 2))
done

# Controls, so that users carry a block reason and overrides, and the audit trail has rows.
curl -fsS -o /dev/null -X POST -H "Authorization: Bearer $ADMIN_JWT" \
  -H 'Content-Type: application/json' -d '{"reason":"seeded by the schemathesis run"}' \
  "$ADMIN/api/admin/user/bob/block"
curl -fsS -o /dev/null -X PUT -H "Authorization: Bearer $ADMIN_JWT" \
  -H 'Content-Type: application/json' -d '{"daily_tokens":5000,"monthly_cost_usd":1.5}' \
  "$ADMIN/api/admin/user/carol/limits"

# The usage rows are written in batches: wait until the admin API sees them all.
for _ in $(seq 100); do
  calls=$(curl -fsS -H "Authorization: Bearer $ADMIN_JWT" "$ADMIN/api/admin/stats" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["month"]["calls"])')
  [ "$calls" -ge "$CALLS" ] && break
  sleep 0.1
done
if [ "$calls" -lt "$CALLS" ]; then
  echo "error: the admin API sees $calls calls of the $CALLS seeded" >&2
  exit 1
fi
echo "seeded $CALLS calls from 3 users; admin API on $ADMIN"

# === schemathesis ===

# Every check but one:
# - not_a_server_error: no 5xx;
# - status_code_conformance, content_type_conformance, response_schema_conformance,
#   response_headers_conformance: every answer is one the document declares for the operation
#   (so it must list the real error statuses: 400, 401, 403, 404, 415, 422, 429, 503);
# - negative_data_rejection: a request the document calls invalid (wrong type, out of range,
#   unknown query parameter or body field) is refused with a 4xx;
# - ignored_auth: without the admin token (or with a spoiled one) every operation behind sign-in
#   answers 401; unsupported_method and allow_header_conformance: other methods get 405 with
#   `Allow`; missing_required_header, use_after_free, ensure_resource_availability,
#   object_level_authorization.
# Left out: positive_data_acceptance ("whatever the schema allows is accepted"). The handlers are
# deliberately stricter than JSON Schema can say: `from`/`to` of usage.csv must be a real date or
# a number of milliseconds, not any string, and an integer field refuses `5.0` (JSON Schema calls
# that an integer; serde, and so the API, does not).
#
# The sign-in endpoints stay in: a wrong name or password is 401, and once the per-address
# allowance (admin.login_attempts_per_minute) is used up the answer is 429, which the document
# declares, so the rate limit cannot fail the run; logout without a session cookie is a 204.
CHECKS=${SCHEMATHESIS_CHECKS:-all}
EXCLUDED=${SCHEMATHESIS_EXCLUDE_CHECKS:-positive_data_acceptance}
EXTRA_ARGS=()
[ "$SEED" = random ] || EXTRA_ARGS+=(--seed "$SEED")
# With SCHEMATHESIS_KEEP=1, every request and answer is kept (a VCR cassette) beside the logs.
[ "${SCHEMATHESIS_KEEP:-0}" != 1 ] || EXTRA_ARGS+=(--report vcr,junit --report-dir "$WORK/report")
# The document is served behind admin sign-in too: fetch it with the token, then test the live
# listener against it.
curl -fsS -H "Authorization: Bearer $ADMIN_JWT" -o "$WORK/openapi.json" "$ADMIN/api/admin/openapi.json"
cd "$WORK"
started=$(date +%s)
# In the background, and waited for: a signal to this script then stops it at once (bash runs a
# trap only after the foreground command ends); cleanup stops it like the other processes.
TOLLGATE_ADMIN_JWT=$ADMIN_JWT "$SCHEMATHESIS" --config-file "$HERE/schemathesis.toml" \
  run "$WORK/openapi.json" --url "$ADMIN" \
  --checks "$CHECKS" \
  --exclude-checks "$EXCLUDED" \
  --max-examples "$MAX_EXAMPLES" \
  "${EXTRA_ARGS[@]}" \
  --workers 2 \
  --request-timeout 20 \
  --generation-database none \
  --no-color &
PIDS+=($!)
set +e
wait "${PIDS[-1]}"
result=$?
set -e
# Reaped: its id may be reused from now on, so cleanup must not signal it.
unset 'PIDS[-1]'
echo "schemathesis exited $result after $(($(date +%s) - started)) s"
exit "$result"

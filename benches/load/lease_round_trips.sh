#!/usr/bin/env bash
# How many round trips to PostgreSQL the shared limits cost per call (BENCHMARKS.md, "Limits
# shared by several gateways"). Starts the fake upstream and GATEWAYS gateways (default 2) on
# one fresh PostgreSQL database (127.0.0.1:5432, dropped at the end), each on the shipped config
# (gateway_config.py) with `limits.daily_tokens = DAILY` (default 1,000,000) instead of the
# harness's out-of-the-way limit; then for each of USERS users (default 20), wrk drives
# CONNS connections (default 8) for SECS seconds (default 5) spread over the gateways, calling
# until well past the user's limit. Prints, from every gateway's /metrics, the calls recorded
# and the lease requests by result: requests / calls = round trips per call, over a user's whole
# budget spent at full speed (the worst case: far from the limit, a grant covers a sixteenth of
# it). Needs release binaries (cargo build --release -p tollgate -p tollgate-fake-upstream).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
GATEWAYS="${GATEWAYS:-2}"; DAILY="${DAILY:-1000000}"; USERS="${USERS:-20}"
CONNS="${CONNS:-8}"; SECS="${SECS:-5}"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
WORK="$(mktemp -d /tmp/tollgate-leases.XXXXXX)"
pids=()
db="tollgate_bench_leases_$(date +%s%N)"
cleanup() {
  kill -TERM "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true
  psql -h 127.0.0.1 -U postgres -qAt -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || true
}
trap cleanup EXIT
psql -h 127.0.0.1 -U postgres -qAt -c "CREATE DATABASE $db" >/dev/null
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db?sslmode=disable"
export JWT_SECRET="lease-bench-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" OPENAI_API_KEY=sk-mock GEMINI_API_KEY=AIza-mock

mock_port="$(free_port)"
"$BIN/fake-upstream" --listen "127.0.0.1:$mock_port" --threads 1 > "$WORK/mock.log" 2>&1 &
pids+=($!)
ports=(); admins=()
for i in $(seq 1 "$GATEWAYS"); do
  port="$(free_port)"; admin="$(free_port)"
  UPSTREAM="http://127.0.0.1:$mock_port" LISTEN="127.0.0.1:$port" ADMIN="127.0.0.1:$admin" \
    DB="$WORK/tollgate-$i.db" BACKEND=postgres bash "$HERE/gateway-config.sh" > "$WORK/gateway-$i.toml"
  TOLLGATE_LIMITS__DAILY_TOKENS="$DAILY" "$BIN/tollgate" serve --config "$WORK/gateway-$i.toml" 2> "$WORK/gateway-$i.log" &
  pids+=($!); ports+=("$port"); admins+=("$admin")
  for _ in $(seq 1 200); do curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.05; done
done
for u in $(seq 1 "$USERS"); do
  jwt="$("$BIN/tollgate" token --sub "lease-user-$u" --ttl 1h --config "$WORK/gateway-1.toml")"
  loads=()
  for i in $(seq 0 $((GATEWAYS - 1))); do
    WRK_PATH=/openai/v1/chat/completions WRK_HEADERS="Authorization: Bearer $jwt" WRK_TAG="u$u-g$i" \
      wrk -t1 -c"$CONNS" -d"${SECS}s" -s "$HERE/wrk.lua" "http://127.0.0.1:${ports[$i]}" > "$WORK/wrk-$u-$i.txt" 2>&1 &
    loads+=($!)
  done
  wait "${loads[@]}"
done
sleep 1
admin_jwt="$("$BIN/tollgate" token --sub ops --admin --ttl 1h --config "$WORK/gateway-1.toml")"
total_calls=0; total_ok=0; declare -A leases=()
for i in $(seq 0 $((GATEWAYS - 1))); do
  m="$(curl -fsS -H "Authorization: Bearer $admin_jwt" "http://127.0.0.1:${admins[$i]}/metrics")"
  calls="$(echo "$m" | awk '/^tollgate_calls_total/ {s+=$NF} END {print s+0}')"
  ok="$(echo "$m" | awk '/^tollgate_calls_total.*status="200"/ {s+=$NF} END {print s+0}')"
  total_calls=$((total_calls + calls)); total_ok=$((total_ok + ok))
  for r in fit last refused error; do
    n="$(echo "$m" | awk -v r="$r" '$0 ~ "^tollgate_lease_requests_total\\{result=\""r"\"\\}" {print $NF}')"
    leases[$r]=$(( ${leases[$r]:-0} + ${n:-0} ))
  done
done
requests=$(( ${leases[fit]} + ${leases[last]} + ${leases[refused]} + ${leases[error]} ))
echo "gateways=$GATEWAYS users=$USERS daily_tokens=$DAILY: calls=$total_calls served=$total_ok"
echo "lease requests: fit=${leases[fit]} last=${leases[last]} refused=${leases[refused]} error=${leases[error]} total=$requests"
python3 -c "print(f'round trips per call: {$requests/$total_calls:.4f}; per served call: {($requests)/max($total_ok,1):.4f}')"
psql -h 127.0.0.1 -U postgres -qAt "$db" -c "SELECT 'spent per user (max, min): ' || max(t) || ', ' || min(t) FROM (SELECT user_id, sum(total_tokens) AS t FROM token_usage GROUP BY user_id) s"

#!/usr/bin/env bash
# Tollgate as the "ours" target of /work/shared/peers/run-peers.sh (used by benches/load/peers.sh
# through OUR_GATEWAY_CMD). Writes a config pointing both providers at $MOCK_URL and listening on
# $GATEWAY_ADDR, with a fresh SQLite file, then execs `tollgate serve` in the foreground.
#
# Environment: MOCK_URL, GATEWAY_ADDR (set by run-peers.sh); TG_BENCH_BIN, TG_BENCH_DIR,
# JWT_SECRET, OPENAI_API_KEY, GEMINI_API_KEY (set by peers.sh).
set -euo pipefail
: "${MOCK_URL:?}" "${GATEWAY_ADDR:?}" "${TG_BENCH_BIN:?}" "${TG_BENCH_DIR:?}" "${JWT_SECRET:?}"
HERE="$(cd "$(dirname "$0")" && pwd)"
n="$(date +%s%N)"
cfg="$TG_BENCH_DIR/gateway-$n.toml"
admin_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
UPSTREAM="$MOCK_URL" LISTEN="$GATEWAY_ADDR" ADMIN="127.0.0.1:$admin_port" DB="$TG_BENCH_DIR/tollgate-$n.db" \
  bash "$HERE/gateway-config.sh" > "$cfg"
if [ "${BACKEND:-sqlite}" = postgres ]; then
  # A database of its own for every start (dropped by peers.sh at the end of the run).
  pgdb="tollgate_bench_$n"
  psql -h 127.0.0.1 -U postgres -qAt -c "CREATE DATABASE $pgdb" >/dev/null
  export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$pgdb?sslmode=disable"
fi
unset RUST_LOG
for v in $(compgen -e | grep '^TOLLGATE_' || true); do unset "$v"; done
exec "${TG_BENCH_BIN}" serve --config "$cfg"

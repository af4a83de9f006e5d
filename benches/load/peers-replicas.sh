#!/usr/bin/env bash
# "ours" for the peers harness as an operator runs replicas: nginx in front of $REPLICAS Tollgate
# gateways (default 2) sharing one PostgreSQL database, each on the shipped config (through
# gateway_config.py: only addresses, upstreams, limits and prices changed; BACKEND=postgres).
# Used by benches/load/peers.sh when OUR_GATEWAY_CMD points here (see BENCHMARKS.md, "Two
# gateways behind one nginx"); REPLICAS=1 is the same set-up with one gateway, the baseline.
#
# nginx: one worker, keep-alive to the gateways, proxy_buffering off, round-robin. Every process
# runs where the harness placed this script (its CPU pinning is inherited). The harness's CPU
# figure for "ours" is this script's own and means nothing here: compare req/s and latency.
#
# Environment: MOCK_URL, GATEWAY_ADDR (run-peers.sh); TG_BENCH_BIN, TG_BENCH_DIR, JWT_SECRET,
# OPENAI_API_KEY, GEMINI_API_KEY (peers.sh); REPLICAS. Only 127.0.0.1 is contacted.
set -euo pipefail
: "${MOCK_URL:?}" "${GATEWAY_ADDR:?}" "${TG_BENCH_BIN:?}" "${TG_BENCH_DIR:?}" "${JWT_SECRET:?}"
HERE="$(cd "$(dirname "$0")" && pwd)"
REPLICAS="${REPLICAS:-2}"
NGINX_BIN="$(command -v nginx || echo /usr/sbin/nginx)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

n="$(date +%s%N)"
run="$TG_BENCH_DIR/replicas-$n"
mkdir -p "$run"
pgdb="tollgate_bench_$n"   # dropped by peers.sh at the end of the run
psql -h 127.0.0.1 -U postgres -qAt -c "CREATE DATABASE $pgdb" >/dev/null
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$pgdb?sslmode=disable"
unset RUST_LOG
for v in $(compgen -e | grep '^TOLLGATE_' || true); do unset "$v"; done

pids=()
stop_all() { kill -TERM "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop_all EXIT
trap 'exit 0' TERM INT

servers=""
for i in $(seq 1 "$REPLICAS"); do
  port="$(free_port)"; admin="$(free_port)"
  UPSTREAM="$MOCK_URL" LISTEN="127.0.0.1:$port" ADMIN="127.0.0.1:$admin" DB="$run/tollgate-$i.db" \
    BACKEND=postgres bash "$HERE/gateway-config.sh" > "$run/gateway-$i.toml"
  "$TG_BENCH_BIN" serve --config "$run/gateway-$i.toml" 2> "$run/gateway-$i.log" &
  pids+=($!)
  for _ in $(seq 1 200); do
    curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.05
  done
  servers="$servers        server 127.0.0.1:$port;
"
done

cat > "$run/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $run/nginx.pid;
error_log stderr warn;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $run/body;
    proxy_temp_path $run/proxy;
    fastcgi_temp_path $run/fastcgi;
    uwsgi_temp_path $run/uwsgi;
    scgi_temp_path $run/scgi;
    upstream tollgate {
$servers        keepalive 512;
        keepalive_requests 1000000;
    }
    server {
        listen $GATEWAY_ADDR reuseport backlog=4096;
        client_max_body_size 16m;
        location / {
            proxy_pass http://tollgate;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 600s;
        }
    }
}
CONF
"$NGINX_BIN" -p "$run" -c "$run/nginx.conf" 2> "$run/nginx.log" &
pids+=($!)
wait "${pids[-1]}"

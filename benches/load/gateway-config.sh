#!/usr/bin/env bash
# Prints the Tollgate config of a benchmark run (benches/load/run.sh and peers.sh).
# Environment: UPSTREAM (mock base URL), LISTEN, ADMIN (addresses), DB (SQLite path); JOURNAL
# (store.journal: durable, process or off; unset = the shipped default, durable) to measure the
# call journal's cost.
set -euo pipefail
cat <<EOF
# Written by benches/load/gateway-config.sh for one benchmark run.
[server]
listen = "$LISTEN"
max_request_bytes = 1048576
# Tollgate is pinned to one core in these runs: a single-threaded runtime fits that placement.
worker_threads = 1
# Every load generator uses one JWT, standing for many users: the per-user cap on calls in
# flight (default 64) would refuse most of a 256-connection step. server.max_in_flight keeps
# its shipped default.
max_in_flight_per_user = 1000000

[admin]
listen = "$ADMIN"

[auth]
jwt_secret_env = "JWT_SECRET"
algorithms = ["HS256"]

[limits]
daily_tokens = 1000000000000000
monthly_tokens = 1000000000000000
requests_per_minute = 1000000000

[store]
path = "$DB"
${JOURNAL:+journal = \"$JOURNAL\"}

[log]
level = "warn"

[[providers]]
name = "openai"
kind = "openai"
prefix = "/openai"
upstream = "$UPSTREAM"
api_key_env = "OPENAI_API_KEY"

[[providers]]
name = "gemini"
kind = "gemini"
prefix = "/gemini"
upstream = "$UPSTREAM"
api_key_env = "GEMINI_API_KEY"

# The harness's models: priced so that no call logs "no price for this model".
[pricing."gpt-4o-mini"]
input = 0.15
cached_input = 0.075
output = 0.60

[pricing."gemini-2.0-flash"]
input = 0.10
cached_input = 0.025
output = 0.40

[pricing."mock"]
input = 0.10
output = 0.40
EOF

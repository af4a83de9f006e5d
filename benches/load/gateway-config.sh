#!/usr/bin/env bash
# Prints the Tollgate config of a benchmark run (benches/load/run.sh and peers.sh): the shipped
# gateway.toml with only the addresses, upstreams, limits (raised out of the way) and the
# harness's prices changed — see gateway_config.py.
# Environment: UPSTREAM (mock base URL), LISTEN, ADMIN (addresses), DB (SQLite path); JOURNAL
# (store.journal: durable, process or off; unset = the shipped default, durable) to measure the
# call journal's cost; VARIANT=tuned for the tuned variant (log.level = "warn",
# server.worker_threads = 1), reported beside the shipped one.
set -euo pipefail
exec python3 "$(dirname "$0")/gateway_config.py"

#!/usr/bin/env bash
# Tollgate in the peers harness (/work/shared/peers/run-peers.sh): nginx (plain proxy_pass,
# keep-alive upstream, proxy_buffering off, one worker) and Tollgate against the same mock,
# pinned like the peers (load generator on CPU 1, mock + system under test on CPU 0).
#
#   benches/load/peers.sh [--quick]             # one run: TARGETS (default "direct nginx ours")
#   ROUNDS=5 benches/load/peers.sh [--quick]    # interleaved: ROUNDS runs of the harness, nginx
#                                               # and Tollgate alternating which goes first;
#                                               # prints the median ratio ours/nginx per scenario
#
# Options: --quick (the harness's short steps), --no-build, --no-install.
# Environment:
#   ROUNDS        interleaved rounds (unset or 1: a single run)
#   TARGETS       targets of a single run                  (default "direct nginx ours")
#   PEERS_DIR     the harness                              (default /work/shared/peers)
#   RESULTS_DIR   where the results are copied             (default benches/load/results/peers-<date>)
#   BACKEND       postgres: the gateway on PostgreSQL (a database per start on 127.0.0.1:5432,
#                 dropped at the end); also VARIANT, JOURNAL, PRICES (see gateway_config.py)
#   OUR_GATEWAY_CMD  what "ours" is (default benches/load/peers-gateway.sh, one gateway);
#                 benches/load/peers-replicas.sh: nginx in front of REPLICAS gateways on one
#                 PostgreSQL database (with BACKEND=postgres)
#   anything run-peers.sh reads (DURATION, WARMUP, CONNS, STREAM_N, PIN, ...)
#
# Tollgate is plugged in through OUR_GATEWAY_CMD = benches/load/peers-gateway.sh, which writes a
# config pointing both providers at $MOCK_URL, listening on $GATEWAY_ADDR, with a fresh SQLite
# file under this run's directory in /tmp, and execs `tollgate serve`; every call is verified
# (JWT), metered and recorded as through run.sh. Only 127.0.0.1 is contacted.
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PEERS_DIR="${PEERS_DIR:-/work/shared/peers}"
BUILD=1; PASS=()
for a in "$@"; do
  case "$a" in
    --no-build) BUILD=0 ;;
    --quick|--no-install) PASS+=("$a") ;;
    -h|--help) sed -n '2,/^set /p' "$0" | grep '^#'; exit 0 ;;
    *) echo "unknown argument: $a (try --help)" >&2; exit 2 ;;
  esac
done
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { echo "peers.sh: $*" >&2; exit 1; }
[ -x "$PEERS_DIR/run-peers.sh" ] || die "no harness at $PEERS_DIR/run-peers.sh"
command -v python3 >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 >/dev/null; } \
  || die "python3 is missing"

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
if [ "$BUILD" = 1 ]; then
  log "cargo build --release -p tollgate"
  (cd "$ROOT" && cargo build --release -q -p tollgate) || die "build failed"
fi
[ -x "$TARGET_DIR/release/tollgate" ] || die "no $TARGET_DIR/release/tollgate (run without --no-build)"

WORK="$(mktemp -d /tmp/tollgate-peers.XXXXXX)"
cp "$TARGET_DIR/release/tollgate" "$WORK/tollgate" || die "cannot copy the binary"
export TG_BENCH_BIN="$WORK/tollgate" TG_BENCH_DIR="$WORK"
export JWT_SECRET="bench-secret-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
export OPENAI_API_KEY=sk-mock GEMINI_API_KEY=AIza-mock
UPSTREAM=http://127.0.0.1:1 LISTEN=127.0.0.1:1 ADMIN=127.0.0.1:2 DB="$WORK/unused.db" \
  bash "$HERE/gateway-config.sh" > "$WORK/mint.toml"
JWT="$("$TG_BENCH_BIN" token --sub peers-bench --ttl 2d --config "$WORK/mint.toml")" || die "tollgate token failed"

export OUR_GATEWAY_CMD="${OUR_GATEWAY_CMD:-$HERE/peers-gateway.sh}"
export OUR_GATEWAY_HEADERS="Authorization: Bearer $JWT"
export OUR_GATEWAY_OPENAI_PREFIX=/openai
export OUR_GATEWAY_GEMINI_PREFIX=/gemini
export OUR_GATEWAY_READY_PATH=/healthz
export OUR_GATEWAY_GEMINI=1

if [ "${BACKEND:-sqlite}" = postgres ]; then
  command -v psql >/dev/null || die "BACKEND=postgres needs psql and the PostgreSQL server on 127.0.0.1:5432"
  # Every gateway start made a database of its own (peers-gateway.sh): drop them at the end.
  drop_bench_dbs() {
    for d in $(psql -h 127.0.0.1 -U postgres -qAt -c "SELECT datname FROM pg_database WHERE datname LIKE 'tollgate_bench_%'"); do
      psql -h 127.0.0.1 -U postgres -qAt -c "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null
    done
  }
  trap drop_bench_dbs EXIT
fi

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="${RESULTS_DIR:-$HERE/results/peers-$STAMP}"
mkdir -p "$OUT"
ROUNDS="${ROUNDS:-1}"

if [ "$ROUNDS" -le 1 ]; then
  export TARGETS="${TARGETS:-direct nginx ours}"
  log "run-peers.sh ${PASS[*]} with TARGETS=\"$TARGETS\""
  RESULTS_OUT="$OUT" "$PEERS_DIR/run-peers.sh" "${PASS[@]}" || die "run-peers.sh failed"
  python3 "$HERE/peers_ratio.py" "$OUT" | tee "$OUT/ratios.md"
  echo "Results: $OUT (Tollgate configs and databases: $WORK)"
  exit 0
fi

install_flag=()
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then T="nginx ours"; else T="ours nginx"; fi
  log "== round $r/$ROUNDS: TARGETS=\"$T\""
  args=("${PASS[@]}" "${install_flag[@]}")
  TARGETS="$T" RESULTS_OUT="$OUT/round-$r" "$PEERS_DIR/run-peers.sh" "${args[@]}" > "$OUT/round-$r.log" 2>&1 \
    || { tail -20 "$OUT/round-$r.log" >&2; die "run-peers.sh failed in round $r (see $OUT/round-$r.log)"; }
  install_flag=(--no-install)   # installed (idempotently) by the first round
  python3 "$HERE/peers_ratio.py" "$OUT/round-$r" | grep -E '^\| (ns|stream|gemini)' | sed 's/^/    /' >&2 || true
done
python3 "$HERE/peers_ratio.py" "$OUT"/round-* | tee "$OUT/ratios.md"
echo "Results: $OUT (Tollgate configs and databases: $WORK)"

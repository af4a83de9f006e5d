#!/usr/bin/env bash
# Tollgate load benchmark: direct to the fake upstream vs through Tollgate, on loopback, in one run.
#
#   benches/load/run.sh            # full run (~7 min on 2 cores, plus the build)
#   benches/load/run.sh --quick    # smoke run (~2 min): 1 round, 1 s warm-up + 3 s per step
#
# Options: --quick, --no-install (don't apt-get), --no-build (use the binaries already in
# target/release), -h.
#
# What it does (see BENCHMARKS.md for the method and how to read the figures):
#   builds release `tollgate` and `fake-upstream`; writes a gateway config under a fresh
#   /tmp/tollgate-load.XXXXXX (both providers -> the fake, SQLite store there, log.level=warn,
#   limits high); mints a JWT; starts two identical fakes (one for direct calls, one behind
#   Tollgate, so the second counts exactly the calls Tollgate forwarded) and Tollgate, all pinned
#   on CPU 0 (`--threads 1` for the fakes; Tollgate's runtime sees one CPU); load generators and
#   probes run on CPU 1. Then, direct and through Tollgate, alternating:
#     a) non-streaming chat at $CONNS connections (wrk): req/s, p50/p99, added latency,
#        CPU µs per call (utime+stime from /proc/PID/stat over the measured window / requests)
#     b) streaming (wrk, $STREAM_CONNS connections, $STREAM_CHUNKS chunks): streams/s;
#        sequential probe: time to head and to the first `data:` event (median of $PROBE_N);
#        held-back check with events 10 ms apart (OpenAI with include_usage, OpenAI with the
#        usage chunk injected and stripped by Tollgate, Gemini SSE)
#     c) Tollgate RSS (VmRSS, VmHWM) at idle and with $OPEN_STREAMS concurrent open streams
#     d) SIGTERM Tollgate; rows in token_usage vs calls the generators made: PASS/FAIL
#   and prints one markdown table (also written to $RUN/report.md and $RESULTS_DIR/latest.md).
#
# Environment (optional):
#   ROUNDS         interleaved rounds per step, medians reported     (default 3; --quick 1)
#   DURATION       measured seconds per wrk step                     (default 10; --quick 3)
#   WARMUP         unmeasured seconds before each wrk step           (default 3; --quick 1)
#   CONNS          non-streaming concurrency levels                  (default "1 32 256")
#   STREAM_CONNS   streaming concurrency                             (default 32)
#   STREAM_CHUNKS  content chunks per streamed answer                (default 50)
#   PROBE_N        sequential streams per target for time-to-first-chunk (default 50)
#   HELD_N         streams per target and case for the held-back check (default 10; --quick 5)
#   OPEN_STREAMS   concurrent open streams for RSS                   (default "1000 10000")
#   PERF           1: also profile Tollgate (perf record -e cpu-clock --call-graph dwarf; c=32
#                  and streaming), print the top functions             (default 0)
#   STEPS          which steps to run (default "ns stream probe held rss"; "none": only PERF + rows)
#   PIN            1: pin as above (needs 2 CPUs); 0: no pinning       (default 1)
#   RESULTS_DIR    where latest.md / latest-results.txt are copied    (default benches/load/results)
#
# Only 127.0.0.1 is ever contacted. Every process started here is stopped by its PID at exit.
set -uo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
INSTALL=1; BUILD=1; QUICK=0
for a in "$@"; do
  case "$a" in
    --quick) QUICK=1 ;;
    --no-install) INSTALL=0 ;;
    --no-build) BUILD=0 ;;
    -h|--help) sed -n '2,/^set /p' "$0" | grep '^#'; exit 0 ;;
    *) echo "unknown argument: $a (try --help)" >&2; exit 2 ;;
  esac
done
if [ "$QUICK" = 1 ]; then
  ROUNDS="${ROUNDS:-1}"; DURATION="${DURATION:-3}"; WARMUP="${WARMUP:-1}"; HELD_N="${HELD_N:-5}"
fi
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-3}"
CONNS="${CONNS:-1 32 256}"
STREAM_CONNS="${STREAM_CONNS:-32}"
STREAM_CHUNKS="${STREAM_CHUNKS:-50}"
PROBE_N="${PROBE_N:-50}"
HELD_N="${HELD_N:-10}"
HELD_CHUNKS="${HELD_CHUNKS:-20}"
OPEN_STREAMS="${OPEN_STREAMS:-1000 10000}"
PERF="${PERF:-0}"
PIN="${PIN:-1}"
STEPS="${STEPS:-ns stream probe held rss}"
RESULTS_DIR="${RESULTS_DIR:-$HERE/results}"

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { echo "run.sh: $*" >&2; exit 1; }

# ------------------------------------------------------------------ tools (idempotent)
SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo
perf_works() { command -v perf >/dev/null && perf stat -e cpu-clock -- true >/dev/null 2>&1; }
install_tools() {
  local need=()
  command -v wrk >/dev/null || need+=(wrk)
  command -v curl >/dev/null || need+=(curl)
  command -v taskset >/dev/null || need+=(util-linux)
  command -v python3 >/dev/null || need+=(python3)
  command -v h2load >/dev/null || need+=(nghttp2-client)
  if [ "$PERF" = 1 ] && ! perf_works; then need+=(linux-perf); fi
  if [ "${#need[@]}" -gt 0 ]; then
    log "apt-get install ${need[*]}"
    $SUDO apt-get update -qq >/dev/null \
      && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
      || die "apt-get install ${need[*]} failed"
  fi
}
[ "$INSTALL" = 1 ] && install_tools
for t in wrk curl taskset python3; do command -v "$t" >/dev/null || die "$t is missing (run without --no-install)"; done
if [ "$PERF" = 1 ] && ! perf_works; then log "perf does not work here; PERF=1 ignored"; PERF=0; fi

# ------------------------------------------------------------------ build
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
BIN="$TARGET_DIR/release"
if [ "$BUILD" = 1 ]; then
  command -v cargo >/dev/null || die "cargo is missing: install a Rust toolchain (rustup) first"
  log "cargo build --release -p tollgate -p tollgate-fake-upstream"
  (cd "$ROOT" && cargo build --release -q -p tollgate -p tollgate-fake-upstream) || die "build failed"
fi
[ -x "$BIN/tollgate" ] && [ -x "$BIN/fake-upstream" ] || die "no binaries in $BIN (run without --no-build)"

# ------------------------------------------------------------------ environment
RUN="$(mktemp -d /tmp/tollgate-load.XXXXXX)"
# Run private copies: a concurrent `cargo build` must not swap a binary under a running step
# (and perf needs the exact file it sampled).
mkdir -p "$RUN/bin" && cp -p "$BIN/tollgate" "$BIN/fake-upstream" "$RUN/bin/" || die "cannot copy the binaries"
BIN="$RUN/bin"
RESULTS="$RUN/results.txt"
: > "$RESULTS"
NCPU="$(nproc)"
if [ "$PIN" = 1 ] && [ "$NCPU" -ge 2 ]; then
  SUT_PIN=(taskset -c 0); LOAD_PIN=(taskset -c 1)
else
  PIN=0; SUT_PIN=(); LOAD_PIN=()
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FD_LIMIT="$(ulimit -n)"
CLK_TCK="$(getconf CLK_TCK)"
# The environment must not reconfigure Tollgate behind our back.
unset RUST_LOG
for v in $(compgen -e | grep '^TOLLGATE_' || true); do unset "$v"; done

PIDS=()
mine() {  # is PID still a child of this script (not a recycled PID)?
  local s; s="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  s="${s##*) }"
  [ "$(echo "$s" | cut -d' ' -f2)" = "$$" ]
}
cleanup() {
  local p
  for p in "${PIDS[@]}"; do mine "$p" && kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do mine "$p" || break; sleep 0.1; done
    mine "$p" && kill -KILL "$p" 2>/dev/null
  done
  PIDS=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {  # wait_http URL SECONDS PID
  local i
  for i in $(seq 1 $(($2 * 10))); do
    curl -s -o /dev/null -m 1 -w '%{http_code}' "$1" 2>/dev/null | grep -q '^2' && return 0
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
ticks() {  # utime+stime of a whole process (all threads), in clock ticks
  local s; s="$(cat "/proc/$1/stat" 2>/dev/null)" || { echo 0; return; }
  s="${s##*) }"
  # shellcheck disable=SC2086
  set -- $s
  echo $(( ${12} + ${13} ))
}
store_ticks() {  # utime+stime of Tollgate's SQLite writer thread (named tollgate-store)
  local f s t=0
  for f in /proc/"$1"/task/*/stat; do
    s="$(cat "$f" 2>/dev/null)" || continue
    case "$s" in *"(tollgate-store)"*) ;; *) continue ;; esac
    s="${s##*) }"
    # shellcheck disable=SC2086
    set -- $s
    t=$((t + ${12} + ${13}))
  done
  echo "$t"
}
ctxsw() {  # voluntary + involuntary context switches of every thread of a process
  cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^(non)?voluntary_ctxt_switches:/ {n += $2} END {print n + 0}'
}
cpu0_ticks() {  # busy and steal ticks of CPU 0 (everything on it, ours and others')
  awk '$1=="cpu0" {print $2+$3+$4+$7+$8, $9}' /proc/stat
}
status_kb() { awk -v k="$2:" '$1==k {print $2}' "/proc/$1/status" 2>/dev/null; }
nfds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
fake_requests() { curl -s -m 2 "$1/__fake/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])'; }
now_s() { date +%s.%N; }

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo) x $NCPU; $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); kernel $(uname -r)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "git: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$ROOT" && [ -n "$(git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ] && echo ' + uncommitted changes in src/Cargo')"
  echo "binaries: tollgate built $(date -u -r "$BIN/tollgate" +%Y-%m-%dT%H:%M:%SZ), fake-upstream built $(date -u -r "$BIN/fake-upstream" +%Y-%m-%dT%H:%M:%SZ)$([ "$BUILD" = 0 ] && echo ' (--no-build: not rebuilt for this run)')"
  echo "pinning: PIN=$PIN (load generators: ${LOAD_PIN[*]:-any CPU}; fakes + tollgate: ${SUT_PIN[*]:-any CPU}); open files limit $FD_LIMIT"
  echo "steps: [$STEPS] rounds=$ROUNDS warmup=${WARMUP}s duration=${DURATION}s conns=[$CONNS] stream_conns=$STREAM_CONNS stream_chunks=$STREAM_CHUNKS probe_n=$PROBE_N held_n=$HELD_N open_streams=[$OPEN_STREAMS]"
  echo "tools: $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}'); python $(python3 -c 'import platform; print(platform.python_version())'); $(h2load --version 2>/dev/null | head -1)"
} > "$RUN/env.txt"
cat "$RUN/env.txt" >&2

# ------------------------------------------------------------------ processes
start_fake() {  # start_fake NAME -> sets FAKE_PID, FAKE_URL
  local name="$1" log="$RUN/fake-$1.log" i addr
  FAKE_EXPECT_OPENAI_KEY=sk-fake FAKE_EXPECT_GEMINI_KEY=AIza-fake \
    "${SUT_PIN[@]}" "$BIN/fake-upstream" --listen 127.0.0.1:0 --threads 1 > "$log" 2>&1 < /dev/null &
  FAKE_PID=$!
  PIDS+=("$FAKE_PID")
  for i in $(seq 1 100); do
    addr="$(grep -o 'listening on [0-9.:]*' "$log" | awk '{print $3}')"
    [ -n "$addr" ] && break
    kill -0 "$FAKE_PID" 2>/dev/null || die "fake-upstream $name did not start (see $log)"
    sleep 0.1
  done
  [ -n "$addr" ] || die "fake-upstream $name did not start (see $log)"
  FAKE_URL="http://$addr"
}
start_fake direct; FD_PID=$FAKE_PID; FD_URL=$FAKE_URL
start_fake behind; FT_PID=$FAKE_PID; FT_URL=$FAKE_URL

TG_PORT="$(free_port)"; ADMIN_PORT="$(free_port)"
CFG="$RUN/gateway.toml"
UPSTREAM="$FT_URL" LISTEN="127.0.0.1:$TG_PORT" ADMIN="127.0.0.1:$ADMIN_PORT" DB="$RUN/tollgate.db" \
  bash "$HERE/gateway-config.sh" > "$CFG" || die "cannot write $CFG"
export JWT_SECRET="bench-secret-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
JWT="$("$BIN/tollgate" token --sub bench --ttl 1d --config "$CFG")" || die "tollgate token failed"
TG_URL="http://127.0.0.1:$TG_PORT"
TG_STARTS=0
TG_EXITS=""
start_tg() {  # a fresh Tollgate process on the same config and database; sets TG_PID
  TG_STARTS=$((TG_STARTS + 1))
  OPENAI_API_KEY=sk-fake GEMINI_API_KEY=AIza-fake \
    "${SUT_PIN[@]}" "$BIN/tollgate" serve --config "$CFG" >> "$RUN/tollgate.log" 2>&1 < /dev/null &
  TG_PID=$!
  PIDS+=("$TG_PID")
  wait_http "$TG_URL/healthz" 30 "$TG_PID" || die "tollgate did not start (see $RUN/tollgate.log)"
  sleep 0.5
}
stop_tg() {  # SIGTERM (graceful: every row flushed), wait, remember the exit code
  local i rc
  kill -TERM "$TG_PID" 2>/dev/null
  for i in $(seq 1 600); do kill -0 "$TG_PID" 2>/dev/null || break; sleep 0.1; done
  wait "$TG_PID" 2>/dev/null; rc=$?
  TG_EXITS="$TG_EXITS${TG_EXITS:+,}$rc"
}
start_tg
RSS_FRESH="$(status_kb "$TG_PID" VmRSS)"; HWM_FRESH="$(status_kb "$TG_PID" VmHWM)"
echo "RSS phase=fresh rss_kb=$RSS_FRESH hwm_kb=$HWM_FRESH fds=$(nfds "$TG_PID")" >> "$RESULTS"
log "fakes: direct $FD_URL, behind tollgate $FT_URL; tollgate $TG_URL (pid $TG_PID, RSS ${RSS_FRESH} kB)"

TG_CALLS=0   # every request any generator wrote to Tollgate (warm-up included)

# ------------------------------------------------------------------ a, b: wrk steps
NS_BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":16}'
ST_BODY='{"model":"gpt-4o-mini-n'"$STREAM_CHUNKS"'","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Say hello in one short sentence."}]}'
D_HDR="Authorization: Bearer sk-fake"
T_HDR="Authorization: Bearer $JWT"
OAI=/v1/chat/completions

# wrk_step KIND TARGET CONNS ROUND BODY
wrk_step() {
  local kind="$1" target="$2" c="$3" round="$4" body="$5" url hdr path sut
  if [ "$target" = direct ]; then url="$FD_URL"; hdr="$D_HDR"; path="$OAI"; sut="$FD_PID"
  else url="$TG_URL"; hdr="$T_HDR"; path="/openai$OAI"; sut="$TG_PID"; fi
  local envs=(WRK_PATH="$path" WRK_BODY="$body" WRK_HEADERS="$hdr" WRK_TAG="$kind")
  local out sent
  if [ "$WARMUP" != 0 ]; then
    out="$(env "${envs[@]}" timeout $((WARMUP + 60)) "${LOAD_PIN[@]}" wrk -t1 -c"$c" -d"${WARMUP}s" --timeout 10s \
      -s "$HERE/wrk.lua" "$url" 2>&1)"
    sent="$(echo "$out" | grep -o 'WRKRESULT.* sent=[0-9]*' | grep -o '[0-9]*$')"
    [ "$target" = tollgate ] && TG_CALLS=$((TG_CALLS + ${sent:-0}))
  fi
  local t0 f0 c0 s0 t1 f1 c1 s1 w0 w1
  local st0 st1 x0 x1
  st0="$(store_ticks "$TG_PID")"; x0="$(ctxsw "$sut")"
  t0="$(ticks "$sut")"; f0="$(ticks "$FT_PID")"; read -r c0 s0 < <(cpu0_ticks); w0="$(now_s)"
  out="$(env "${envs[@]}" timeout $((DURATION + 60)) "${LOAD_PIN[@]}" wrk -t1 -c"$c" -d"${DURATION}s" --timeout 10s \
    -s "$HERE/wrk.lua" "$url" 2>&1)"
  t1="$(ticks "$sut")"; f1="$(ticks "$FT_PID")"; read -r c1 s1 < <(cpu0_ticks); w1="$(now_s)"
  st1="$(store_ticks "$TG_PID")"; x1="$(ctxsw "$sut")"
  echo "$out" > "$RUN/wrk-$kind-$target-c$c-r$round.txt"
  local line
  line="$(echo "$out" | grep '^WRKRESULT' | head -1)"
  if [ -z "$line" ]; then
    echo "NOTE wrk $kind $target c=$c round $round produced no result (see $RUN/wrk-$kind-$target-c$c-r$round.txt)" >> "$RESULTS"
    log "wrk $kind $target c=$c: no result"
    return
  fi
  sent="$(echo "$line" | grep -o ' sent=[0-9]*' | grep -o '[0-9]*$')"
  [ "$target" = tollgate ] && TG_CALLS=$((TG_CALLS + ${sent:-0}))
  # For direct, the system under test is the direct fake; for tollgate, tollgate itself, and
  # upstream_ticks is the fake behind it. cpu0_* cover everything that ran on CPU 0.
  local fake_ticks=0
  [ "$target" = tollgate ] && fake_ticks=$((f1 - f0))
  line="${line/WRKRESULT tag=$kind/WRKRESULT kind=$kind target=$target conns=$c round=$round}"
  local rss=0
  [ "$target" = tollgate ] && rss="$(status_kb "$TG_PID" VmRSS)"
  local store=0
  [ "$target" = tollgate ] && store=$((st1 - st0))
  echo "$line sut_ticks=$((t1 - t0)) store_ticks=$store sut_ctxsw=$((x1 - x0)) upstream_ticks=$fake_ticks tg_rss_kb=$rss cpu0_busy_ticks=$((c1 - c0)) cpu0_steal_ticks=$((s1 - s0)) wall_s=$(awk -v a="$w0" -v b="$w1" 'BEGIN{printf "%.3f", b-a}') clk_tck=$CLK_TCK" >> "$RESULTS"
  log "$kind $target c=$c r$round: $(echo "$line" | grep -o 'rps=[^ ]*') $(echo "$line" | grep -o 'p50_us=[^ ]*') $(echo "$line" | grep -o ' p99_us=[^ ]*') cpu=$(awk -v t=$((t1 - t0)) -v r="$(echo "$line" | grep -o ' requests=[0-9]*' | grep -o '[0-9]*$')" -v hz="$CLK_TCK" 'BEGIN{ if (r>0) printf "%.1fus/call", t/hz/r*1e6 }')"
}

pair() {  # pair KIND CONNS ROUND BODY: direct and tollgate, order alternating by round
  if [ $(($3 % 2)) = 1 ]; then
    wrk_step "$1" direct "$2" "$3" "$4"; wrk_step "$1" tollgate "$2" "$3" "$4"
  else
    wrk_step "$1" tollgate "$2" "$3" "$4"; wrk_step "$1" direct "$2" "$3" "$4"
  fi
}

step() { [[ " $STEPS " == *" $1 "* ]]; }
if step ns; then
  log "== a) non-streaming chat, direct vs tollgate, conns [$CONNS], $ROUNDS round(s)"
  for r in $(seq 1 "$ROUNDS"); do
    for c in $CONNS; do pair ns "$c" "$r" "$NS_BODY"; done
  done
fi
if step stream; then
  log "== b) streaming chat ($STREAM_CHUNKS chunks, no delay), c=$STREAM_CONNS"
  for r in $(seq 1 "$ROUNDS"); do pair stream "$STREAM_CONNS" "$r" "$ST_BODY"; done
fi

# ------------------------------------------------------------------ b: probes
probe() {  # probe MODE TAG ARGS... (targets direct + tollgate are added by the caller)
  local mode="$1" tag="$2"; shift 2
  local out
  out="$(timeout 600 "${LOAD_PIN[@]}" python3 "$HERE/stream_probe.py" "$mode" --tag "$tag" "$@" 2>"$RUN/probe-$tag.err")"
  echo "$out" | grep -E '^(PROBE|HELDBACK) ' >> "$RESULTS"
  local s
  s="$(echo "$out" | grep "target=tollgate" | grep -o ' sent=[0-9]*' | grep -o '[0-9]*$')"
  TG_CALLS=$((TG_CALLS + ${s:-0}))
  echo "$out" | sed "s/^/    /" >&2
  [ -n "$out" ] || log "probe $tag produced nothing (see $RUN/probe-$tag.err)"
}
if step probe; then
  log "== b) sequential probe: time to head and to first chunk ($PROBE_N streams per target, 3 chunks 10 ms apart)"
  TTFC_BODY='{"model":"gpt-4o-mini-n3-cd10","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Say hello in one short sentence."}]}'
  probe ttfc ttfc -n "$PROBE_N" --body "$TTFC_BODY" \
    --target direct "$FD_URL" "$OAI" "$D_HDR" --target tollgate "$TG_URL" "/openai$OAI" "$T_HDR"
fi

if step held; then
  log "== b) held-back check: $HELD_CHUNKS chunks 10 ms apart, $HELD_N streams per target and case"
  HELD_MODEL="gpt-4o-mini-n$HELD_CHUNKS-cd10"
  HB_USAGE='{"model":"'"$HELD_MODEL"'","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Say hello in one short sentence."}]}'
  HB_PLAIN='{"model":"'"$HELD_MODEL"'","stream":true,"messages":[{"role":"user","content":"Say hello in one short sentence."}]}'
  probe chunks held-openai-usage -n "$HELD_N" --body "$HB_USAGE" \
    --target direct "$FD_URL" "$OAI" "$D_HDR" --target tollgate "$TG_URL" "/openai$OAI" "$T_HDR"
  # Client did not ask for usage: Tollgate asks upstream and strips the usage event. Reference:
  # direct with include_usage, usage event dropped (same upstream pacing as behind Tollgate).
  probe chunks held-openai-injected -n "$HELD_N" --body "$HB_PLAIN" --body-for direct "$HB_USAGE" --drop-usage direct \
    --target direct "$FD_URL" "$OAI" "$D_HDR" --target tollgate "$TG_URL" "/openai$OAI" "$T_HDR"
  GEM_BODY='{"contents":[{"role":"user","parts":[{"text":"Say hello in one short sentence."}]}]}'
  GEM_PATH="/v1beta/models/gemini-2.0-flash-n$HELD_CHUNKS-cd10:streamGenerateContent?alt=sse"
  probe chunks held-gemini-sse -n "$HELD_N" --body "$GEM_BODY" \
    --target direct "$FD_URL" "$GEM_PATH" "x-goog-api-key: AIza-fake" --target tollgate "$TG_URL" "/gemini$GEM_PATH" "x-goog-api-key: $JWT"
fi

# ------------------------------------------------------------------ optional profile
if [ "$PERF" = 1 ]; then
  perf_step() {  # perf_step NAME BODY CONNS
    local name="$1" body="$2" c="$3" out sent
    log "== perf: tollgate $name c=$c (${DURATION}s, perf record -e cpu-clock)"
    # DWARF call graphs (Rust release builds have no frame pointers): self and inclusive time.
    perf record -q -e cpu-clock -F 499 --call-graph dwarf,16384 -p "$TG_PID" -o "$RUN/perf-$name.data" \
      -- sleep "$((DURATION + 1))" 2>/dev/null &
    local pp=$!
    sleep 0.5
    out="$(WRK_PATH="/openai$OAI" WRK_BODY="$body" WRK_HEADERS="$T_HDR" WRK_TAG="perf-$name" \
      timeout $((DURATION + 60)) "${LOAD_PIN[@]}" wrk -t1 -c"$c" -d"${DURATION}s" --timeout 10s -s "$HERE/wrk.lua" "$TG_URL" 2>&1)"
    sent="$(echo "$out" | grep -o 'WRKRESULT.* sent=[0-9]*' | grep -o '[0-9]*$')"
    TG_CALLS=$((TG_CALLS + ${sent:-0}))
    wait "$pp"
    local rep=(perf report -i "$RUN/perf-$name.data" --no-children --stdio -g none)
    "${rep[@]}" --sort comm,dso,symbol --percent-limit 0.6 2>/dev/null | grep -E '^ +[0-9]' \
      | sed -E 's/ +$//; s/ {2,}/  /g; s/  -  -$//' | cut -c1-150 | head -40 > "$RUN/perf-$name-top.txt"
    "${rep[@]}" --sort comm,dso 2>/dev/null | grep -E '^ +[0-9]' | sed -E 's/ +$//; s/ {2,}/  /g' | head -12 > "$RUN/perf-$name-dso.txt"
    # Inclusive time of Tollgate's own functions and of the syscalls and libraries around them.
    perf report -i "$RUN/perf-$name.data" --children --stdio -g none --sort symbol --percent-limit 0.4 2>/dev/null \
      | grep -E '^ +[0-9]' | grep -v '(inlined)' | sed -E 's/ +$//; s/ {2,}/  /g; s/  -  -$//' \
      | grep -E 'tollgate::|sqlite3_step|fsync|pwrite64|__GI___writev|__sys_recvfrom|epoll_wait|send_request|UpgradeableConnection|jsonwebtoken|_int_malloc|_int_free' \
      | awk '!seen[$NF]++' | cut -c1-150 | head -30 > "$RUN/perf-$name-inclusive.txt"
    { echo "PERF name=$name conns=$c"; sed 's/^/PERFLINE /' "$RUN/perf-$name-dso.txt"
      echo "PERFLINE"; echo "PERFLINE self time, top symbols:"; sed 's/^/PERFLINE /' "$RUN/perf-$name-top.txt"
      echo "PERFLINE"; echo "PERFLINE inclusive (children) time, selected:"; sed 's/^/PERFLINE /' "$RUN/perf-$name-inclusive.txt"; } >> "$RESULTS"
  }
  perf_step ns "$NS_BODY" 32
  perf_step stream "$ST_BODY" "$STREAM_CONNS"
fi

# ------------------------------------------------------------------ c: RSS with open streams
MAX_IN_FLIGHT=4096                    # server.max_in_flight as shipped (the config leaves it)
OPEN_MODEL="gpt-4o-mini-n30-cd5000"   # 30 events 5 s apart: streams stay open, little traffic
OPEN_BODY='{"model":"'"$OPEN_MODEL"'","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Say hello in one short sentence."}]}'
settle() {  # wait until tollgate holds at most $1 descriptors (its streams are gone), <= 60 s
  local i
  for i in $(seq 1 120); do [ "$(nfds "$TG_PID")" -le "$1" ] && break; sleep 0.5; done
  sleep 1
}
# Each count of open streams is measured on a fresh Tollgate process (same config and
# database), so that memory the allocator kept from an earlier step cannot hide the cost.
fresh_tg() {
  stop_tg; start_tg
  sleep 1
  RSS_BASE="$(status_kb "$TG_PID" VmRSS)"; FDS_BASE="$(nfds "$TG_PID")"
}
open_h1() {  # open_h1 N: N HTTP/1.1 connections, one stream each
  local n="$1" up0 i line sent
  fresh_tg; up0="$(fake_requests "$FT_URL")"
  "${LOAD_PIN[@]}" python3 "$HERE/open_streams.py" --url "$TG_URL" --path "/openai$OAI" --header "$T_HDR" \
    --body "$OPEN_BODY" -n "$n" --hold 300 > "$RUN/open-h1-$n.out" 2> "$RUN/open-h1-$n.err" &
  local cp=$!
  PIDS+=("$cp")
  for i in $(seq 1 1800); do
    grep -q '^READY' "$RUN/open-h1-$n.out" && break
    kill -0 "$cp" 2>/dev/null || break
    sleep 0.1
  done
  sleep 1
  local rss hwm fds up
  rss="$(status_kb "$TG_PID" VmRSS)"; hwm="$(status_kb "$TG_PID" VmHWM)"; fds="$(nfds "$TG_PID")"
  up=$(( $(fake_requests "$FT_URL") - up0 ))
  line="$(grep '^READY' "$RUN/open-h1-$n.out")"
  kill -TERM "$cp" 2>/dev/null; wait "$cp" 2>/dev/null
  sent="$(grep -o 'CLOSED sent=[0-9]*' "$RUN/open-h1-$n.out" | grep -o '[0-9]*$')"
  TG_CALLS=$((TG_CALLS + ${sent:-0}))
  settle $((FDS_BASE + 16))
  echo "RSS phase=open proto=h1 n=$n ${line#READY } upstream_open=$up rss_before_kb=$RSS_BASE rss_kb=$rss hwm_kb=$hwm fds=$fds rss_after_kb=$(status_kb "$TG_PID" VmRSS) calls=${sent:-0}" >> "$RESULTS"
  log "  h1 n=$n: ${line:-no READY line} upstream_open=$up RSS ${rss} kB (fresh ${RSS_BASE}) fds=$fds"
}
open_h2() {  # open_h2 N: N streams multiplexed over 100 h2c connections (h2load)
  local n="$1" up0 up i c=100 m
  m=$(( (n + c - 1) / c ))
  fresh_tg; up0="$(fake_requests "$FT_URL")"
  printf '%s' "$OPEN_BODY" > "$RUN/open-body.json"
  "${LOAD_PIN[@]}" h2load -n "$n" -c "$c" -m "$m" -t 1 -d "$RUN/open-body.json" \
    -H 'content-type: application/json' -H "authorization: Bearer $JWT" "$TG_URL/openai$OAI" \
    > "$RUN/open-h2-$n.out" 2>&1 &
  local cp=$!
  PIDS+=("$cp")
  for i in $(seq 1 1800); do
    up=$(( $(fake_requests "$FT_URL") - up0 ))
    [ "$up" -ge "$n" ] && break
    kill -0 "$cp" 2>/dev/null || break
    sleep 0.1
  done
  sleep 1
  local rss hwm fds
  rss="$(status_kb "$TG_PID" VmRSS)"; hwm="$(status_kb "$TG_PID" VmHWM)"; fds="$(nfds "$TG_PID")"
  up=$(( $(fake_requests "$FT_URL") - up0 ))
  # SIGTERM: a background job of a non-interactive shell ignores SIGINT.
  kill -TERM "$cp" 2>/dev/null; wait "$cp" 2>/dev/null
  # Every stream h2load started reached the upstream through Tollgate: count those.
  TG_CALLS=$((TG_CALLS + up))
  settle $((FDS_BASE + 16))
  echo "RSS phase=open proto=h2c n=$n ok=$up failed=$((n - up)) conns=$c upstream_open=$up rss_before_kb=$RSS_BASE rss_kb=$rss hwm_kb=$hwm fds=$fds rss_after_kb=$(status_kb "$TG_PID" VmRSS) calls=$up" >> "$RESULTS"
  log "  h2c n=$n over $c connections: upstream_open=$up RSS ${rss} kB (fresh ${RSS_BASE}) fds=$fds"
}
if step rss; then
  sleep 2
  RSS_IDLE="$(status_kb "$TG_PID" VmRSS)"
  echo "RSS phase=idle rss_kb=$RSS_IDLE hwm_kb=$(status_kb "$TG_PID" VmHWM) fds=$(nfds "$TG_PID")" >> "$RESULTS"
  log "== c) RSS: idle after the load steps ${RSS_IDLE} kB; open streams [$OPEN_STREAMS], each on a fresh process"
  for n in $OPEN_STREAMS; do
    # HTTP/1.1 needs two descriptors per admitted stream in Tollgate (client + upstream socket)
    # and one per refused one: past server.max_in_flight (shipped 4096) calls are refused at once
    # with 503, which the probe counts and closes.
    admitted=$(( n < MAX_IN_FLIGHT ? n : MAX_IN_FLIGHT ))
    if [ $((n + admitted + 256)) -le "$FD_LIMIT" ]; then
      open_h1 "$n"
    else
      h1n=$(( (FD_LIMIT - 256 - admitted) / 100 * 100 ))
      echo "NOTE open files limit $FD_LIMIT (hard, not raisable here) is too low for $n HTTP/1.1 streams (2 sockets each in Tollgate): measured $h1n over HTTP/1.1 and $n over h2c (100 connections)" >> "$RESULTS"
      log "  fd limit $FD_LIMIT < 2x$n: HTTP/1.1 at $h1n, and $n multiplexed over h2c"
      open_h1 "$h1n"
      if command -v h2load >/dev/null; then open_h2 "$n"; else log "  h2load missing: h2c step skipped"; fi
    fi
  done
fi

# ------------------------------------------------------------------ d: rows = calls
log "== d) SIGTERM tollgate; rows written vs calls made"
sleep 1
UPSTREAM_TOTAL="$(fake_requests "$FT_URL")"
UPSTREAM_STATS="$(curl -s -m 2 "$FT_URL/__fake/stats")"
stop_tg
ROWS_INFO="$(python3 - "$RUN/tollgate.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
n = db.execute("select count(*) from token_usage").fetchone()[0]
by = ",".join(f"{o}:{c}" for o, c in db.execute("select outcome, count(*) from token_usage group by outcome order by 2 desc"))
src = ",".join(f"{o}:{c}" for o, c in db.execute("select usage_source, count(*) from token_usage group by usage_source order by 2 desc"))
print(f"rows={n} outcomes={by or '-'} usage_source={src or '-'}")
PY
)"
ROWS="$(echo "$ROWS_INFO" | grep -o 'rows=[0-9]*' | grep -o '[0-9]*')"
DROPPED="$(grep -c 'usage row dropped' "$RUN/tollgate.log")"
LEAKS="$(echo "$UPSTREAM_STATS" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["leaks"], d["unauthorized"])')"
VERDICT=FAIL
[ "${ROWS:-x}" = "$TG_CALLS" ] && [ -z "$(echo "$TG_EXITS" | tr -d '0,')" ] && VERDICT=PASS
echo "ROWS rows=${ROWS:-?} calls=$TG_CALLS upstream_received=$UPSTREAM_TOTAL leaks_unauthorized=${LEAKS// /\/} dropped_logged=$DROPPED tollgate_exits=$TG_EXITS tollgate_starts=$TG_STARTS verdict=$VERDICT ${ROWS_INFO#rows=* }" >> "$RESULTS"
log "rows=${ROWS:-?} calls=$TG_CALLS upstream_received=$UPSTREAM_TOTAL exits=$TG_EXITS: $VERDICT"

cleanup
python3 "$HERE/report.py" "$RESULTS" "$RUN/env.txt" > "$RUN/report.md" || log "report.py failed"
echo "Raw results, logs and configs: $RUN" >> "$RUN/report.md"
mkdir -p "$RESULTS_DIR" && cp "$RUN/report.md" "$RESULTS_DIR/latest.md" && cp "$RESULTS" "$RESULTS_DIR/latest-results.txt"
cat "$RUN/report.md"

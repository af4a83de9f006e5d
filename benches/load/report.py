#!/usr/bin/env python3
"""Turn benches/load/run.sh's results.txt into one markdown report (stdout).

Usage: report.py RESULTS_TXT [ENV_TXT]

Every figure of a step that ran in several rounds is the median over the rounds; added latency
is median(tollgate) - median(direct). CPU µs per call = (utime+stime ticks / CLK_TCK) over the
measured window / requests completed in it.
"""
import statistics
import sys
from collections import defaultdict

# Issue 3 targets (those this run can check; the nginx ratios come from peers.sh).
CPU_PER_CALL_US = 22.0
ADDED_P50_C1_US = 50.0
ADDED_P99_C1_US = 250.0
ADDED_TTFC_US = 100.0
RSS_1000_MIB = 64.0


def parse(path):
    rows = []
    for line in open(path, encoding="utf-8", errors="replace"):
        line = line.rstrip("\n")
        kind, _, rest = line.partition(" ")
        if kind in ("NOTE", "PERFLINE"):
            rows.append({"kind": kind, "text": rest})
            continue
        d = {"kind": kind}
        for tok in rest.split():
            k, eq, v = tok.partition("=")
            if eq:
                # WRKRESULT lines carry the step's own kind= (ns or stream): keep it apart.
                d["wkind" if k == "kind" else k] = v
        rows.append(d)
    return rows


def num(x, default=float("nan")):
    try:
        return float(x)
    except (TypeError, ValueError):
        return default


def med(xs):
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def f(x, nd=0, sign=False):
    if x is None or x != x:
        return "–"
    s = f"{x:+,.{nd}f}" if sign else f"{x:,.{nd}f}"
    return s


def verdict(ok):
    if ok is None:
        return "n/a"
    return "**met**" if ok else "**not met**"


def wrk_summary(rows, kind):
    """{conns: {target: dict of medians}}"""
    by = defaultdict(lambda: defaultdict(list))
    out = defaultdict(dict)
    for r in rows:
        if r["kind"] != "WRKRESULT" or r.get("wkind") != kind:
            continue
        by[int(r["conns"])][r["target"]].append(r)
    for c, targets in by.items():
        for t, runs in targets.items():
            m = {}
            for key in ("rps", "p50_us", "p90_us", "p99_us", "p999_us", "max_us"):
                m[key] = med([num(x[key]) for x in runs])
            hz = num(runs[0].get("clk_tck"), 100.0)
            cpu, up, other, steal, store, csw, errs = [], [], [], [], [], [], 0
            for x in runs:
                req = num(x.get("requests"), 0)
                wall = num(x.get("wall_s"), 0)
                st, ut = num(x.get("sut_ticks"), 0), num(x.get("upstream_ticks"), 0)
                if req > 0:
                    cpu.append(st / hz / req * 1e6)
                    store.append(num(x.get("store_ticks"), 0) / hz / req * 1e6)
                    csw.append(num(x.get("sut_ctxsw"), float("nan")) / req)
                    if t == "tollgate":
                        up.append(ut / hz / req * 1e6)
                if wall > 0:
                    other.append(max(0.0, num(x.get("cpu0_busy_ticks"), 0) - st - ut) / hz / wall * 100)
                    steal.append(num(x.get("cpu0_steal_ticks"), 0) / hz / wall * 100)
                errs += sum(int(num(x.get(k), 0)) for k in
                            ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
            m["cpu_us"] = med(cpu)
            m["up_cpu_us"] = med(up)
            m["store_us"] = med(store)
            m["csw"] = med(csw)
            m["other_pct"] = med(other)
            m["steal_pct"] = med(steal)
            m["errors"] = errs
            m["rounds"] = len(runs)
            m["rps_all"] = [num(x["rps"]) for x in runs]
            out[c][t] = m
    return out


def main():
    rows = parse(sys.argv[1])

    env = open(sys.argv[2]).read().strip() if len(sys.argv) > 2 else ""
    out = ["# Tollgate load benchmark", ""]
    if env:
        out += ["```", env, "```", ""]
    targets = []  # (target, measured, verdict)

    ns = wrk_summary(rows, "ns")
    st = wrk_summary(rows, "stream")

    def wrk_table(title, data, unit):
        if not data:
            return
        out.append(f"## {title}")
        out.append("")
        out.append(f"| conns | direct {unit}/s | tollgate {unit}/s | tollgate/direct | direct p50 µs | tollgate p50 µs | added p50 µs "
                   "| direct p99 µs | tollgate p99 µs | added p99 µs | Tollgate CPU µs/call | of which SQLite writer thread "
                   "| Tollgate context switches/call | fake-behind CPU µs/call "
                   "| direct (fake) CPU µs/call | CPU0 used by others % | errors | rounds |")
        out.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for c in sorted(data):
            d, t = data[c].get("direct", {}), data[c].get("tollgate", {})
            g = lambda m, k: m.get(k, float("nan"))  # noqa: E731
            ratio = g(t, "rps") / g(d, "rps") if g(d, "rps") else float("nan")
            out.append(
                f"| {c} | {f(g(d, 'rps'))} | {f(g(t, 'rps'))} | {f(ratio, 3)} | {f(g(d, 'p50_us'))} | {f(g(t, 'p50_us'))} "
                f"| {f(g(t, 'p50_us') - g(d, 'p50_us'), 0, True)} | {f(g(d, 'p99_us'))} | {f(g(t, 'p99_us'))} "
                f"| {f(g(t, 'p99_us') - g(d, 'p99_us'), 0, True)} | {f(g(t, 'cpu_us'), 1)} | {f(g(t, 'store_us'), 1)} "
                f"| {f(g(t, 'csw'), 2)} | {f(g(t, 'up_cpu_us'), 1)} "
                f"| {f(g(d, 'cpu_us'), 1)} | {f(max(g(d, 'other_pct'), g(t, 'other_pct')), 0)} "
                f"| {d.get('errors', 0)}/{t.get('errors', 0)} | {t.get('rounds', 0)} |")
        out.append("")

    wrk_table("a) Non-streaming chat (wrk, keep-alive)", ns, "req")
    wrk_table("b) Streaming chat throughput (wrk, 50-chunk SSE answers, no chunk delay)", st, "streams")

    if ns:
        c32 = ns.get(32, {}).get("tollgate", {})
        cpu = c32.get("cpu_us", float("nan"))
        targets.append(("Tollgate CPU per non-streaming call ≤ 22 µs (c=32)", f"{f(cpu, 1)} µs",
                        verdict(cpu <= CPU_PER_CALL_US) if cpu == cpu else "n/a"))
        for c in sorted(ns):
            if c == 32:
                continue
            v = ns[c].get("tollgate", {}).get("cpu_us", float("nan"))
            targets.append((f"  (same, c={c}, for reference)", f"{f(v, 1)} µs",
                            verdict(v <= CPU_PER_CALL_US) if v == v else "n/a"))
        c1 = ns.get(1, {})
        if c1.get("direct") and c1.get("tollgate"):
            a50 = c1["tollgate"]["p50_us"] - c1["direct"]["p50_us"]
            a99 = c1["tollgate"]["p99_us"] - c1["direct"]["p99_us"]
            targets.append(("Added latency at 1 connection, p50 ≤ 50 µs", f"{f(a50, 0, True)} µs", verdict(a50 <= ADDED_P50_C1_US)))
            targets.append(("Added latency at 1 connection, p99 ≤ 250 µs", f"{f(a99, 0, True)} µs", verdict(a99 <= ADDED_P99_C1_US)))

    probes = [r for r in rows if r["kind"] == "PROBE"]
    if probes:
        out.append("## b) Sequential streams: time to head and to first event (medians, µs)")
        out.append("")
        out.append("| target | ok/failed | head p50 | head p90 | first event p50 | first event p90 | whole stream p50 | added head (paired median) | added first event (paired median) |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for p in probes:
            out.append(f"| {p.get('target')} | {p.get('ok')}/{p.get('failed')} | {f(num(p.get('head_p50_us')))} | {f(num(p.get('head_p90_us')))} "
                       f"| {f(num(p.get('first_p50_us')))} | {f(num(p.get('first_p90_us')))} | {f(num(p.get('total_p50_us')))} "
                       f"| {f(num(p.get('head_paired_delta_p50_us')), 0, True)} | {f(num(p.get('first_paired_delta_p50_us')), 0, True)} |")
        out.append("")
        tp = [p for p in probes if p.get("target") == "tollgate"]
        if tp:
            d = num(tp[0].get("first_paired_delta_p50_us"))
            targets.append(("Time to first streamed chunk ≤ direct + 100 µs", f"{f(d, 0, True)} µs (paired median)",
                            verdict(d <= ADDED_TTFC_US) if d == d else "n/a"))

    held = [r for r in rows if r["kind"] == "HELDBACK"]
    if held:
        out.append("## b) Held-back check (events 10 ms apart upstream; lateness vs the direct median arrival of the same event)")
        out.append("")
        out.append("| case | target | streams | events | median lateness µs | worst per-event median lateness µs | max lateness µs | arrived after the next event's emission | glued to the next event |")
        out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        bad = 0
        for h in held:
            out.append(f"| {h.get('tag')} | {h.get('target')} | {h.get('ok')} | {h.get('events', '–')} | {f(num(h.get('p50_late_us')), 0, True)} "
                       f"| {f(num(h.get('max_median_late_us')), 0, True)} | {f(num(h.get('max_late_us')), 0, True)} | {h.get('held_back', '–')} | {h.get('glued', '–')} |")
            if h.get("target") == "tollgate":
                hb = h.get("held_back", "1/1").split("/")[0]
                bad += int(num(hb, 1)) + int(num(h.get("glued"), 1))
                if int(num(h.get("ok"), 0)) == 0:
                    bad += 1
        out.append("")
        targets.append(("No chunk waits for the next one", "held back + glued = %d" % bad, verdict(bad == 0)))

    rss = [r for r in rows if r["kind"] == "RSS"]
    steps = [r for r in rows if r["kind"] == "WRKRESULT" and r.get("target") == "tollgate" and num(r.get("tg_rss_kb"), 0) > 0]
    if steps:
        out.append("Tollgate VmRSS after each load step (MiB): " + ", ".join(
            f"{r.get('wkind')} c={r.get('conns')} r{r.get('round')}: {f(num(r.get('tg_rss_kb')) / 1024, 1)}" for r in steps))
        out.append("")
    if rss:
        out.append("## c) Tollgate memory")
        out.append("")
        out.append("| state | streams open (upstream) | VmRSS MiB | VmHWM MiB | per open stream KiB ((RSS − fresh-process RSS) / streams open) | RSS after closing MiB | Tollgate fds |")
        out.append("|---|---:|---:|---:|---:|---:|---:|")
        mib = lambda kb: num(kb) / 1024  # noqa: E731
        for r in rss:
            if r.get("phase") in ("fresh", "idle"):
                label = "idle, just started" if r["phase"] == "fresh" else "idle, after the load steps"
                out.append(f"| {label} | 0 | {f(mib(r.get('rss_kb')), 1)} | {f(mib(r.get('hwm_kb')), 1)} | – | – | {r.get('fds')} |")
                continue
            n = int(num(r.get("n"), 0))
            held = num(r.get("upstream_open"), 0) or n
            per = (num(r.get("rss_kb")) - num(r.get("rss_before_kb"))) / held if held else float("nan")
            refused = f", refused {r.get('refused')} ({r.get('refused_statuses')})" if num(r.get("refused"), 0) else ""
            out.append(f"| {n:,} streams over {r.get('proto')} (ok {r.get('ok')}{refused}, failed {r.get('failed')}) | {r.get('upstream_open')} "
                       f"| {f(mib(r.get('rss_kb')), 1)} | {f(mib(r.get('hwm_kb')), 1)} | {f(per, 1)} | {f(mib(r.get('rss_after_kb')), 1)} | {r.get('fds')} |")
            if r.get("proto") == "h1" and n == 1000:
                v = mib(r.get("rss_kb"))
                targets.append(("RSS ≤ 64 MiB with 1,000 open streams", f"{f(v, 1)} MiB", verdict(v <= RSS_1000_MIB)))
            if r.get("proto") in ("h1", "h2c") and n >= 5000:
                targets.append((f"RSS bounded under {n:,} concurrent slow calls over {r.get('proto')} ({r.get('upstream_open')} held, the rest refused by server.max_in_flight)", f"{f(per, 1)} KiB per open stream, {f(mib(r.get('rss_kb')), 1)} MiB total", "reported"))
        out.append("")

    rw = [r for r in rows if r["kind"] == "ROWS"]
    if rw:
        r = rw[-1]
        out.append("## d) Rows written = calls made")
        out.append("")
        out.append("| rows in token_usage | calls made (wrk sent incl. warm-up + probes + open streams) | calls received by the fake behind Tollgate | fake: leaks/unauthorized | rows dropped (log) | Tollgate exit codes after SIGTERM | verdict |")
        out.append("|---:|---:|---:|---:|---:|---:|---|")
        out.append(f"| {r.get('rows')} | {r.get('calls')} | {r.get('upstream_received')} | {r.get('leaks_unauthorized')} | {r.get('dropped_logged')} | {r.get('tollgate_exits')} | **{r.get('verdict')}** |")
        out.append("")
        out.append(f"Outcomes: {r.get('outcomes', '-')}; usage_source: {r.get('usage_source', '-')}")
        out.append("")
        rows_n, calls_n, up_n = num(r.get("rows")), num(r.get("calls")), num(r.get("upstream_received"))
        if rows_n < up_n:
            out.append(f"**{int(up_n - rows_n)} calls reached the upstream through Tollgate but have no row** "
                       "(calls the client abandoned before the response head — e.g. wrk stopping with requests "
                       "in flight — are not recorded).")
            out.append("")
        if calls_n > up_n:
            out.append(f"{int(calls_n - up_n)} requests written by the clients never reached the upstream "
                       "(the client closed first).")
            out.append("")
        targets.append(("Rows written = calls made", f"{r.get('rows')} rows / {r.get('calls')} calls", "**met**" if r.get("verdict") == "PASS" else "**not met**"))

    targets.append(("Throughput vs nginx (c=32 ≥ 0.9×, c=256 ≥ 0.8×, streaming ≥ 1.0×), p99 at 256 ≤ 1.5× nginx", "see benches/load/peers.sh (ROUNDS=N)", "n/a here"))
    out.append("## Targets (issue 3) checked by this run")
    out.append("")
    out.append("| target | measured | verdict |")
    out.append("|---|---|---|")
    for t in targets:
        out.append(f"| {t[0]} | {t[1]} | {t[2]} |")
    out.append("")

    perf = [r for r in rows if r["kind"] in ("PERF", "PERFLINE")]
    if perf:
        out.append("## Profile (perf record -e cpu-clock --call-graph dwarf, Tollgate only)")
        out.append("")
        for r in perf:
            if r["kind"] == "PERF":
                out.append("")
                out.append(f"{r.get('name')} at c={r.get('conns')}:")
                out.append("")
            else:
                out.append("    " + r["text"].strip())
        out.append("")

    notes = [r for r in rows if r["kind"] == "NOTE"]
    if notes:
        out.append("## Notes")
        out.append("")
        for n in notes:
            out.append(f"- {n['text']}")
        out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main()

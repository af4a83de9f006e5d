#!/usr/bin/env python3
"""Ratios ours/nginx from one or more run-peers.sh result directories (benches/load/peers.sh).

Usage: peers_ratio.py DIR [DIR ...]   (each DIR holds a results.txt written by run-peers.sh)

Per scenario and per directory (= round), the ratio is taken inside that round (same mock
process, same minute); the table shows the median over the rounds, and the spread.
"""
import statistics
import sys
from pathlib import Path

# Issue 3 targets: (minimum req/s ratio ours/nginx, maximum p99 ratio ours/nginx)
TARGETS = {
    "ns-c32": (0.9, None),
    "ns-c256": (0.8, 1.5),
    "stream-c32": (1.0, None),
}


def parse(path):
    wrk, strm = {}, {}
    for line in open(path, encoding="utf-8", errors="replace"):
        kind, _, rest = line.strip().partition(" ")
        if kind not in ("WRKRESULT", "STREAMRESULT"):
            continue
        d = dict(tok.partition("=")[::2] for tok in rest.split() if "=" in tok)
        key = (d.get("target"), d.get("scenario"))
        (wrk if kind == "WRKRESULT" else strm)[key] = d
    return wrk, strm


def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def med(xs):
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def f(x, nd=2):
    return "–" if x != x else f"{x:,.{nd}f}"


def main(dirs):
    rounds = []
    for d in dirs:
        p = Path(d) / "results.txt"
        if p.exists():
            rounds.append(parse(p))
    if not rounds:
        print("no results.txt found", file=sys.stderr)
        return 1
    scen = []
    for wrk, _ in rounds:
        for (t, s) in wrk:
            if s not in scen:
                scen.append(s)
    out = [f"## Tollgate (ours) vs nginx, {len(rounds)} round(s), ratios taken within each round", ""]
    out.append("| scenario | ours/nginx req/s (median) | spread (min–max) | p99 ours/nginx (median) | ours req/s | nginx req/s "
               "| ours p99 ms | nginx p99 ms | ours CPU µs/req | nginx CPU µs/req | errors ours/nginx | target | verdict |")
    out.append("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|")
    for s in scen:
        ratios, p99r, o_rps, n_rps, o_p99, n_p99, o_cpu, n_cpu = [], [], [], [], [], [], [], []
        errs = [0, 0]
        for wrk, _ in rounds:
            o, n = wrk.get(("ours", s)), wrk.get(("nginx", s))
            if not o or not n:
                continue
            ratios.append(num(o["rps"]) / num(n["rps"]))
            p99r.append(num(o["p99_ms"]) / num(n["p99_ms"]))
            o_rps.append(num(o["rps"])); n_rps.append(num(n["rps"]))
            o_p99.append(num(o["p99_ms"])); n_p99.append(num(n["p99_ms"]))
            o_cpu.append(num(o.get("gw_cpu")) / 100 / num(o["rps"]) * 1e6)
            n_cpu.append(num(n.get("gw_cpu")) / 100 / num(n["rps"]) * 1e6)
            for i, x in enumerate((o, n)):
                errs[i] += sum(int(num(x.get(k)) or 0) for k in
                               ("err_connect", "err_read", "err_write", "err_status", "err_timeout") if num(x.get(k)) == num(x.get(k)))
        if not ratios:
            continue
        r, pr = med(ratios), med(p99r)
        tgt, verdict = TARGETS.get(s, (None, None)), "–"
        tdesc = []
        if tgt[0] is not None:
            tdesc.append(f"≥ {tgt[0]}×")
        if tgt[1] is not None:
            tdesc.append(f"p99 ≤ {tgt[1]}×")
        if tdesc:
            ok = (tgt[0] is None or r >= tgt[0]) and (tgt[1] is None or pr <= tgt[1])
            verdict = "**met**" if ok else "**not met**"
        out.append(f"| {s} | {f(r, 3)} | {f(min(ratios), 3)}–{f(max(ratios), 3)} | {f(pr, 2)} | {f(med(o_rps), 0)} | {f(med(n_rps), 0)} "
                   f"| {f(med(o_p99))} | {f(med(n_p99))} | {f(med(o_cpu), 1)} | {f(med(n_cpu), 1)} | {errs[0]}/{errs[1]} "
                   f"| {', '.join(tdesc) or '–'} | {verdict} |")
    out.append("")
    sscen = []
    for _, strm in rounds:
        for (t, s) in strm:
            if s not in sscen:
                sscen.append(s)
    if sscen:
        out.append("| sequential streams | ours first chunk p50 ms | nginx first chunk p50 ms | ours − nginx µs (median of rounds) "
                   "| ours total p50 ms | nginx total p50 ms | usage reached client (ours) |")
        out.append("|---|---:|---:|---:|---:|---:|---|")
        for s in sscen:
            oc, nc, d, ot, nt, us = [], [], [], [], [], []
            for _, strm in rounds:
                o, n = strm.get(("ours", s)), strm.get(("nginx", s))
                if not o or not n:
                    continue
                oc.append(num(o["ttfc_p50_ms"])); nc.append(num(n["ttfc_p50_ms"]))
                d.append((num(o["ttfc_p50_ms"]) - num(n["ttfc_p50_ms"])) * 1000)
                ot.append(num(o["total_p50_ms"])); nt.append(num(n["total_p50_ms"]))
                us.append(o.get("usage_seen", "?"))
            if oc:
                out.append(f"| {s} | {f(med(oc), 3)} | {f(med(nc), 3)} | {f(med(d), 0)} | {f(med(ot), 1)} | {f(med(nt), 1)} | {' '.join(us)} |")
        out.append("")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

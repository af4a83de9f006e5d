#!/usr/bin/env python3
"""Sequential streaming probe for benches/load/run.sh (Python 3 stdlib only, raw sockets).

Streams are made one at a time over one keep-alive HTTP/1.1 connection per target, the targets
alternating stream by stream (direct, tollgate, direct, tollgate, ...) so that a noisy moment
hits both alike. Every recv() is timestamped the moment it returns; an SSE event's arrival time
is the time of the recv() that completed it (its blank line).

Modes

  ttfc    time to the response head and to the first `data:` event, and total time, per
          target (median and p90 over -n streams), plus the median of the paired differences
          against the first (reference) target.

  chunks  the held-back check. With the upstream emitting events E ms apart, record every
          event's arrival time (from the request's send). For each event index i, R_i is the
          reference (direct) median arrival. For every other target and every stream:
            lateness_i = arrival_i - R_i
            held back  = arrival_i > R_{i+1}  (it reached the client after the next event was
                         emitted upstream, i.e. it waited for the next one)
            glued      = events i and i+1 completed by the same recv() (a proxy that holds an
                         event until the next one shows up delivers them together)
          Pairs that the upstream itself sends together (same recv() in most reference streams,
          e.g. the finish, usage and [DONE] events) are left out of both counts.

Output: one line per target, `PROBE ...` (ttfc) or `HELDBACK ...` (chunks), key=value, in µs.

Targets: --target NAME BASE_URL PATH [HEADER ...] (repeatable; the first is the reference).
Bodies:  --body BODY (all targets) and --body-for NAME BODY (one target).
--drop-usage NAME drops usage-only events (`"choices":[]` with a usage object) from NAME's
streams before comparing: Tollgate asks the upstream for usage when the client did not, and
removes that event; so the reference for that case is a direct stream that asked for usage,
with its usage event dropped (the upstream then paces events exactly as for Tollgate).
"""
import argparse
import socket
import statistics
import sys
import time
from urllib.parse import urlsplit

now_ns = time.perf_counter_ns


class StreamError(Exception):
    pass


class Conn:
    def __init__(self, host, port, timeout):
        self.addr = (host, port)
        self.timeout = timeout
        self.sock = None
        self.sent = 0  # requests written: the calls made

    def connect(self):
        self.close()
        s = socket.create_connection(self.addr, timeout=self.timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = s

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def stream(self, request):
        """Send one request; return (status, t0, t_head, events[(t, payload)], t_end), ns."""
        if self.sock is None:
            self.connect()
        sock = self.sock
        recvs = []  # (t, bytes)
        t0 = now_ns()
        sock.sendall(request)
        self.sent += 1
        buf = b""
        # --- head
        while True:
            data = sock.recv(65536)
            t = now_ns()
            if not data:
                raise StreamError("connection closed before the response head")
            buf += data
            i = buf.find(b"\r\n\r\n")
            if i >= 0:
                t_head = t
                head, rest = buf[:i].decode("latin-1"), buf[i + 4:]
                break
        lines = head.split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        chunked = "chunked" in hdrs.get("transfer-encoding", "").lower()
        length = int(hdrs["content-length"]) if "content-length" in hdrs and not chunked else None
        close_after = hdrs.get("connection", "").lower() == "close"

        # --- body, decoded incrementally; SSE events split on a blank line (LF or CRLF)
        events = []
        sse = b""
        raw = rest  # undecoded bytes (chunked framing)
        t_last = t_head
        got = 0
        state = "size"  # chunked: size | data | crlf | trailer | done
        need = 0
        done = False

        def feed_sse(piece, t):
            nonlocal sse
            sse += piece
            while True:
                a = sse.find(b"\n\n")
                b = sse.find(b"\r\n\r\n")
                cands = [(a, 2), (b, 4)]
                cands = [(p, n) for p, n in cands if p >= 0]
                if not cands:
                    return
                p, n = min(cands)
                ev, sse = sse[:p], sse[p + n:]
                payload = None
                for ln in ev.replace(b"\r\n", b"\n").split(b"\n"):
                    if ln.startswith(b"data:"):
                        payload = ln[5:].strip() if payload is None else payload + b"\n" + ln[5:].strip()
                if payload is not None:
                    events.append((t, payload))

        while True:
            # decode what we have
            if chunked:
                progressed = True
                while progressed and not done:
                    progressed = False
                    if state == "size":
                        j = raw.find(b"\r\n")
                        if j >= 0:
                            need = int(raw[:j].split(b";")[0], 16)
                            raw = raw[j + 2:]
                            state = "data" if need > 0 else "trailer"
                            progressed = True
                    elif state == "data":
                        if raw:
                            take = raw[:need]
                            raw = raw[len(take):]
                            need -= len(take)
                            feed_sse(take, t_last)
                            if need == 0:
                                state = "crlf"
                            progressed = True
                    elif state == "crlf":
                        if len(raw) >= 2:
                            raw = raw[2:]
                            state = "size"
                            progressed = True
                    elif state == "trailer":
                        if raw.startswith(b"\r\n"):
                            done = True
                        elif raw.find(b"\r\n\r\n") >= 0:
                            done = True
            else:
                if raw:
                    got += len(raw)
                    feed_sse(raw, t_last)
                    raw = b""
                if length is not None and got >= length:
                    done = True
            if done:
                break
            data = sock.recv(65536)
            t_last = now_ns()
            if not data:
                if length is None and not chunked:
                    break
                self.close()
                raise StreamError("connection closed mid-body")
            raw += data
        t_end = t_last
        if close_after or (length is None and not chunked):
            self.close()
        return status, t0, t_head, events, t_end


def build_request(host, port, path, headers, body):
    b = body.encode()
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
             f"Content-Length: {len(b)}", "Accept: text/event-stream"]
    for h in headers:
        lines.append(h)
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + b


def is_usage_only(payload):
    return b'"choices":[]' in payload and b'"usage":{' in payload


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = max(0, min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1)))))
    return xs[k]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["ttfc", "chunks"])
    ap.add_argument("--target", nargs="+", action="append", required=True,
                    metavar="NAME URL PATH [HEADER]", help="NAME BASE_URL PATH [\"Name: value\" ...]")
    ap.add_argument("--body", required=True)
    ap.add_argument("--body-for", nargs=2, action="append", default=[], metavar=("NAME", "BODY"))
    ap.add_argument("--drop-usage", action="append", default=[], metavar="NAME")
    ap.add_argument("-n", type=int, default=50, help="streams per target")
    ap.add_argument("--warmup", type=int, default=3, help="unrecorded streams per target first")
    ap.add_argument("--tag", default="probe")
    ap.add_argument("--timeout", type=float, default=30.0)
    a = ap.parse_args()

    bodies = dict(a.body_for)
    targets = []
    for spec in a.target:
        if len(spec) < 3:
            ap.error("--target needs NAME URL PATH [HEADER ...]")
        name, url, path, hdrs = spec[0], spec[1], spec[2], spec[3:]
        u = urlsplit(url)
        host, port = u.hostname, u.port or 80
        req = build_request(host, port, path, hdrs, bodies.get(name, a.body))
        targets.append(dict(name=name, conn=Conn(host, port, a.timeout), req=req, runs=[], failed=0,
                            drop=name in a.drop_usage))

    for i in range(a.warmup + a.n):
        for t in targets:
            try:
                st, t0, th, evs, te = t["conn"].stream(t["req"])
            except (OSError, StreamError, ValueError) as e:
                print(f"probe {t['name']}: {e!r}", file=sys.stderr)
                t["conn"].close()
                if i >= a.warmup:
                    t["failed"] += 1
                continue
            if i < a.warmup:
                continue
            if st != 200 or not evs:
                print(f"probe {t['name']}: status {st}, {len(evs)} events", file=sys.stderr)
                t["failed"] += 1
                continue
            if t["drop"]:
                evs = [e for e in evs if not is_usage_only(e[1])]
            t["runs"].append(dict(t0=t0, head=th - t0, first=evs[0][0] - t0, total=te - t0,
                                  arr=[e[0] - t0 for e in evs], ts=[e[0] for e in evs]))
    for t in targets:
        t["conn"].close()

    us = lambda ns: ns / 1000.0  # noqa: E731
    ref = targets[0]
    if a.mode == "ttfc":
        for t in targets:
            runs = t["runs"]
            ok = len(runs)
            line = f"PROBE tag={a.tag} target={t['name']} ok={ok} failed={t['failed']} sent={t['conn'].sent}"
            if ok:
                for key in ("head", "first", "total"):
                    xs = [us(r[key]) for r in runs]
                    line += f" {key}_p50_us={statistics.median(xs):.1f} {key}_p90_us={pct(xs, 90):.1f}"
                line += f" events={statistics.median(len(r['arr']) for r in runs):.0f}"
                if t is not ref and ref["runs"]:
                    m = min(len(runs), len(ref["runs"]))
                    for key in ("head", "first"):
                        d = [us(runs[k][key] - ref["runs"][k][key]) for k in range(m)]
                        line += f" {key}_paired_delta_p50_us={statistics.median(d):.1f}"
            print(line, flush=True)
        return

    # chunks mode
    if not ref["runs"]:
        for t in targets:
            print(f"HELDBACK tag={a.tag} target={t['name']} ok={len(t['runs'])} failed={t['failed']} sent={t['conn'].sent}")
        return
    nev = min(len(r["arr"]) for r in ref["runs"])
    R = [statistics.median(r["arr"][i] for r in ref["runs"]) for i in range(nev)]
    gaps = [R[i + 1] - R[i] for i in range(nev - 1)]
    # Pairs (i, i+1) the upstream itself sends together (same recv in most reference streams):
    # not evidence of holding back when they arrive together through the gateway too.
    ref_glued = set()
    for i in range(nev - 1):
        together = sum(1 for r in ref["runs"] if r["ts"][i + 1] == r["ts"][i])
        if together * 2 > len(ref["runs"]):
            ref_glued.add(i)
    for t in targets:
        runs = t["runs"]
        late_by_i = [[] for _ in range(nev)]
        held = 0
        glued = 0
        mism = 0
        checked = 0
        for r in runs:
            if len(r["arr"]) != nev:
                mism += 1
            m = min(nev, len(r["arr"]))
            for i in range(m):
                late_by_i[i].append(r["arr"][i] - R[i])
                if i + 1 < nev and i not in ref_glued:
                    checked += 1
                    if i not in ref_glued and r["arr"][i] > R[i + 1]:
                        held += 1
                if i + 1 < m and i not in ref_glued and r["ts"][i + 1] == r["ts"][i]:
                    glued += 1
        med_late = [statistics.median(x) for x in late_by_i if x]
        all_late = [v for x in late_by_i for v in x]
        line = (f"HELDBACK tag={a.tag} target={t['name']} ok={len(runs)} failed={t['failed']} sent={t['conn'].sent} events={nev} "
                f"ref_gap_p50_us={us(statistics.median(gaps)) if gaps else float('nan'):.0f} "
                f"max_median_late_us={us(max(med_late)) if med_late else float('nan'):.1f} "
                f"p50_late_us={us(statistics.median(all_late)) if all_late else float('nan'):.1f} "
                f"max_late_us={us(max(all_late)) if all_late else float('nan'):.1f} "
                f"held_back={held}/{checked} glued={glued} upstream_pairs_sent_together={len(ref_glued)} "
                f"count_mismatch={mism}")
        print(line, flush=True)


if __name__ == "__main__":
    main()

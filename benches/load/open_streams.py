#!/usr/bin/env python3
"""Hold N concurrent streaming calls open (HTTP/1.1, one connection each), for RSS measurement.

Python 3 stdlib only (asyncio, raw sockets). Opens N connections (at most --concurrency
connecting at once), sends one streaming request on each and waits for its response head and
first SSE `data:` event. An answer other than 200 (Tollgate's fast refusal under overload: 503
with Retry-After once `server.max_in_flight` calls are open) is counted as refused as soon as its
head arrives and its connection is closed. When every stream is open, refused or failed, prints

    READY ok=N refused=R failed=F sent=S secs=T

on stdout, keeps draining every stream (the upstream should pace its events far apart, e.g.
model token cd5000) until SIGTERM/SIGINT or --hold seconds, closes every socket, and prints

    CLOSED sent=S

`sent` counts the requests written, i.e. the calls made (each must become one usage row).
Raise `ulimit -n` above N first.
"""
import argparse
import asyncio
import signal
import sys
import time
from urllib.parse import urlsplit


async def one(i, host, port, request, sem, state, ready_evt, stop_evt, timeout):
    writer = None
    try:
        async with sem:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            writer.write(request)
            await writer.drain()
            state["sent"] += 1
            buf = b""
            deadline = time.monotonic() + timeout
            while True:
                head_end = buf.find(b"\r\n\r\n")
                if head_end >= 0:
                    status = buf.split(b" ", 2)[1]
                    if status != b"200":
                        state["refused"] += 1
                        state["statuses"][status] = state["statuses"].get(status, 0) + 1
                        if state["ok"] + state["failed"] + state["refused"] >= state["n"]:
                            ready_evt.set()
                        return
                    if b"data:" in buf[head_end:]:
                        break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no first event in time")
                data = await asyncio.wait_for(reader.read(65536), left)
                if not data:
                    raise ConnectionError("closed before the first event")
                buf += data
                if len(buf) > 1 << 20:
                    raise ValueError("oversized head")
        state["ok"] += 1
        if state["ok"] + state["failed"] + state["refused"] >= state["n"]:
            ready_evt.set()
        # Drain until told to stop.
        while not stop_evt.is_set():
            read = asyncio.ensure_future(reader.read(65536))
            stop = asyncio.ensure_future(stop_evt.wait())
            done, _ = await asyncio.wait({read, stop}, return_when=asyncio.FIRST_COMPLETED)
            if stop in done:
                read.cancel()
                break
            stop.cancel()
            if not read.result():
                state["ended_early"] += 1
                break
    except Exception as e:  # noqa: BLE001 - count and report, never crash the whole run
        state["failed"] += 1
        if state["failed"] <= 5:
            print(f"stream {i}: {e!r}", file=sys.stderr)
        if state["ok"] + state["failed"] + state["refused"] >= state["n"]:
            ready_evt.set()
    finally:
        if writer is not None:
            writer.transport.abort()


async def main_async(a):
    u = urlsplit(a.url)
    host, port = u.hostname, u.port or 80
    body = a.body.encode()
    lines = [f"POST {a.path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", "Accept: text/event-stream"] + a.header
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    state = dict(n=a.n, ok=0, refused=0, failed=0, sent=0, ended_early=0, statuses={})
    ready_evt, stop_evt = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_evt.set)
    sem = asyncio.Semaphore(a.concurrency)
    t0 = time.monotonic()
    tasks = [asyncio.create_task(one(i, host, port, request, sem, state, ready_evt, stop_evt, a.timeout))
             for i in range(a.n)]
    waiter = asyncio.ensure_future(ready_evt.wait())
    stopper = asyncio.ensure_future(stop_evt.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    statuses = ",".join(f"{k.decode()}:{v}" for k, v in sorted(state["statuses"].items())) or "-"
    print(f"READY ok={state['ok']} refused={state['refused']} failed={state['failed']} "
          f"sent={state['sent']} refused_statuses={statuses} secs={time.monotonic() - t0:.2f}",
          flush=True)
    try:
        await asyncio.wait_for(stop_evt.wait(), a.hold)
    except asyncio.TimeoutError:
        stop_evt.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(f"CLOSED sent={state['sent']} ok={state['ok']} refused={state['refused']} failed={state['failed']} "
          f"ended_early={state['ended_early']}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:5002")
    ap.add_argument("--path", required=True)
    ap.add_argument("--body", required=True)
    ap.add_argument("--header", action="append", default=[], help="'Name: value'")
    ap.add_argument("-n", type=int, required=True, help="concurrent streams")
    ap.add_argument("--concurrency", type=int, default=200, help="connections being opened at once")
    ap.add_argument("--hold", type=float, default=120.0, help="seconds to keep the streams open at most")
    ap.add_argument("--timeout", type=float, default=60.0, help="per stream: connect + first event")
    a = ap.parse_args()
    asyncio.run(main_async(a))


if __name__ == "__main__":
    main()

"""Shared pieces of the SDK tests: the processes (fake-upstream, tollgate), raw HTTP, the
SQLite reader, and what fake-upstream answers (its deterministic text and usage numbers)."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

OPENAI_KEY = "sk-fake-openai-REAL-KEY-0123456789"
GEMINI_KEY = "AIza-fake-gemini-REAL-KEY-0123456789"
JWT_SECRET = "sdk-test-secret-that-is-long-enough-for-hs256-0123456789"

# Default content chunks per answer (= output tokens) of the fake in this suite.
CHUNKS = 12

# USD per million tokens, chosen so that every token costs a whole number of nano-USD:
# nano-USD per token = price x 1000.
PRICES = {
    "gpt-4o-mini": {"input": 1.0, "cached_input": 0.5, "output": 2.0},
    "text-embedding-3-small": {"input": 0.02, "output": 0.0},
    "gpt-3.5-turbo-instruct": {"input": 1.5, "output": 2.0},
    "gemini-2.5-flash": {"input": 0.3, "cached_input": 0.03, "output": 2.5},
    "gemini-embedding-001": {"input": 0.15, "output": 0.0},
}
# "gpt-4o" and every other model are deliberately unpriced: their rows have cost NULL.

START_TIMEOUT = 20.0
ROW_TIMEOUT = 5.0


def binary(env: str, default: str) -> Path:
    p = Path(os.environ.get(env) or REPO / default)
    if not p.is_absolute():
        p = REPO / p
    if not p.is_file():
        pytest.exit(
            f"{p} not found: build it first (cargo build -p tollgate -p tollgate-fake-upstream), "
            f"or point ${env} at it",
            returncode=2,
        )
    return p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None, timeout=10.0,
         context=None):
    """A raw HTTP call: (status, headers, body bytes). Never raises on 4xx/5xx. `context`: the
    ssl.SSLContext for an https:// URL."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


# === the answer fake-upstream gives (see fake-upstream/README.md) ===

WORDS = ["Hello", "from", "fake-upstream:", "this", "answer", "is", "deterministic,", "one", "word",
         "per", "chunk", "and"]


def answer(n: int = CHUNKS) -> str:
    """The text of an answer of n chunks."""
    return " ".join(WORDS[i % len(WORDS)] for i in range(n))


def prompt_tokens(*texts: str) -> int:
    """Input tokens the fake reports: words of all request text + 3."""
    return sum(len(t.split()) for t in texts) + 3


def embedding_value(i: int, j: int) -> float:
    return ((i + j) % 16) / 16.0 - 0.5


def cost(model: str, input_tokens: int, cached: int, output: int) -> int | None:
    """Expected cost_nano_usd, from PRICES (longest prefix), or None when unpriced."""
    keys = [k for k in PRICES if model.startswith(k)]
    if not keys:
        return None
    p = PRICES[max(keys, key=len)]
    cached_price = p.get("cached_input", p["input"])
    pico = (input_tokens - cached) * round(p["input"] * 1e6) + cached * round(cached_price * 1e6) \
        + output * round(p["output"] * 1e6)
    return (pico + 500) // 1000


# === processes ===

class Proc:
    """A child process in its own process group, with stdout read line by line."""

    def __init__(self, args, env, name, log_dir: Path):
        self.name = name
        self.lines: "queue.Queue[str]" = queue.Queue()
        self.stderr_path = log_dir / f"{name}.stderr.log"
        self._stderr = open(self.stderr_path, "wb")
        self.p = subprocess.Popen(
            [str(a) for a in args], env=env, stdout=subprocess.PIPE, stderr=self._stderr,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.p.stdout:
            self.lines.put(line.decode(errors="replace").rstrip("\n"))

    def stderr(self, tail: int = 4000) -> str:
        self._stderr.flush()
        text = self.stderr_path.read_text(errors="replace")
        return text[-tail:] if tail else text

    def wait_line(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.p.poll() is not None and self.lines.empty():
                raise RuntimeError(f"{self.name} exited with {self.p.returncode}: {self.stderr()}")
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            if line.startswith(prefix):
                return line
        raise RuntimeError(f"{self.name} printed no '{prefix}' line in {timeout}s: {self.stderr()}")

    def stop(self, timeout=20.0) -> int:
        """SIGTERM, then wait; SIGKILL (and return -9) if it does not stop in time."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
                return -9
        return self.p.returncode


class Fake:
    def __init__(self, proc: Proc, port: int):
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def stats(self) -> dict:
        status, _, body = http("GET", f"{self.url}/__fake/stats")
        assert status == 200, body
        return json.loads(body)


class Gateway:
    def __init__(self, exe: Path, config: Path, db: Path, port: int, env: dict, proc: Proc,
                 scheme: str = "http"):
        self.exe = exe
        self.config = config
        self.db = db
        self.port = port
        self.url = f"{scheme}://127.0.0.1:{port}"
        self.openai_base = f"{self.url}/openai/v1"
        self.gemini_base = f"{self.url}/gemini"
        self.env = env
        self.proc = proc

    def token(self, sub: str, ttl: str | None = None, plan: str | None = None) -> str:
        """`tollgate token` for `sub`; `plan` goes to the configured plan claim (`--plan`)."""
        args = [str(self.exe), "token", "--sub", sub, "--config", str(self.config)]
        if ttl:
            args += ["--ttl", ttl]
        if plan:
            args += ["--plan", plan]
        out = subprocess.run(args, env=self.env, capture_output=True, timeout=30)
        assert out.returncode == 0, f"tollgate token failed ({out.returncode}): {out.stderr.decode()}"
        jwt = out.stdout.decode().strip()
        assert jwt.count(".") == 2, f"tollgate token printed no JWT: {jwt!r}"
        return jwt

    def _query(self, sql: str, args=()) -> list[dict]:
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=2.0)
        try:
            con.row_factory = sqlite3.Row
            return [dict(r) for r in con.execute(sql, args)]
        finally:
            con.close()

    def rows(self, user: str, expect: int, timeout: float = ROW_TIMEOUT) -> list[dict]:
        """The user's token_usage rows (oldest first), once exactly `expect` are there.

        The gateway writes asynchronously: poll until the count is reached, then wait a moment
        to make sure no extra row follows."""
        deadline = time.monotonic() + timeout
        got: list[dict] = []
        last_error = None
        while time.monotonic() < deadline:
            try:
                got = self._query("SELECT * FROM token_usage WHERE user_id = ? ORDER BY id", (user,))
                last_error = None
            except sqlite3.Error as e:  # not created yet, or busy
                last_error = e
            if len(got) >= expect:
                break
            time.sleep(0.05)
        if len(got) == expect and expect > 0:
            time.sleep(0.2)
            got = self._query("SELECT * FROM token_usage WHERE user_id = ? ORDER BY id", (user,))
        assert len(got) == expect, (
            f"expected {expect} token_usage row(s) for {user!r}, found {len(got)} after {timeout}s"
            + (f" (last sqlite error: {last_error})" if last_error else "")
            + f": {got}"
        )
        return got



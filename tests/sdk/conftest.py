"""Fixtures for the SDK tests: a real fake-upstream and a real Tollgate, as processes.

Builds nothing. Expects the binaries at $TOLLGATE_BIN and $FAKE_UPSTREAM_BIN (default:
target/debug/tollgate and target/debug/fake-upstream under the repository root).

Session fixtures:
  fake     fake-upstream on 127.0.0.1:<free port>, checking the provider keys and counting
           leaked client JWTs (GET /__fake/stats).
  gateway  `tollgate serve` with a generated gateway.toml pointing both providers at `fake`,
           a fresh SQLite file, and a known price table. Stopped with SIGTERM at the end of the
           session; its exit code must be 0.

Every test that talks to the gateway uses its own user id (fixture `user`), so its rows are
its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import time
import uuid

import pytest

from harness import (CHUNKS, GEMINI_KEY, JWT_SECRET, OPENAI_KEY, PRICES, START_TIMEOUT, Fake, Gateway,
                     Proc, binary, free_port, http)


@pytest.fixture(scope="session")
def fake(tmp_path_factory):
    exe = binary("FAKE_UPSTREAM_BIN", "target/debug/fake-upstream")
    env = dict(os.environ, FAKE_EXPECT_OPENAI_KEY=OPENAI_KEY, FAKE_EXPECT_GEMINI_KEY=GEMINI_KEY)
    extra = shlex.split(os.environ.get("FAKE_UPSTREAM_ARGS", ""))  # e.g. --chunked-json
    proc = Proc([exe, "--listen", "127.0.0.1:0", "--chunks", str(CHUNKS), *extra], env, "fake-upstream",
                tmp_path_factory.mktemp("fake-upstream"))
    try:
        line = proc.wait_line("listening on ", START_TIMEOUT)
        port = int(line.rsplit(":", 1)[1])
        yield Fake(proc, port)
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def gateway(fake, tmp_path_factory):
    with running_gateway(fake, tmp_path_factory.mktemp("tollgate")) as gw:
        yield gw


@contextlib.contextmanager
def running_gateway(fake, d, daily_tokens=100000000, requests_per_minute=100000, tls=None, plans=None,
                    default_plan=None):
    """`tollgate serve` on a fresh config and database in `d`, stopped (exit 0 asserted) on exit.

    `tls`: (cert_file, key_file, ssl.SSLContext trusting their CA) to serve HTTPS with
    `[server.tls]`; the gateway's URLs are then https://. `plans`: {name: {key: value}}, written
    as `[plans.NAME]` tables; `default_plan`: `limits.default_plan`."""
    exe = binary("TOLLGATE_BIN", "target/debug/tollgate")
    db = d / "usage.db"
    port = free_port()
    admin_port = free_port()
    upstream = fake.url
    pricing = "\n".join(
        f'[pricing."{m}"]\n' + "".join(f"{k} = {v}\n" for k, v in p.items()) for m, p in PRICES.items()
    )
    config = d / "gateway.toml"
    tls_section = "" if tls is None else f"""
[server.tls]
cert_file = "{tls[0]}"
key_file = "{tls[1]}"
"""
    context = None if tls is None else tls[2]
    plan_tables = "\n".join(
        f"[plans.{name}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in settings.items())
        for name, settings in (plans or {}).items()
    )
    default_plan_line = "" if default_plan is None else f"default_plan = {toml_value(default_plan)}"
    config.write_text(f"""\
[server]
listen = "127.0.0.1:{port}"
shutdown_grace_secs = 5
{tls_section}
[admin]
listen = "127.0.0.1:{admin_port}"

[auth]
jwt_secret_env = "JWT_SECRET"

[limits]
daily_tokens = {daily_tokens}
monthly_tokens = 1000000000
requests_per_minute = {requests_per_minute}
{default_plan_line}

[store]
path = "{db}"

[[providers]]
name = "openai"
kind = "openai"
prefix = "/openai"
upstream = "{upstream}"
api_key_env = "OPENAI_API_KEY"

[[providers]]
name = "gemini"
kind = "gemini"
prefix = "/gemini"
upstream = "{upstream}"
api_key_env = "GEMINI_API_KEY"

{pricing}
{plan_tables}
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
    env.update(JWT_SECRET=JWT_SECRET, OPENAI_API_KEY=OPENAI_KEY, GEMINI_API_KEY=GEMINI_KEY,
               RUST_LOG=os.environ.get("RUST_LOG", "info"))
    proc = Proc([exe, "serve", "--config", config], env, "tollgate", d)
    gw = Gateway(exe, config, db, port, env, proc, scheme="http" if tls is None else "https")
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.p.poll() is not None:
                pytest.fail(f"tollgate serve exited with {proc.p.returncode} before /healthz answered:\n"
                            f"{proc.stderr()}", pytrace=False)
            try:
                if http("GET", f"{gw.url}/healthz", timeout=1.0, context=context)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"tollgate /healthz did not answer 200 within {START_TIMEOUT}s:\n{proc.stderr()}",
                            pytrace=False)
            time.sleep(0.05)
        yield gw
    finally:
        code = proc.stop()
    assert code == 0, f"tollgate exited with {code} after SIGTERM:\n{proc.stderr()}"
    log = proc.stderr(tail=0)
    for secret, what in [(OPENAI_KEY, "the OpenAI key"), (GEMINI_KEY, "the Gemini key"), (JWT_SECRET, "the JWT secret"),
                         ("eyJ", "a JWT")]:
        assert secret not in log, f"the gateway's log contains {what} ({proc.stderr_path})"


def toml_value(v) -> str:
    """A TOML value for a plan setting: a string, a number, a boolean or a list of those."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string of these characters is a TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML value for {v!r}")


@pytest.fixture
def user(request) -> str:
    """A user id of its own for each test."""
    return f"{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def upstream_sees_no_client_credential(request):
    """After every test: the fake saw no leaked client JWT and no wrong provider key."""
    if "fake" not in request.fixturenames:
        yield
        return
    fake: Fake = request.getfixturevalue("fake")
    before = fake.stats()
    yield
    after = fake.stats()
    assert after["leaks"] == before["leaks"], "a client JWT reached the upstream (see fake-upstream stats)"
    assert after["unauthorized"] == before["unauthorized"], "the upstream refused the provider key"

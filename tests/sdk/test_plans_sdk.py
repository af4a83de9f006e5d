"""Plans as the official SDKs see them: a gateway with a `free` and a `pro` plan (`free` the
default), the plan chosen by the JWT's `plan` claim.

A model outside the caller's plan, or more output than its ceiling, makes the OpenAI SDK raise
`PermissionDeniedError` (403, `code` model_not_in_plan / max_output_tokens_over_plan) and the
google-genai SDK a 403 `ClientError` (PERMISSION_DENIED), streamed or not; the SDKs do not retry
it (`x-should-retry: false`), nothing reaches the upstream, and each refused call is exactly one
row with outcome `refused_plan`. An allowed call is served with the plan's ceiling written into
the forwarded request (filled in when the request sets none, lowered when the plan clamps), which
fake-upstream honours, so the SDK's usage shows the cap. `GET /me/usage` tells the app its plan.

Run with `-s` to see the exact `str(exception)` each SDK raised (lines starting `SDK-ERROR`).
"""

from __future__ import annotations

import contextlib
import json

import openai
import pytest
from google import genai
from google.genai import errors, types

from conftest import running_gateway
from harness import CHUNKS, answer, cost, http, prompt_tokens

FREE_CEILING = 5
PRO_CEILING = 8
# Both ceilings are below the fake's answer length, so a cap written into the request shows up
# as fewer output tokens (and finish reason "length" / MAX_TOKENS).
assert FREE_CEILING < PRO_CEILING < CHUNKS

PLANS = {
    "free": {
        "models": ["gpt-4o-mini*", "gemini-2.5-flash*"],
        "max_output_tokens": FREE_CEILING,
    },
    "pro": {
        "deny_models": ["o1-pro*"],
        "max_output_tokens": PRO_CEILING,
        "clamp_max_output_tokens": True,
    },
}

PROMPT = "Which plan am I on"  # 5 words
MESSAGES = [{"role": "user", "content": PROMPT}]


@pytest.fixture(scope="module")
def plans_gateway(fake, tmp_path_factory):
    with running_gateway(fake, tmp_path_factory.mktemp("plans"), plans=PLANS, default_plan="free") as gw:
        yield gw


def openai_client(gw, jwt: str) -> openai.OpenAI:
    # Retries allowed, as an app would leave them: a refusal the SDK retried would leave more rows.
    return openai.OpenAI(base_url=gw.openai_base, api_key=jwt, max_retries=2, timeout=15)


def genai_client(gw, jwt: str) -> genai.Client:
    # Retries switched on (the SDK's default is none): a retried refusal would leave more rows.
    retry = types.HttpRetryOptions(attempts=3, initial_delay=0.05, max_delay=0.2, jitter=0)
    opts = types.HttpOptions(base_url=gw.gemini_base, timeout=15_000, retry_options=retry)
    return genai.Client(api_key=jwt, http_options=opts)


@contextlib.contextmanager
def upstream_untouched(fake):
    """Asserts that fake-upstream served nothing (no request of any provider) in the block."""
    before = fake.stats()
    yield
    after = fake.stats()
    assert after == before, f"a refused call reached the upstream: {before} -> {after}"


def report(sdk: str, case: str, exc: BaseException) -> None:
    """The exception's text exactly as the SDK renders it (shown with `pytest -s`)."""
    print(f"\nSDK-ERROR {sdk} [{case}] {type(exc).__module__}.{type(exc).__qualname__}: {str(exc)}")


def assert_refused_row(row: dict, *, user, provider, model, endpoint, streamed):
    expected = {
        "user_id": user,
        "provider": provider,
        "model": model,
        "endpoint": endpoint,
        "streamed": int(streamed),
        "status": 403,
        "input_tokens": 0,
        "cached_input_tokens": 0,
        "output_tokens": 0,
        "reasoning_tokens": 0,
        "total_tokens": 0,
        "usage_source": "none",
        "outcome": "refused_plan",
        "ttfb_ms": None,  # no upstream answer head
        "journal_id": None,  # never forwarded
    }
    assert {k: row[k] for k in expected} == expected, f"row: {row}"
    assert row["cost_nano_usd"] == 0, f"a refusal costs nothing: {row}"
    assert row["request_id"], f"row: {row}"


def assert_served_row(row: dict, *, user, provider, model, endpoint, streamed, input_tokens, output_tokens):
    # The openai SDK closes a stream at `data: [DONE]` without reading the body's end: the
    # gateway counts a stream whose final event went out as complete all the same.
    outcomes = {"complete"}
    assert row["outcome"] in outcomes, f"row: {row}"
    expected = {
        "user_id": user,
        "provider": provider,
        "model": model,
        "endpoint": endpoint,
        "streamed": int(streamed),
        "status": 200,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
        "cost_nano_usd": cost(model, input_tokens, 0, output_tokens),
        "usage_source": "reported",
    }
    assert {k: row[k] for k in expected} == expected, f"row: {row}"


def user_plan(gw, user: str) -> str | None:
    [u] = gw._query("SELECT plan FROM users WHERE id = ?", (user,))
    return u["plan"]


# === openai ===

@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_openai_free_user_is_refused_a_model_outside_the_plan(plans_gateway, fake, user, stream):
    c = openai_client(plans_gateway, plans_gateway.token(user, plan="free"))
    with upstream_untouched(fake):
        with pytest.raises(openai.PermissionDeniedError) as err:
            # With stream=True the SDK raises on the answer's status, before any chunk.
            c.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=stream)
    e = err.value
    report("openai", f"free user, gpt-4o, {'stream' if stream else 'non-stream'}", e)
    assert e.status_code == 403
    assert e.code == "model_not_in_plan"
    assert e.type == "permission_error"
    assert e.body["message"] == "the model `gpt-4o` is not available on the `free` plan"
    assert "`gpt-4o`" in str(e) and "`free` plan" in str(e), str(e)
    assert e.response.headers["x-should-retry"] == "false"
    # max_retries=2, yet exactly one row: the SDK did not retry the refusal.
    [row] = plans_gateway.rows(user, 1)
    assert_refused_row(row, user=user, provider="openai", model="gpt-4o", endpoint="chat.completions",
                       streamed=stream)
    assert user_plan(plans_gateway, user) == "free"


def test_openai_token_without_plan_claim_is_on_the_default_plan(plans_gateway, fake, user):
    c = openai_client(plans_gateway, plans_gateway.token(user))
    with upstream_untouched(fake):
        with pytest.raises(openai.PermissionDeniedError) as err:
            c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert err.value.code == "model_not_in_plan"
    assert err.value.body["message"] == "the model `gpt-4o` is not available on the `free` plan"
    [row] = plans_gateway.rows(user, 1)
    assert_refused_row(row, user=user, provider="openai", model="gpt-4o", endpoint="chat.completions",
                       streamed=False)


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_openai_free_user_is_served_an_allowed_model_capped_at_the_ceiling(plans_gateway, user, stream):
    """No max_tokens in the request: the gateway writes the free plan's ceiling in."""
    c = openai_client(plans_gateway, plans_gateway.token(user, plan="free"))
    p = prompt_tokens(PROMPT)
    if stream:
        chunks = list(c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True,
                                                stream_options={"include_usage": True}))
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
        usage = chunks[-1].usage
    else:
        r = c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        text = r.choices[0].message.content
        finish = [r.choices[0].finish_reason]
        usage = r.usage
    assert text == answer(FREE_CEILING)
    assert finish == ["length"]
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == \
        (p, FREE_CEILING, p + FREE_CEILING)
    [row] = plans_gateway.rows(user, 1)
    assert_served_row(row, user=user, provider="openai", model="gpt-4o-mini", endpoint="chat.completions",
                      streamed=stream, input_tokens=p, output_tokens=FREE_CEILING)
    assert user_plan(plans_gateway, user) == "free"


def test_openai_free_user_within_the_ceiling_keeps_its_own_cap(plans_gateway, user):
    c = openai_client(plans_gateway, plans_gateway.token(user, plan="free"))
    r = c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=3)
    assert r.usage.completion_tokens == 3
    assert r.choices[0].message.content == answer(3)
    [row] = plans_gateway.rows(user, 1)
    assert_served_row(row, user=user, provider="openai", model="gpt-4o-mini", endpoint="chat.completions",
                      streamed=False, input_tokens=prompt_tokens(PROMPT), output_tokens=3)


@pytest.mark.parametrize("key", ["max_tokens", "max_completion_tokens"])
def test_openai_free_user_asking_more_than_the_ceiling_is_refused(plans_gateway, fake, user, key):
    c = openai_client(plans_gateway, plans_gateway.token(user, plan="free"))
    asked = FREE_CEILING + 1
    with upstream_untouched(fake):
        with pytest.raises(openai.PermissionDeniedError) as err:
            c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, **{key: asked})
    e = err.value
    report("openai", f"free user, gpt-4o-mini, {key}={asked}", e)
    assert e.status_code == 403
    assert e.code == "max_output_tokens_over_plan"
    assert e.type == "permission_error"
    assert e.body["message"] == (f"this request asks for up to {asked} output tokens; "
                                 f"the `free` plan allows at most {FREE_CEILING} per call")
    assert e.response.headers["x-should-retry"] == "false"
    [row] = plans_gateway.rows(user, 1)
    assert_refused_row(row, user=user, provider="openai", model="gpt-4o-mini", endpoint="chat.completions",
                       streamed=False)


def test_openai_pro_user_is_served_gpt_4o(plans_gateway, user):
    c = openai_client(plans_gateway, plans_gateway.token(user, plan="pro"))
    r = c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    p = prompt_tokens(PROMPT)
    # The pro plan's ceiling, filled in because the request set no cap.
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (p, PRO_CEILING)
    assert r.choices[0].message.content == answer(PRO_CEILING)
    [row] = plans_gateway.rows(user, 1)
    assert_served_row(row, user=user, provider="openai", model="gpt-4o", endpoint="chat.completions",
                      streamed=False, input_tokens=p, output_tokens=PRO_CEILING)
    assert row["cost_nano_usd"] is None  # gpt-4o is unpriced in this suite
    assert user_plan(plans_gateway, user) == "pro"


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_openai_pro_user_over_the_ceiling_is_clamped(plans_gateway, user, stream):
    c = openai_client(plans_gateway, plans_gateway.token(user, plan="pro"))
    p = prompt_tokens(PROMPT)
    if stream:
        chunks = list(c.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=50, stream=True,
                                                stream_options={"include_usage": True}))
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
        usage = chunks[-1].usage
    else:
        r = c.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=50)
        text, finish, usage = r.choices[0].message.content, [r.choices[0].finish_reason], r.usage
    # Asked for 50; the upstream was asked for the ceiling (it would have written all 12 chunks).
    assert usage.completion_tokens == PRO_CEILING
    assert text == answer(PRO_CEILING)
    assert finish == ["length"]
    [row] = plans_gateway.rows(user, 1)
    assert_served_row(row, user=user, provider="openai", model="gpt-4o", endpoint="chat.completions",
                      streamed=stream, input_tokens=p, output_tokens=PRO_CEILING)


def test_openai_pro_user_is_refused_a_denied_model(plans_gateway, fake, user):
    c = openai_client(plans_gateway, plans_gateway.token(user, plan="pro"))
    with upstream_untouched(fake):
        with pytest.raises(openai.PermissionDeniedError) as err:
            c.chat.completions.create(model="O1-Pro-2025-03-19", messages=MESSAGES)
    assert err.value.code == "model_not_in_plan"
    assert err.value.body["message"] == "the model `O1-Pro-2025-03-19` is not available on the `pro` plan"
    [row] = plans_gateway.rows(user, 1)
    assert_refused_row(row, user=user, provider="openai", model="O1-Pro-2025-03-19",
                       endpoint="chat.completions", streamed=False)


# === google-genai ===

@pytest.mark.parametrize("stream", [False, True], ids=["generate_content", "generate_content_stream"])
def test_genai_free_user_is_refused_a_model_outside_the_plan(plans_gateway, fake, user, stream):
    c = genai_client(plans_gateway, plans_gateway.token(user, plan="free"))
    with upstream_untouched(fake):
        with pytest.raises(errors.ClientError) as err:
            if stream:
                list(c.models.generate_content_stream(model="gemini-2.5-pro", contents=PROMPT))
            else:
                c.models.generate_content(model="gemini-2.5-pro", contents=PROMPT)
    e = err.value
    report("google-genai", f"free user, gemini-2.5-pro, {'generate_content_stream' if stream else 'generate_content'}",
           e)
    assert e.code == 403
    assert e.status == "PERMISSION_DENIED"
    assert e.message == "the model `gemini-2.5-pro` is not available on the `free` plan"
    assert e.details == {"error": {"code": 403, "status": "PERMISSION_DENIED", "message": e.message}}
    assert e.response.headers["x-should-retry"] == "false"
    # attempts=3, yet exactly one row: the SDK did not retry the refusal.
    [row] = plans_gateway.rows(user, 1)
    assert_refused_row(row, user=user, provider="gemini", model="gemini-2.5-pro",
                       endpoint="streamGenerateContent" if stream else "generateContent", streamed=stream)
    assert user_plan(plans_gateway, user) == "free"


@pytest.mark.parametrize("stream", [False, True], ids=["generate_content", "generate_content_stream"])
def test_genai_free_user_is_served_gemini_flash_capped_at_the_ceiling(plans_gateway, user, stream):
    """No maxOutputTokens in the request: the gateway writes the free plan's ceiling in."""
    c = genai_client(plans_gateway, plans_gateway.token(user, plan="free"))
    p = prompt_tokens(PROMPT)
    if stream:
        chunks = list(c.models.generate_content_stream(model="gemini-2.5-flash", contents=PROMPT))
        assert len(chunks) == FREE_CEILING
        text = "".join(ch.text for ch in chunks)
        last = chunks[-1]
    else:
        last = c.models.generate_content(model="gemini-2.5-flash", contents=PROMPT)
        text = last.text
    assert text == answer(FREE_CEILING)
    assert last.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    u = last.usage_metadata
    assert (u.prompt_token_count, u.candidates_token_count, u.total_token_count) == \
        (p, FREE_CEILING, p + FREE_CEILING)
    [row] = plans_gateway.rows(user, 1)
    assert_served_row(row, user=user, provider="gemini", model="gemini-2.5-flash",
                      endpoint="streamGenerateContent" if stream else "generateContent", streamed=stream,
                      input_tokens=p, output_tokens=FREE_CEILING)


# === GET /me/usage ===

@pytest.mark.parametrize("claim, expected", [
    ("free", {"plan": "free", "models": {"allowed": PLANS["free"]["models"], "denied": []},
              "max_output_tokens": FREE_CEILING, "clamp_max_output_tokens": False}),
    (None, {"plan": "free", "models": {"allowed": PLANS["free"]["models"], "denied": []},
            "max_output_tokens": FREE_CEILING, "clamp_max_output_tokens": False}),
    ("pro", {"plan": "pro", "models": {"allowed": None, "denied": PLANS["pro"]["deny_models"]},
             "max_output_tokens": PRO_CEILING, "clamp_max_output_tokens": True}),
], ids=["free", "no-claim-default-free", "pro"])
def test_me_usage_tells_the_plan(plans_gateway, user, claim, expected):
    jwt = plans_gateway.token(user, plan=claim)
    status, headers, body = http("GET", f"{plans_gateway.url}/me/usage", headers={"Authorization": f"Bearer {jwt}"})
    assert status == 200, body
    me = json.loads(body)
    assert me["user"] == user
    assert {k: me[k] for k in expected} == expected, me

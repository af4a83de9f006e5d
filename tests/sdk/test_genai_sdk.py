"""The official `google-genai` SDK through Tollgate (plus two raw calls the SDK does not make:
the `?key=` credential and the streamed JSON array without `alt=sse`)."""

from __future__ import annotations

import json
import time

import pytest
from google import genai
from google.genai import errors, types

from harness import CHUNKS, answer, cost, embedding_value, http, prompt_tokens
from jwt_util import forged

PROMPT = "Explain toll roads in one line"  # 6 words


def client(gateway, jwt: str, api_version: str | None = None) -> genai.Client:
    opts = types.HttpOptions(
        base_url=gateway.gemini_base,
        api_version=api_version,
        timeout=15_000,
        retry_options=types.HttpRetryOptions(attempts=1),
    )
    return genai.Client(api_key=jwt, http_options=opts)


def assert_row(row: dict, *, user, model, endpoint, streamed, input_tokens, output_tokens,
               cached=0, reasoning=0, source="reported"):
    expected = {
        "user_id": user,
        "provider": "gemini",
        "model": model,
        "endpoint": endpoint,
        "streamed": int(streamed),
        "status": 200,
        "input_tokens": input_tokens,
        "cached_input_tokens": cached,
        "output_tokens": output_tokens,
        "reasoning_tokens": reasoning,
        "total_tokens": input_tokens + output_tokens,
        "cost_nano_usd": cost(model, input_tokens, cached, output_tokens),
        "usage_source": source,
    }
    assert {k: row[k] for k in expected} == expected, f"row: {row}"
    assert row["outcome"] == "complete", f"row: {row}"


@pytest.mark.parametrize("api_version", [None, "v1", "v1beta"])
def test_generate_content(gateway, user, api_version):
    c = client(gateway, gateway.token(user), api_version)
    r = c.models.generate_content(model="gemini-2.5-flash", contents=PROMPT)
    p = prompt_tokens(PROMPT)
    assert r.text == answer()
    u = r.usage_metadata
    assert (u.prompt_token_count, u.candidates_token_count, u.total_token_count) == (p, CHUNKS, p + CHUNKS)
    [row] = gateway.rows(user, 1)
    assert_row(row, user=user, model="gemini-2.5-flash", endpoint="generateContent", streamed=False,
               input_tokens=p, output_tokens=CHUNKS)


def test_generate_content_thinking_and_cached(gateway, user):
    # Model tokens ask fake-upstream for 5 thinking and 3 cached tokens (priced as gemini-2.5-flash).
    model = "gemini-2.5-flash-r5-c3"
    c = client(gateway, gateway.token(user), "v1beta")
    r = c.models.generate_content(
        model=model, contents=PROMPT, config=types.GenerateContentConfig(system_instruction="Be terse"))
    p = prompt_tokens(PROMPT, "Be terse")
    u = r.usage_metadata
    assert (u.thoughts_token_count, u.cached_content_token_count, u.total_token_count) == (5, 3, p + CHUNKS + 5)
    [row] = gateway.rows(user, 1)
    assert_row(row, user=user, model=model, endpoint="generateContent", streamed=False,
               input_tokens=p, output_tokens=CHUNKS + 5, cached=3, reasoning=5)


@pytest.mark.parametrize("api_version", [None, "v1beta"])
def test_generate_content_stream(gateway, user, api_version):
    model = "gemini-2.5-flash-r2"
    c = client(gateway, gateway.token(user), api_version)
    chunks = list(c.models.generate_content_stream(model=model, contents=PROMPT))
    p = prompt_tokens(PROMPT)
    assert len(chunks) == CHUNKS
    assert "".join(ch.text for ch in chunks) == answer()
    assert [ch.usage_metadata.candidates_token_count for ch in chunks] == list(range(1, CHUNKS + 1)), \
        "usage is cumulative in every chunk"
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    [row] = gateway.rows(user, 1)
    # Cumulative counts: the last chunk is the total, never the sum of the chunks.
    assert_row(row, user=user, model=model, endpoint="streamGenerateContent", streamed=True,
               input_tokens=p, output_tokens=CHUNKS + 2, reasoning=2)


def test_count_tokens_is_not_consumption(gateway, user):
    c = client(gateway, gateway.token(user))
    r = c.models.count_tokens(model="gemini-2.5-flash", contents=PROMPT)
    assert r.total_tokens == prompt_tokens(PROMPT)
    [row] = gateway.rows(user, 1)
    assert (row["endpoint"], row["status"], row["streamed"]) == ("countTokens", 200, 0), f"row: {row}"
    assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == (0, 0, 0), f"row: {row}"
    assert row["cost_nano_usd"] in (0, None), f"row: {row}"
    assert (row["usage_source"], row["outcome"]) == ("none", "complete"), f"row: {row}"


@pytest.mark.parametrize("api_version", [None, "v1beta"])
def test_embed_content(gateway, user, api_version):
    texts = ["alpha beta gamma", "delta"]
    c = client(gateway, gateway.token(user), api_version)
    r = c.models.embed_content(model="gemini-embedding-001", contents=texts,
                               config=types.EmbedContentConfig(output_dimensionality=4))
    assert [e.values for e in r.embeddings] == [[embedding_value(i, j) for j in range(4)] for i in range(2)]
    p = prompt_tokens(*texts)
    [row] = gateway.rows(user, 1)
    # The Gemini API SDK sends every embed_content as batchEmbedContents.
    assert_row(row, user=user, model="gemini-embedding-001", endpoint="batchEmbedContents", streamed=False,
               input_tokens=p, output_tokens=0)


@pytest.mark.parametrize("kind", ["garbage", "forged"])
def test_bad_token_is_refused_before_upstream(gateway, fake, user, kind):
    jwt = {"garbage": "not-a-jwt", "forged": forged(user)}[kind]
    before = fake.stats()["requests"]
    c = client(gateway, jwt)  # keep a reference: a dropped genai.Client closes its connection
    with pytest.raises(errors.ClientError) as e:
        c.models.generate_content(model="gemini-2.5-flash", contents=PROMPT)
    assert e.value.code == 401
    assert e.value.status == "UNAUTHENTICATED" or e.value.message, f"Gemini error shape expected: {e.value}"
    assert fake.stats()["requests"] == before, "a refused call must not reach the upstream"
    time.sleep(0.3)
    assert gateway.rows(user, 0, timeout=0.1) == []


def test_key_in_query_is_accepted_and_stripped(gateway, user):
    """The older SDKs pass the key as ?key=; Tollgate must take it and never forward it."""
    jwt = gateway.token(user)
    body = json.dumps({"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}).encode()
    status, _, out = http("POST", f"{gateway.gemini_base}/v1beta/models/gemini-2.5-flash:generateContent?key={jwt}",
                          body, {"content-type": "application/json"})
    assert status == 200, out
    assert json.loads(out)["usageMetadata"]["promptTokenCount"] == prompt_tokens(PROMPT)
    [row] = gateway.rows(user, 1)
    assert_row(row, user=user, model="gemini-2.5-flash", endpoint="generateContent", streamed=False,
               input_tokens=prompt_tokens(PROMPT), output_tokens=CHUNKS)


def test_stream_as_json_array(gateway, user):
    """streamGenerateContent without alt=sse: a JSON array written piece by piece."""
    jwt = gateway.token(user)
    body = json.dumps({"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}).encode()
    status, headers, out = http("POST", f"{gateway.gemini_base}/v1beta/models/gemini-2.5-flash:streamGenerateContent",
                                body, {"content-type": "application/json", "x-goog-api-key": jwt})
    assert status == 200, out
    arr = json.loads(out)
    assert len(arr) == CHUNKS and "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in arr) == answer()
    [row] = gateway.rows(user, 1)
    assert_row(row, user=user, model="gemini-2.5-flash", endpoint="streamGenerateContent", streamed=True,
               input_tokens=prompt_tokens(PROMPT), output_tokens=CHUNKS)


def test_no_credential_leaked_to_upstream(gateway, fake):
    stats = fake.stats()
    assert stats["leaks"] == 0, stats
    assert stats["unauthorized"] == 0, stats

"""The official `openai` SDK through Tollgate: every answer as the SDK sees it, and exactly one
token_usage row per call with fake-upstream's exact usage numbers."""

from __future__ import annotations

import asyncio
import time

import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from harness import CHUNKS, JWT_SECRET, answer, cost, embedding_value, prompt_tokens
from jwt_util import expired, forged

PROMPT = "Say hello to the toll gate"  # 6 words


def client(gateway, jwt: str) -> OpenAI:
    return OpenAI(base_url=gateway.openai_base, api_key=jwt, max_retries=0, timeout=15)


def assert_row(row: dict, *, user, model, endpoint, streamed, input_tokens, output_tokens,
               cached=0, reasoning=0, source="reported", status=200):
    expected = {
        "user_id": user,
        "provider": "openai",
        "model": model,
        "endpoint": endpoint,
        "streamed": int(streamed),
        "status": status,
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
    assert row["request_id"], f"row: {row}"
    assert row["latency_ms"] >= 0 and abs(row["ts"] / 1000 - time.time()) < 120, f"row: {row}"


def test_chat_non_stream(gateway, user):
    c = client(gateway, gateway.token(user))
    r = c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}])
    p = prompt_tokens(PROMPT)
    assert r.choices[0].message.content == answer()
    assert r.model == "gpt-4o-mini"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (p, CHUNKS, p + CHUNKS)
    [row] = gateway.rows(user, 1)
    assert_row(row, user=user, model="gpt-4o-mini", endpoint="chat.completions", streamed=False,
               input_tokens=p, output_tokens=CHUNKS)


def test_chat_non_stream_cached_and_reasoning(gateway, user):
    # Model tokens ask fake-upstream for 3 reasoning and 2 cached tokens (priced as gpt-4o-mini).
    model = "gpt-4o-mini-r3-c2"
    c = client(gateway, gateway.token(user))
    r = c.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}],
    )
    p = prompt_tokens("Be brief.", PROMPT)
    assert r.usage.completion_tokens == CHUNKS + 3
    assert r.usage.prompt_tokens_details.cached_tokens == 2
    assert r.usage.completion_tokens_details.reasoning_tokens == 3
    [row] = gateway.rows(user, 1)
    assert_row(row, user=user, model=model, endpoint="chat.completions", streamed=False,
               input_tokens=p, output_tokens=CHUNKS + 3, cached=2, reasoning=3)


def test_chat_stream_without_stream_options(gateway, user):
    """Tollgate asks upstream for usage, strips the extra usage chunk, and still records it."""
    model = "gpt-4o-mini-r3-c2"
    c = client(gateway, gateway.token(user))
    chunks = list(c.chat.completions.create(
        model=model, messages=[{"role": "user", "content": PROMPT}], stream=True))
    assert chunks, "no chunk at all"
    assert [ch for ch in chunks if ch.usage is not None] == [], "the client must not see a usage chunk"
    assert [ch for ch in chunks if not ch.choices] == [], "the client must not see a chunk with empty choices"
    assert len(chunks) == 1 + CHUNKS + 1, "role chunk, content chunks, finish chunk"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == answer()
    assert chunks[-1].choices[0].finish_reason == "stop"
    p = prompt_tokens(PROMPT)
    [row] = gateway.rows(user, 1)
    assert_row(row, user=user, model=model, endpoint="chat.completions", streamed=True,
               input_tokens=p, output_tokens=CHUNKS + 3, cached=2, reasoning=3)


def test_chat_stream_with_include_usage(gateway, user):
    c = client(gateway, gateway.token(user))
    chunks = list(c.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}], stream=True,
        stream_options={"include_usage": True}))
    p = prompt_tokens(PROMPT)
    last = chunks[-1]
    assert last.choices == [], "the usage chunk the client asked for arrives last"
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (p, CHUNKS)
    assert all(ch.usage is None for ch in chunks[:-1])
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks[:-1]) == answer()
    [row] = gateway.rows(user, 1)
    assert_row(row, user=user, model="gpt-4o-mini", endpoint="chat.completions", streamed=True,
               input_tokens=p, output_tokens=CHUNKS)


def test_responses_non_stream(gateway, user):
    c = client(gateway, gateway.token(user))
    r = c.responses.create(model="gpt-4o", input=PROMPT, instructions="Answer in one line")
    p = prompt_tokens(PROMPT, "Answer in one line")
    assert r.status == "completed"
    assert r.output_text == answer()
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (p, CHUNKS, p + CHUNKS)
    [row] = gateway.rows(user, 1)
    # gpt-4o is not in this suite's price table: cost NULL.
    assert_row(row, user=user, model="gpt-4o", endpoint="responses", streamed=False,
               input_tokens=p, output_tokens=CHUNKS)
    assert row["cost_nano_usd"] is None


def test_responses_stream(gateway, user):
    model = "gpt-4o-mini-r4"
    c = client(gateway, gateway.token(user))
    events = list(c.responses.create(model=model, input=PROMPT, stream=True))
    types = [e.type for e in events]
    assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert types[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == answer()
    usage = events[-1].response.usage
    p = prompt_tokens(PROMPT)
    assert (usage.input_tokens, usage.output_tokens, usage.output_tokens_details.reasoning_tokens) == \
        (p, CHUNKS + 4, 4)
    [row] = gateway.rows(user, 1)
    assert_row(row, user=user, model=model, endpoint="responses", streamed=True,
               input_tokens=p, output_tokens=CHUNKS + 4, reasoning=4)


def test_embeddings(gateway, user):
    c = client(gateway, gateway.token(user))
    # The SDK asks for base64 and decodes it to floats.
    texts = ["first text to embed", "second"]
    r = c.embeddings.create(model="text-embedding-3-small", input=texts)
    assert [d.embedding for d in r.data] == [[embedding_value(i, j) for j in range(8)] for i in range(2)]
    p = prompt_tokens(*texts)
    assert (r.usage.prompt_tokens, r.usage.total_tokens) == (p, p)
    [row] = gateway.rows(user, 1)
    assert_row(row, user=user, model="text-embedding-3-small", endpoint="embeddings", streamed=False,
               input_tokens=p, output_tokens=0)


def test_legacy_completions(gateway, user):
    c = client(gateway, gateway.token(user))
    r = c.completions.create(model="gpt-3.5-turbo-instruct", prompt="Complete this sentence")
    p = prompt_tokens("Complete this sentence")
    assert r.choices[0].text == answer()
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (p, CHUNKS)
    [row] = gateway.rows(user, 1)
    assert_row(row, user=user, model="gpt-3.5-turbo-instruct", endpoint="completions", streamed=False,
               input_tokens=p, output_tokens=CHUNKS)


def test_async_client_stream(gateway, user):
    jwt = gateway.token(user)

    async def run():
        async with AsyncOpenAI(base_url=gateway.openai_base, api_key=jwt, max_retries=0, timeout=15) as c:
            stream = await c.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}], stream=True)
            return [ch async for ch in stream]

    chunks = asyncio.run(run())
    assert all(ch.usage is None and ch.choices for ch in chunks)
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == answer()
    [row] = gateway.rows(user, 1)
    assert_row(row, user=user, model="gpt-4o-mini", endpoint="chat.completions", streamed=True,
               input_tokens=prompt_tokens(PROMPT), output_tokens=CHUNKS)


def test_several_calls_one_row_each(gateway, user):
    c = client(gateway, gateway.token(user))
    for _ in range(3):
        c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}])
    rows = gateway.rows(user, 3)
    assert len({r["request_id"] for r in rows}) == 3, "each call has its own request_id"


@pytest.mark.parametrize("kind", ["garbage", "forged", "expired"])
def test_bad_token_is_refused_before_upstream(gateway, fake, user, kind):
    jwt = {"garbage": "not-a-jwt", "forged": forged(user), "expired": expired(user, JWT_SECRET)}[kind]
    before = fake.stats()["requests"]
    with pytest.raises(openai.AuthenticationError) as e:
        client(gateway, jwt).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}])
    assert e.value.status_code == 401
    assert isinstance(e.value.body, dict) and e.value.body.get("message"), \
        f"OpenAI error shape expected, got {e.value.body!r}"
    assert fake.stats()["requests"] == before, "a refused call must not reach the upstream"
    time.sleep(0.3)
    assert gateway.rows(user, 0, timeout=0.1) == [], "no usage row under an unverified subject"


def test_no_credential_leaked_to_upstream(gateway, fake):
    stats = fake.stats()
    assert stats["leaks"] == 0, stats
    assert stats["unauthorized"] == 0, stats

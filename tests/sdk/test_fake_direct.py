"""The SDKs straight against fake-upstream (no gateway): proves the fake speaks formats the
official SDKs accept, so a failure in the gateway tests is the gateway's, not the fake's."""

from __future__ import annotations

from google import genai
from google.genai import types
from openai import OpenAI

from harness import CHUNKS, GEMINI_KEY, OPENAI_KEY, answer, embedding_value, prompt_tokens

PROMPT = "one two three"


def oa(fake) -> OpenAI:
    return OpenAI(base_url=f"{fake.url}/v1", api_key=OPENAI_KEY, max_retries=0, timeout=10)


def gm(fake, api_version=None) -> genai.Client:
    return genai.Client(api_key=GEMINI_KEY, http_options=types.HttpOptions(
        base_url=fake.url, api_version=api_version, timeout=10_000,
        retry_options=types.HttpRetryOptions(attempts=1)))


def test_openai_sdk_reads_every_endpoint(fake):
    c = oa(fake)
    p = prompt_tokens(PROMPT)
    msgs = [{"role": "user", "content": PROMPT}]
    r = c.chat.completions.create(model="gpt-4o-mini", messages=msgs)
    assert (r.choices[0].message.content, r.usage.prompt_tokens, r.usage.completion_tokens) == (answer(), p, CHUNKS)
    chunks = list(c.chat.completions.create(model="gpt-4o-mini", messages=msgs, stream=True,
                                            stream_options={"include_usage": True}))
    assert chunks[-1].usage.total_tokens == p + CHUNKS and chunks[-1].choices == []
    r = c.responses.create(model="gpt-4o", input=PROMPT)
    assert (r.output_text, r.usage.input_tokens) == (answer(), p)
    events = list(c.responses.create(model="gpt-4o", input=PROMPT, stream=True))
    assert events[-1].type == "response.completed" and events[-1].response.usage.output_tokens == CHUNKS
    e = c.embeddings.create(model="text-embedding-3-small", input=PROMPT, dimensions=5)
    assert e.data[0].embedding == [embedding_value(0, j) for j in range(5)] and e.usage.prompt_tokens == p
    e = c.embeddings.create(model="text-embedding-3-small", input=PROMPT, encoding_format="float")
    assert e.data[0].embedding == [embedding_value(0, j) for j in range(8)]
    r = c.completions.create(model="gpt-3.5-turbo-instruct", prompt=PROMPT)
    assert (r.choices[0].text, r.usage.completion_tokens) == (answer(), CHUNKS)
    assert "gpt-4o-mini" in [m.id for m in c.models.list()]


def test_genai_sdk_reads_every_endpoint(fake):
    p = prompt_tokens(PROMPT)
    for version in (None, "v1beta"):
        c = gm(fake, version)
        r = c.models.generate_content(model="gemini-2.5-flash", contents=PROMPT)
        assert (r.text, r.usage_metadata.prompt_token_count, r.usage_metadata.total_token_count) == \
            (answer(), p, p + CHUNKS)
        chunks = list(c.models.generate_content_stream(model="gemini-2.5-flash", contents=PROMPT))
        assert "".join(ch.text for ch in chunks) == answer()
        assert chunks[-1].usage_metadata.candidates_token_count == CHUNKS
        assert c.models.count_tokens(model="gemini-2.5-flash", contents=PROMPT).total_tokens == p
        r = c.models.embed_content(model="gemini-embedding-001", contents=[PROMPT, "x"])
        assert [len(e.values) for e in r.embeddings] == [8, 8]

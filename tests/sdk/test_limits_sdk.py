"""Limits as the official SDKs see them: a used-up quota makes the OpenAI SDK raise its
RateLimitError without retrying (Tollgate sends `x-should-retry: false`) and the google-genai SDK
raise a 429 ClientError; refusals never reach the upstream."""

from __future__ import annotations

import openai
import pytest
from google import genai
from google.genai import errors, types

from conftest import running_gateway


@pytest.fixture(scope="module")
def tight_gateway(fake, tmp_path_factory):
    """A gateway whose users may spend 10 tokens a day: the first call passes, the next is refused."""
    with running_gateway(fake, tmp_path_factory.mktemp("tight"), daily_tokens=10) as gw:
        yield gw


def test_used_up_quota_raises_rate_limit_error_without_retry(tight_gateway, fake, user):
    jwt = tight_gateway.token(user)
    client = openai.OpenAI(base_url=tight_gateway.openai_base, api_key=jwt, max_retries=2)
    first = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hello there"}])
    assert first.choices[0].message.content
    upstream_before = fake.stats()["requests"]
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "again"}])
    assert err.value.status_code == 429
    assert err.value.response.headers["x-should-retry"] == "false"
    assert int(err.value.response.headers["retry-after"]) > 0
    assert "daily token limit of 10" in err.value.message
    assert fake.stats()["requests"] == upstream_before, "the refused call never reached the upstream"
    rows = tight_gateway.rows(user, expect=2)
    # Exactly one refusal row: the SDK (max_retries=2) did not retry.
    assert [(r["status"], r["usage_source"]) for r in rows] == [(200, "reported"), (429, "none")]


def test_used_up_quota_raises_a_429_client_error_in_genai(tight_gateway, fake, user):
    jwt = tight_gateway.token(user)
    client = genai.Client(api_key=jwt, http_options=types.HttpOptions(base_url=tight_gateway.gemini_base))
    client.models.generate_content(model="gemini-2.5-flash", contents="hello there")
    upstream_before = fake.stats()["requests"]
    with pytest.raises(errors.ClientError) as err:
        client.models.generate_content(model="gemini-2.5-flash", contents="again")
    assert err.value.code == 429
    assert err.value.status == "RESOURCE_EXHAUSTED"
    assert fake.stats()["requests"] == upstream_before
    rows = tight_gateway.rows(user, expect=2)
    assert [r["status"] for r in rows] == [200, 429]

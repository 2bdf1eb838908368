"""Requests- and tokens-per-minute limits: 429 with Retry-After, counted in the database."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import openai
import pytest

from otari_server.accounting import rate_limits
from tests.support.gateway import Gateway


@pytest.fixture(autouse=True)
def _inside_one_window() -> None:
    """Limits count per clock minute: start with 8 s or more left in this one, so that a
    test's requests (and its gateway's start) never straddle two windows, where the count
    starts again and a request the test expects refused is served."""
    while datetime.now(UTC).second >= 52:
        time.sleep(0.1)


def ask(client: openai.OpenAI) -> None:
    client.chat.completions.create(
        model="fake:gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )


def test_requests_per_minute_on_a_key(gateway: Gateway) -> None:
    client = gateway.client(gateway.key(rpm_limit=2))
    ask(client)
    ask(client)
    with pytest.raises(openai.RateLimitError) as info:
        ask(client)
    retry = int(info.value.response.headers["retry-after"])
    assert 1 <= retry <= 60
    assert "2 requests per minute" in str(info.value)
    assert len(gateway.openai_fake.requests) == 2
    # The refused request reached no provider; its row says it was refused, at no cost.
    refused, *served = gateway.usage(3)
    assert [row["status"] for row in served] == ["success", "success"]
    assert refused["status"] == "refused" and refused["status_code"] == 429
    assert refused["cost"] is None and "2 requests per minute" in refused["error_message"]


def test_user_limit_spans_all_its_keys(gateway: Gateway) -> None:
    gateway.user("alice")
    gateway.admin.patch("/v1/users/alice", json={"rpm_limit": 1})
    ask(gateway.client(gateway.key(user_id="alice")))
    with pytest.raises(openai.RateLimitError):
        ask(gateway.client(gateway.key(user_id="alice")))


def test_tokens_per_minute_counts_settled_tokens(gateway: Gateway) -> None:
    client = gateway.client(gateway.key(tpm_limit=6))
    ask(client)  # 1 prompt + 5 completion tokens: the allowance is used up
    gateway.usage(1)
    with pytest.raises(openai.RateLimitError) as info:
        ask(client)
    assert "6 tokens per minute" in str(info.value)


def test_limits_are_settable_and_clearable_through_the_api(gateway: Gateway) -> None:
    key_id = gateway.admin.post("/v1/keys", json={"rpm_limit": 5}).json()["id"]
    assert gateway.admin.get(f"/v1/keys/{key_id}").json()["rpm_limit"] == 5
    cleared = gateway.admin.patch(f"/v1/keys/{key_id}", json={"rpm_limit": None}).json()
    assert cleared["rpm_limit"] is None
    assert gateway.admin.post("/v1/keys", json={"rpm_limit": 0}).status_code == 422


def test_window_arithmetic() -> None:
    at = datetime(2026, 1, 1, 12, 0, 45, tzinfo=UTC)
    assert rate_limits.retry_after(at) == 15
    assert rate_limits.window(at) == int(at.timestamp()) // 60

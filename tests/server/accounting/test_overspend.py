"""How far a budget can be overspent, per endpoint (docs/billing.md, "Bounds on overspend").

- /v1/responses with stored state reserves the model's context window, the most input the
  provider can bill for it;
- a non-streamed answer that reports more than was reserved is settled in full, and the
  user's next request is refused until the budget period resets.

(Transcriptions: test_audio_transcriptions.py, reserved by the header duration; batches:
test_batches.py, the worst case of every line.)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal

import anthropic
import openai
import pytest

from tests.support.fakes import DEFAULT_TEXT, Behaviour
from tests.support.fakes_responses import FakeOpenAIResponses
from tests.support.gateway import Gateway, gateway_factory_fixture

OPENAI_MODEL = "fake:gpt-4o-mini"
CLAUDE_MODEL = "claude:claude-sonnet"


@pytest.fixture
def gateway_factory(database_url: str) -> Iterator[Callable[..., Gateway]]:
    yield from gateway_factory_fixture(database_url, FakeOpenAIResponses)


def start(factory: Callable[..., Gateway], **overrides: object) -> Gateway:
    gateway = factory(**overrides)
    gateway.price(OPENAI_MODEL, "1", "2")
    gateway.price(CLAUDE_MODEL, "1", "2")
    return gateway


def fake(gateway: Gateway) -> FakeOpenAIResponses:
    assert isinstance(gateway.openai_fake, FakeOpenAIResponses)
    return gateway.openai_fake


# -- /v1/responses: stored state is bounded by the context window -----------------------------


def test_previous_response_id_reserves_the_context_window(
    gateway_factory: Callable[..., Gateway],
) -> None:
    gateway = start(gateway_factory, default_context_window=1000)
    gateway.user("bob", max_budget="0.001")
    client = gateway.client(gateway.key(user_id="bob"))
    first = client.responses.create(
        model=OPENAI_MODEL, input="say hello please", max_output_tokens=10
    )
    calls = len(fake(gateway).requests)
    # The body alone is a few tokens; the stored context may be the whole window:
    # 1000 x $1/M + 10 x $2/M = 0.00102, more than the 0.001 budget.
    with pytest.raises(openai.APIStatusError) as caught:
        client.responses.create(
            model=OPENAI_MODEL,
            input="and again",
            previous_response_id=first.id,
            max_output_tokens=10,
        )
    assert caught.value.status_code == 402
    assert "this request may cost up to 0.00102," in caught.value.message
    fake(gateway).conversations["conv_1"] = 500
    with pytest.raises(openai.APIStatusError) as caught:
        client.responses.create(
            model=OPENAI_MODEL, input="and again", conversation="conv_1", max_output_tokens=10
        )
    assert caught.value.status_code == 402
    assert "this request may cost up to 0.00102," in caught.value.message
    assert len(fake(gateway).requests) == calls


def test_a_per_model_window_lets_it_fit_and_the_stored_context_is_billed(
    gateway_factory: Callable[..., Gateway],
) -> None:
    gateway = start(
        gateway_factory, default_context_window=1000, context_windows={OPENAI_MODEL: 600}
    )
    gateway.user("bob", max_budget="0.001")
    client = gateway.client(gateway.key(user_id="bob"))
    first = client.responses.create(
        model=OPENAI_MODEL, input="say hello please", max_output_tokens=10
    )
    second = client.responses.create(
        model=OPENAI_MODEL, input="and again", previous_response_id=first.id, max_output_tokens=10
    )
    # The provider bills the stored turn again: 2 new + 3 + 5 stored = 10 tokens in.
    assert second.usage is not None and second.usage.input_tokens == 10
    gateway.usage(2)  # settled (write-behind): its 0.00062 hold is given back
    fake(gateway).conversations["conv_1"] = 500
    third = client.responses.create(
        model=OPENAI_MODEL, input="and again", conversation={"id": "conv_1"}, max_output_tokens=10
    )
    assert third.usage is not None and third.usage.input_tokens == 502
    rows = gateway.usage(3)
    assert [row["cost"] for row in rows] == [
        Decimal("0.000512"),  # 502 x $1/M + 5 x $2/M
        Decimal("0.00002"),  # 10 x $1/M + 5 x $2/M
        Decimal("0.000013"),
    ]  # 3 x $1/M + 5 x $2/M
    user = gateway.get_user("bob")
    assert user["spend"] == Decimal("0.000545") and user["reserved"] == 0


def test_translated_providers_refuse_stored_state_without_reserving_the_window(
    gateway_factory: Callable[..., Gateway],
) -> None:
    gateway = start(gateway_factory, default_context_window=1000)
    gateway.user("bob", max_budget="0.001")
    client = gateway.client(gateway.key(user_id="bob"))
    with pytest.raises(openai.BadRequestError):
        client.responses.create(
            model=CLAUDE_MODEL, input="hi", previous_response_id="resp_x", max_output_tokens=10
        )
    assert gateway.anthropic_fake.requests == []


# -- a non-streamed answer past its reservation -----------------------------------------------


def overshooting_chat(text: str = DEFAULT_TEXT) -> dict[str, object]:
    """A chat answer whose provider ignored max_tokens: 100,000 tokens out."""
    return {
        "id": "chatcmpl-over",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 100_000, "total_tokens": 100_010},
    }


def overshooting_message() -> dict[str, object]:
    return {
        "id": "msg_over",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet",
        "content": [{"type": "text", "text": DEFAULT_TEXT}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 100_000},
    }


def period_budget(gateway: Gateway, user_id: str, max_budget: str, seconds: int) -> None:
    budget = gateway.admin.post(
        "/v1/budgets",
        content=(f'{{"max_budget": {max_budget}, "budget_duration_sec": {seconds}}}'),
        headers={"content-type": "application/json"},
    )
    assert budget.status_code == 200, budget.text
    reply = gateway.admin.post(
        "/v1/users", json={"user_id": user_id, "budget_id": budget.json()["budget_id"]}
    )
    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize("endpoint", ["chat", "messages"])
def test_an_overshooting_answer_is_settled_in_full_and_blocks_until_the_reset(
    gateway_factory: Callable[..., Gateway], endpoint: str
) -> None:
    gateway = start(gateway_factory)
    period_budget(gateway, "carol", "0.001", seconds=3)
    key = gateway.key(user_id="carol")

    def ask() -> None:
        if endpoint == "chat":
            gateway.client(key).chat.completions.create(
                model=OPENAI_MODEL, max_tokens=5, messages=[{"role": "user", "content": "hi"}]
            )
        else:
            client = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)
            client.messages.create(
                model=CLAUDE_MODEL, max_tokens=5, messages=[{"role": "user", "content": "hi"}]
            )

    if endpoint == "chat":
        gateway.openai_fake.push(Behaviour(body=overshooting_chat()))
    else:
        gateway.anthropic_fake.push(Behaviour(body=overshooting_message()))
    ask()
    [row] = gateway.usage(1)
    # Settled in full: 10 x $1/M + 100,000 x $2/M, five times the budget.
    assert row["cost"] == Decimal("0.20001") and row["status"] == "success"
    user = gateway.get_user("carol")
    assert user["spend"] == Decimal("0.20001") and user["reserved"] == 0
    with pytest.raises((openai.APIStatusError, anthropic.APIStatusError)) as caught:
        ask()
    assert caught.value.status_code == 402
    assert "0 of 0.001 remains until" in str(caught.value)
    # The next period starts from nothing spent: the same request runs again.
    resets = datetime.fromisoformat(user["next_budget_reset_at"])
    while datetime.now(resets.tzinfo) < resets:
        time.sleep(0.05)
    ask()
    # Write-behind: wait for the settlement (refusals may or may not leave rows of their own).
    deadline = time.monotonic() + 10
    while gateway.get_user("carol")["spend"] != Decimal("0.000011") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gateway.get_user("carol")["spend"] == Decimal("0.000011")  # 1 + 5 tokens

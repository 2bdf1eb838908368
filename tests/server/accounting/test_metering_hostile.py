"""Metering against hostile providers: no provider number can stop or skew the books.

A fake provider on loopback reports absurd, negative, textual, fractional, boolean and
missing token counts; the answer is still served, its usage row says the numbers were
refused, it is billed from the gateway's own estimate, and everyone else keeps settling.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import openai
import pytest

from otari_server.accounting import counts
from tests.support.fakes_responses import FakeOpenAIResponses
from tests.support.gateway import ANTHROPIC_KEY, Gateway, gateway_factory_fixture

MODEL = "fake:gpt-4o-mini"
# Input is free and output costs $2000/M: max_tokens=5 makes the worst case exactly 0.01.
WORST = Decimal("0.01")
HI = [{"role": "user", "content": "hi"}]


def chat_answer(usage: Any) -> dict[str, Any]:
    """An OpenAI chat completion reporting `usage` verbatim."""
    answer: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "served anyway"},
            }
        ],
    }
    if usage is not None:
        answer["usage"] = usage
    return answer


def priced(gateway: Gateway, input_price: str = "0") -> None:
    gateway.price(MODEL, input_price, "2000")


BAD_PROMPT_TOKENS = [10**14, 3_000_000_000, 2**63 + 5, -5, "12x", 12.5, True, [1], {"n": 1}, "1e3"]


@pytest.mark.parametrize("prompt_tokens", BAD_PROMPT_TOKENS, ids=repr)
def test_bad_counts_are_served_flagged_and_billed_the_estimate(
    gateway: Gateway, prompt_tokens: object
) -> None:
    priced(gateway)
    gateway.user("victim", max_budget="1")
    gateway.user("other", max_budget="1")
    gateway.openai_fake.push(
        body=chat_answer(
            {"prompt_tokens": prompt_tokens, "completion_tokens": 5, "total_tokens": 5}
        )
    )
    victim = gateway.client(gateway.key(user_id="victim"))
    reply = victim.chat.completions.create(model=MODEL, messages=HI, max_tokens=5)
    assert reply.choices[0].message.content == "served anyway"
    # Another user's request right behind it settles normally, to the exact amount.
    gateway.client(gateway.key(user_id="other")).chat.completions.create(
        model=MODEL, messages=HI, max_tokens=5
    )
    other, flagged = gateway.usage(2)
    assert flagged["user_id"] == "victim"
    assert flagged["status"] == "invalid_usage" and flagged["status_code"] == 200
    assert flagged["error_message"].startswith("provider usage refused (prompt_tokens: ")
    assert flagged["error_message"].endswith("billed from the gateway's estimate")
    assert flagged["cost"] == WORST  # the reservation's worst case, never the bad number
    assert flagged["completion_tokens"] == 5
    assert other["status"] == "success" and other["cost"] == WORST
    for user in ("victim", "other"):
        books = gateway.get_user(user)
        assert books["spend"] == WORST and books["reserved"] == 0


@pytest.mark.parametrize(("prompt_tokens", "completion_tokens"), [("12", "5"), (12.0, 5.0)])
def test_numeric_strings_and_whole_floats_are_converted(
    gateway: Gateway, prompt_tokens: object, completion_tokens: object
) -> None:
    priced(gateway, input_price="1000")
    gateway.openai_fake.push(
        body=chat_answer({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens})
    )
    gateway.client(gateway.key()).chat.completions.create(model=MODEL, messages=HI, max_tokens=5)
    [row] = gateway.usage(1)
    assert row["status"] == "success" and row["status_code"] == 200
    assert (row["prompt_tokens"], row["completion_tokens"]) == (12, 5)
    assert row["cost"] == Decimal("0.022")  # 12 x $1000/M + 5 x $2000/M


def test_missing_usage_still_settles(gateway: Gateway) -> None:
    priced(gateway)
    gateway.user("u", max_budget="1")
    gateway.openai_fake.push(body=chat_answer(None))
    gateway.client(gateway.key(user_id="u")).chat.completions.create(
        model=MODEL, messages=HI, max_tokens=5
    )
    [row] = gateway.usage(1)
    assert row["status_code"] == 200
    assert gateway.get_user("u")["reserved"] == 0


NO_COUNTS = {
    "prompt_tokens": None,
    "completion_tokens": None,
    "input_tokens": None,
    "output_tokens": None,
}
ESTIMATED = "usage estimated by the gateway (no usage"


@pytest.mark.parametrize("usage", [{}, NO_COUNTS], ids=["empty", "nulls"])
def test_a_usage_without_counts_is_no_report_and_billed_the_estimate(
    gateway: Gateway, usage: dict[str, Any]
) -> None:
    # Billed as reported, such an answer would be free.
    priced(gateway, input_price="1000")
    gateway.price("claude:claude-sonnet", "1000", "2000")
    gateway.price("fake:text-embedding-3-small", "1000", "0")
    client = gateway.client(gateway.key())
    gateway.openai_fake.push(body=chat_answer(usage))
    client.chat.completions.create(model=MODEL, messages=HI, max_tokens=5)
    gateway.openai_fake.push(usage=usage or NO_COUNTS)  # the stream's usage chunk
    list(client.chat.completions.create(model=MODEL, messages=HI, max_tokens=5, stream=True))
    gateway.anthropic_fake.push(usage=usage or NO_COUNTS)
    list(
        client.chat.completions.create(
            model="claude:claude-sonnet", messages=HI, max_tokens=5, stream=True
        )
    )
    gateway.anthropic_fake.push(body={**anthropic_answer(7), "usage": usage})
    client.chat.completions.create(model="claude:claude-sonnet", messages=HI, max_tokens=5)
    gateway.openai_fake.push(
        body={
            "object": "list",
            "model": "text-embedding-3-small",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.5]}],
            "usage": usage,
        }
    )
    client.embeddings.create(model="fake:text-embedding-3-small", input="hello there")
    rows = gateway.usage(5)
    for row in rows:
        assert row["status"] == "success" and row["error_message"].startswith(ESTIMATED), row
        assert row["prompt_tokens"] > 0 and row["cost"] > 0


def anthropic_answer(output_tokens: object, input_tokens: object = 4) -> dict[str, Any]:
    """An Anthropic message reporting these counts verbatim."""
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet",
        "content": [{"type": "text", "text": "served anyway"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def test_bad_counts_from_an_anthropic_provider_are_refused_too(gateway: Gateway) -> None:
    gateway.user("u", max_budget="1")
    # 3 input + 15 output per million (the fixture's claude price); max_tokens 100.
    gateway.anthropic_fake.push(body=anthropic_answer(7, input_tokens=10**14))
    client = anthropic.Anthropic(
        base_url=gateway.url, api_key=gateway.key(user_id="u"), max_retries=0
    )
    with client:
        reply = client.messages.create(model="claude:claude-sonnet", max_tokens=100, messages=HI)
    assert reply.content[0].text == "served anyway"  # type: ignore[union-attr]
    [row] = gateway.usage(1)
    assert row["status"] == "invalid_usage" and row["status_code"] == 200
    assert "input_tokens" in row["error_message"] or "prompt_tokens" in row["error_message"]
    # Billed the worst case: the estimated prompt at $3/M plus 100 output tokens at $15/M.
    expected = (Decimal(row["prompt_tokens"]) * 3 + 100 * 15) / 1_000_000
    assert row["completion_tokens"] == 100 and row["cost"] == expected
    assert row["prompt_tokens"] < 1000  # the estimate of a tiny request, not 10^14
    assert gateway.get_user("u")["spend"] == expected
    assert ANTHROPIC_KEY not in row["error_message"]


@pytest.mark.parametrize("usage", ["lots", [4, 7], 7], ids=repr)
def test_a_translated_answer_whose_usage_is_not_an_object_is_served_and_refused(
    gateway: Gateway, usage: object
) -> None:
    # The translation reads such a usage as none; metering refuses it (the worst case).
    client = gateway.client(gateway.key())
    for stream in (False, True):
        gateway.anthropic_fake.push(body={**anthropic_answer(7), "usage": usage})
        reply = client.chat.completions.create(
            model="claude:claude-sonnet", messages=HI, max_tokens=100, stream=stream
        )
        if stream:
            text = "".join(c.choices[0].delta.content or "" for c in reply if c.choices)  # type: ignore[union-attr]
        else:
            text = reply.choices[0].message.content  # type: ignore[union-attr]
        assert text == "served anyway"
        gateway.anthropic_fake.push(body={**anthropic_answer(7), "usage": usage})
        answer = client.responses.create(
            model="claude:claude-sonnet", input="hi", max_output_tokens=100
        )
        assert answer.output_text == "served anyway"
    for row in gateway.usage(4):
        assert row["status"] == "invalid_usage" and row["status_code"] == 200, row
        assert "usage is not an object" in row["error_message"]
        assert row["completion_tokens"] == 100  # the request's max_tokens, never 0


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("output_tokens", [True, 7.5, "7x", [7]], ids=repr)
def test_non_integer_counts_on_the_native_messages_path_are_refused(
    gateway: Gateway, output_tokens: object, stream: bool
) -> None:
    # /v1/messages to an Anthropic provider is not a translation: the same rules as on
    # every other native path (true is not 1, 7.5 is not a count), never read as 0.
    gateway.user("u", max_budget="1")
    gateway.anthropic_fake.push(body=anthropic_answer(output_tokens))
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        reply = http.post(
            "/v1/messages",
            headers={"x-api-key": gateway.key(user_id="u")},
            json={
                "model": "claude:claude-sonnet",
                "max_tokens": 100,
                "messages": HI,
                "stream": stream,
            },
        )
    assert reply.status_code == 200 and "served anyway" in reply.text
    [row] = gateway.usage(1)
    assert row["status"] == "invalid_usage"
    assert row["error_message"].startswith("provider usage refused (output_tokens: ")
    # Billed the worst case: the estimated prompt at $3/M plus 100 output tokens at $15/M.
    assert row["completion_tokens"] == 100
    assert row["cost"] == (Decimal(row["prompt_tokens"]) * 3 + 100 * 15) / 1_000_000
    assert gateway.get_user("u")["spend"] == row["cost"]


def test_sequential_requests_see_their_own_settlements(
    gateway_factory: Callable[..., Gateway],
) -> None:
    # A long write-behind window: without settling a user's finished requests before their
    # next reservation, the third request below would find the first two still held.
    gateway = gateway_factory(usage_flush_interval=30)
    priced(gateway)
    gateway.user("seq", max_budget="0.05")
    client = gateway.client(gateway.key(user_id="seq"))
    # max_tokens=10 holds 0.02; the answer (5 tokens) costs 0.01. The budget fits four.
    for _ in range(4):
        client.chat.completions.create(model=MODEL, messages=HI, max_tokens=10)
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model=MODEL, messages=HI, max_tokens=10)
    assert refused.value.status_code == 402
    assert "this request may cost up to 0.02, 0.01 of 0.05 remains" in refused.value.message, (
        refused.value.message
    )
    user = gateway.get_user("seq")
    assert user["spend"] == Decimal("0.04") and user["reserved"] == 0


# -- the rules themselves (pure) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, 0),
        (0, 0),
        (7, 7),
        ("12", 12),
        (" 12 ", 12),
        (12.0, 12),
        (counts.MAX_TOKENS, counts.MAX_TOKENS),
    ],
)
def test_count_accepts(value: object, expected: int) -> None:
    assert counts.count(value, "x") == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (True, "x: True is a boolean, not a count"),
        (False, "x: False is a boolean, not a count"),
        (-1, "x: -1 is negative"),
        (counts.MAX_TOKENS + 1, "x: 100000001 is over the ceiling of 100000000"),
        (2**63 + 5, "x: 9223372036854775813 is over the ceiling of 100000000"),
        (12.5, "x: 12.5 is not a whole number"),
        (float("nan"), "x: nan is not a whole number"),
        ("12.5", "x: '12.5' is not a number"),
        ("-3", "x: '-3' is not a number"),
        ("١٢", "x: '١٢' is not a number"),  # Arabic-Indic digits: decimal, but not ASCII
        ([1], "x: a list is not a count"),
    ],
)
def test_count_refuses(value: object, reason: str) -> None:
    with pytest.raises(counts.BadCount) as refused:
        counts.count(value, "x")
    assert str(refused.value) == reason


def test_seconds_rules() -> None:
    assert counts.seconds("2.5") == Decimal("2.5")
    assert counts.seconds(3) == Decimal(3)
    for bad in (True, -1, "three", float("inf"), counts.MAX_AUDIO_SECONDS + 1, [2]):
        with pytest.raises(counts.BadCount):
            counts.seconds(bad)


@pytest.mark.parametrize("prompt_tokens", [-1, "lots", 10**14, False])
def test_pass_through_endpoints_refuse_bad_counts_too(
    gateway: Gateway, prompt_tokens: object
) -> None:
    gateway.price("fake:text-embedding-3-small", "1000", "0")
    gateway.openai_fake.push(
        body={
            "object": "list",
            "model": "text-embedding-3-small",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.25]}],
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": 3},
        }
    )
    raw = b'{"model": "fake:text-embedding-3-small", "input": "hello there"}'
    reply = httpx.post(
        f"{gateway.url}/v1/embeddings",
        content=raw,
        timeout=30,
        headers={"Authorization": f"Bearer {gateway.key()}", "content-type": "application/json"},
    )
    assert reply.status_code == 200 and reply.json()["data"][0]["embedding"] == [0.5, 0.25]
    [row] = gateway.usage(1)
    assert row["status"] == "invalid_usage" and row["status_code"] == 200
    # The estimate: a token per three body bytes, plus one, at $1000/M.
    assert len(raw) == 64 and row["prompt_tokens"] == 22
    assert row["cost"] == Decimal("0.022")


@pytest.mark.parametrize("cache_write_tokens", [2**63 + 5, 10**14, True, "7x"], ids=repr)
def test_responses_cache_write_tokens_are_checked_too(
    database_url: str, cache_write_tokens: object
) -> None:
    # 2**63 + 5 was stored as is: the database refused the row, so the request was never
    # billed and its hold never released; 10**14 was kept and true counted as 1.
    factory = gateway_factory_fixture(database_url, FakeOpenAIResponses)
    try:
        gateway = next(factory)()
        gateway.price(MODEL, "1000", "2000")
        gateway.user("u", max_budget="1")
        gateway.openai_fake.push(
            body={
                "id": "resp_1",
                "object": "response",
                "created_at": 1,
                "model": "gpt-4o-mini",
                "status": "completed",
                "output": [
                    {
                        "type": "message",
                        "id": "msg_1",
                        "status": "completed",
                        "role": "assistant",
                        "content": [
                            {"type": "output_text", "text": "served anyway", "annotations": []}
                        ],
                    }
                ],
                "usage": {
                    "input_tokens": 10,
                    "output_tokens": 3,
                    "total_tokens": 13,
                    "input_tokens_details": {
                        "cached_tokens": 0,
                        "cache_write_tokens": cache_write_tokens,
                    },
                    "output_tokens_details": {"reasoning_tokens": 0},
                },
            }
        )
        raw = b'{"model": "fake:gpt-4o-mini", "input": "hi", "max_output_tokens": 5}'
        reply = httpx.post(
            f"{gateway.url}/v1/responses",
            content=raw,
            timeout=30,
            headers={
                "Authorization": f"Bearer {gateway.key(user_id='u')}",
                "content-type": "application/json",
            },
        )
        assert reply.status_code == 200 and "served anyway" in reply.text
        [row] = gateway.usage(1)
        assert row["status"] == "invalid_usage"
        assert row["error_message"].startswith("provider usage refused (cache_write_tokens: ")
        # The worst case: a token per three body bytes plus one at $1000/M, 5 out at $2000/M.
        assert len(raw) == 68 and row["prompt_tokens"] == 23
        assert row["cost"] == Decimal("0.033") and row["cache_write_tokens"] is None
        user = gateway.get_user("u")
        assert user["spend"] == Decimal("0.033") and user["reserved"] == 0
    finally:
        factory.close()


ABSURD = [10**40, 7.5, True]  # past 64 bits (orjson reads it as a float), a fraction, a bool


def refused_and_billed_the_worst_case(gateway: Gateway, rows: int) -> None:
    for row in gateway.usage(rows):
        assert row["status"] == "invalid_usage", row
        assert "provider usage refused (" in row["error_message"]
        assert row["completion_tokens"] == 100  # the request's max_tokens, never 0


@pytest.mark.parametrize("output_tokens", ABSURD, ids=repr)
def test_translated_answers_check_the_providers_own_numbers(
    gateway: Gateway, output_tokens: object
) -> None:
    # A translation reads a number it cannot carry as 0; metering reads the provider's own
    # numbers first, so that such an answer is refused and billed the worst case, not 0.
    client = gateway.client(gateway.key())
    for stream in (False, True):  # a JSON answer to a stream request is translated whole
        gateway.anthropic_fake.push(body=anthropic_answer(output_tokens))
        reply = client.chat.completions.create(
            model="claude:claude-sonnet", messages=HI, max_tokens=100, stream=stream
        )
        if stream:
            assert "served anyway" in "".join(
                c.choices[0].delta.content or ""
                for c in reply
                if c.choices  # type: ignore[union-attr]
            )
        gateway.anthropic_fake.push(body=anthropic_answer(output_tokens))
        answer = client.responses.create(
            model="claude:claude-sonnet", input="hi", max_output_tokens=100, stream=stream
        )
        if stream:
            assert list(answer)[-1].type == "response.completed"  # type: ignore[arg-type]
        gateway.openai_fake.push(
            body=chat_answer({"prompt_tokens": 4, "completion_tokens": output_tokens})
        )
        with httpx.Client(base_url=gateway.url, timeout=30) as http:
            reply = http.post(
                "/v1/messages",
                headers={"x-api-key": gateway.key()},
                json={"model": MODEL, "max_tokens": 100, "messages": HI, "stream": stream},
            )
        assert reply.status_code == 200 and "served anyway" in reply.text
    refused_and_billed_the_worst_case(gateway, 6)

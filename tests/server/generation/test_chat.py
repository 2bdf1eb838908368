"""POST /v1/chat/completions end to end: official openai SDK -> otari -> fake provider servers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from decimal import Decimal

import httpx
import openai
import pytest

from otari_server.jsonio import loads
from tests.support.fakes import Behaviour, ToolCall
from tests.support.gateway import ANTHROPIC_KEY, UPSTREAM_KEY, Gateway
from tests.support.servers import MASTER_KEY


def test_non_streaming_forwards_every_field_and_meters_exactly(gateway: Gateway) -> None:
    gateway.user("alice", max_budget="10")
    client = gateway.client(gateway.key(user_id="alice"))
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    reply = client.chat.completions.create(
        model="fake:gpt-4o-mini",
        messages=[{"role": "user", "content": "say hello please"}],
        tools=tools,
        tool_choice="auto",
        response_format={"type": "text"},
        stop=["END"],
        n=1,
        seed=7,
        logprobs=False,
        temperature=0.3,
        extra_body={"custom_knob": {"a": 1}},
    )
    assert reply.choices[0].message.content == "Hello from the fake provider"
    sent = gateway.openai_fake.last.body
    assert sent["model"] == "gpt-4o-mini"
    for field, value in (
        ("tools", tools),
        ("tool_choice", "auto"),
        ("stop", ["END"]),
        ("seed", 7),
        ("logprobs", False),
        ("custom_knob", {"a": 1}),
        ("response_format", {"type": "text"}),
        ("temperature", 0.3),
    ):
        assert sent[field] == value, field
    assert gateway.openai_fake.last.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    [row] = gateway.usage(1)
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (3, 5, 8)
    # 3 input tokens at $1/M plus 5 output tokens at $2/M, exactly.
    assert row["cost"] == Decimal("0.000013")
    assert row["user_id"] == "alice" and row["status"] == "success"
    assert row["model"] == "fake:gpt-4o-mini" and row["provider"] == "fake"
    assert row["endpoint"] == "/v1/chat/completions" and row["latency_ms"] is not None
    user = gateway.get_user("alice")
    assert user["spend"] == Decimal("0.000013") and user["reserved"] == 0


def test_streaming_relays_chunks_strips_injected_usage_and_bills(gateway: Gateway) -> None:
    client = gateway.client(gateway.key())
    stream = client.chat.completions.create(
        model="fake:gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake provider"
    assert all(c.usage is None for c in chunks)  # the client did not ask for usage
    assert all(c.choices for c in chunks)
    assert gateway.openai_fake.last.body["stream_options"] == {"include_usage": True}
    [row] = gateway.usage(1)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (1, 5)
    assert row["cost"] == Decimal("0.000011")


def test_streaming_keeps_usage_when_the_client_asked(gateway: Gateway) -> None:
    client = gateway.client(gateway.key())
    chunks = list(
        client.chat.completions.create(
            model="fake:gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


def test_streaming_tool_calls_pass_through(gateway: Gateway) -> None:
    gateway.openai_fake.push(tool_calls=(ToolCall("get_weather", {"city": "Paris"}),))
    client = gateway.client(gateway.key())
    chunks = list(
        client.chat.completions.create(
            model="fake:gpt-4o-mini",
            messages=[{"role": "user", "content": "weather?"}],
            stream=True,
            tools=[{"type": "function", "function": {"name": "get_weather"}}],
        )
    )
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].function is not None and calls[0].function.name == "get_weather"
    arguments = "".join(tc.function.arguments or "" for tc in calls if tc.function)
    assert arguments == '{"city":"Paris"}'
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_first_token_arrives_before_the_stream_ends(gateway: Gateway) -> None:
    gate = gateway.openai_fake.gate()
    gateway.openai_fake.push(Behaviour(gate=gate, hold_after=2))
    client = gateway.client(gateway.key())
    stream = client.chat.completions.create(
        model="fake:gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    first = next(iter(stream))  # would block forever if the gateway buffered the stream
    assert first.choices[0].delta.role == "assistant"
    gate.release()
    rest = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in rest if c.choices)


def test_async_client(gateway: Gateway) -> None:
    key = gateway.key()

    async def run() -> str:
        client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)
        reply = await client.chat.completions.create(
            model="fake/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        await client.close()
        return reply.choices[0].message.content or ""

    assert asyncio.run(run()) == "Hello from the fake provider"
    assert gateway.openai_fake.last.body["model"] == "gpt-4o-mini"


def test_anthropic_provider_translated_both_ways(gateway: Gateway) -> None:
    gateway.user("alice", max_budget="10")
    client = gateway.client(gateway.key(user_id="alice"))
    reply = client.chat.completions.create(
        model="claude:claude-sonnet",
        max_tokens=100,
        stop=["STOP"],
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello there"},
        ],
    )
    assert reply.choices[0].message.content == "Hello from the fake provider"
    assert reply.choices[0].finish_reason == "stop"
    sent = gateway.anthropic_fake.last
    assert sent.path == "/v1/messages" and sent.headers["x-api-key"] == ANTHROPIC_KEY
    assert sent.body["system"] == "be brief" and sent.body["max_tokens"] == 100
    assert sent.body["stop_sequences"] == ["STOP"] and sent.body["model"] == "claude-sonnet"
    [row] = gateway.usage(1)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (4, 5)
    assert row["cost"] == Decimal("0.000087")  # 4 x $3/M + 5 x $15/M


def test_anthropic_streaming_and_tool_calls(gateway: Gateway) -> None:
    client = gateway.client(gateway.key())
    chunks = list(
        client.chat.completions.create(
            model="claude:claude-sonnet",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake provider"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    gateway.anthropic_fake.push(tool_calls=(ToolCall("lookup", {"q": "x"}),))
    reply = client.chat.completions.create(
        model="claude:claude-sonnet",
        messages=[{"role": "user", "content": "look it up"}],
        tools=[
            {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
        ],
    )
    call = reply.choices[0].message.tool_calls
    assert call and call[0].function.name == "lookup"  # type: ignore[union-attr]
    assert call[0].function.arguments == '{"q":"x"}'  # type: ignore[union-attr]
    assert reply.choices[0].finish_reason == "tool_calls"
    assert gateway.anthropic_fake.last.body["tools"][0]["name"] == "lookup"
    rows = gateway.usage(2)
    assert all(r["status"] == "success" for r in rows)


def test_unknown_provider_and_malformed_model_list_providers(gateway: Gateway) -> None:
    client = gateway.client(gateway.key())
    for model in ("nope:gpt", "gpt-4o"):
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
        assert "claude, fake" in str(info.value)
    assert gateway.openai_fake.requests == []


def test_malformed_bodies_are_4xx_in_openai_shape(gateway: Gateway) -> None:
    headers = {"Authorization": f"Bearer {gateway.key()}", "content-type": "application/json"}
    with httpx.Client(base_url=gateway.url, headers=headers) as http:
        for body in (
            b"{not json",
            b"[1, 2]",
            b'{"model": "fake:gpt-4o-mini"}',
            b'{"model": "fake:gpt-4o-mini", "messages": []}',
            b'{"model": 3, "messages": [{"role": "user"}]}',
            b'{"model": "fake:gpt-4o-mini", "messages": [{}], "max_tokens": -1}',
            b"\xff\xfe",
        ):
            response = http.post("/v1/chat/completions", content=body)
            assert response.status_code == 400, body
            assert response.json()["error"]["type"] == "invalid_request_error"
    assert gateway.openai_fake.requests == []


def test_unpriced_models_are_refused_before_the_call(gateway: Gateway) -> None:
    client = gateway.client(gateway.key())
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="fake:unpriced", messages=[{"role": "user", "content": "x"}]
        )
    assert "no price" in str(info.value)
    assert gateway.openai_fake.requests == []


def test_unpriced_models_served_with_null_cost_when_allowed(
    gateway_factory: Callable[..., Gateway],
) -> None:
    gateway = gateway_factory(require_pricing=False)
    client = gateway.client(gateway.key())
    client.chat.completions.create(
        model="fake:unpriced", messages=[{"role": "user", "content": "x"}]
    )
    [row] = gateway.usage(1)
    assert row["cost"] is None and row["completion_tokens"] == 5


def test_attribution_rules(gateway: Gateway) -> None:
    gateway.user("alice")
    gateway.user("bob")
    alice = gateway.client(gateway.key(user_id="alice"))
    with pytest.raises(openai.PermissionDeniedError):
        alice.chat.completions.create(
            model="fake:gpt-4o-mini", user="bob", messages=[{"role": "user", "content": "x"}]
        )
    alice.chat.completions.create(
        model="fake:gpt-4o-mini", user="alice", messages=[{"role": "user", "content": "x"}]
    )
    master = gateway.client(MASTER_KEY)
    master.chat.completions.create(
        model="fake:gpt-4o-mini", user="bob", messages=[{"role": "user", "content": "x"}]
    )
    with pytest.raises(openai.NotFoundError):
        master.chat.completions.create(
            model="fake:gpt-4o-mini", user="ghost", messages=[{"role": "user", "content": "x"}]
        )
    keyless = gateway.key()
    gateway.client(keyless).chat.completions.create(
        model="fake:gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
    )
    rows = gateway.usage(3)
    assert sorted(str(r["user_id"]) for r in rows) == ["None", "alice", "bob"]
    keys = loads(gateway.admin.get("/v1/keys").text)
    unowned = next(k for k in keys if k["user_id"] is None)
    assert unowned["spend"] == Decimal("0.000011")  # a key without a user is metered itself
    assert len(gateway.openai_fake.requests) == 3


def test_budget_refusal_happens_before_any_provider_call(gateway: Gateway) -> None:
    gateway.user("poor", max_budget="0.000001")
    client = gateway.client(gateway.key(user_id="poor"))
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(
            model="fake:gpt-4o-mini", max_tokens=100, messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.status_code == 402
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "budget_exceeded"
    assert "Budget exceeded" in body["message"]
    assert gateway.openai_fake.requests == []


def _concurrent(gateway: Gateway, key: str, count: int) -> list[int]:
    async def one(client: httpx.AsyncClient) -> int:
        response = await client.post(
            "/v1/chat/completions",
            json={
                "model": "fake:gpt-4o-mini",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "hi"}],
            },
        )
        return response.status_code

    async def run() -> list[int]:
        async with httpx.AsyncClient(
            base_url=gateway.url,
            timeout=60,
            headers={"Otari-Key": key},
            limits=httpx.Limits(max_connections=count),
        ) as client:
            return list(await asyncio.gather(*(one(client) for _ in range(count))))

    return asyncio.run(run())


def test_concurrent_requests_never_overspend(gateway_factory: Callable[..., Gateway]) -> None:
    gateway = gateway_factory()
    # Input is free and output costs $2000/M: the worst case of max_tokens=5 is exactly 0.01,
    # which the real cost (5 tokens) matches, so a budget of 0.10 fits exactly ten requests.
    gateway.price("fake:gpt-4o-mini", "0", "2000")
    gateway.user("team", max_budget="0.10")
    key = gateway.key(user_id="team")
    gate = gateway.openai_fake.gate()
    gateway.openai_fake.default = Behaviour(gate=gate)
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.extend(_concurrent(gateway, key, 50)))
    runner.start()
    gate.wait_for(10)  # ten admitted requests are now held at the provider
    # Once ten are admitted the budget is full (reserved, later spent), whatever the order.
    gate.release()
    runner.join()
    assert sorted(result) == [200] * 10 + [402] * 40
    assert len(gateway.openai_fake.requests) == 10
    rows = gateway.usage(50)
    refused = [r for r in rows if r["status"] == "refused"]
    assert len(refused) == 40  # every 402 is visible, at no cost
    assert {(r["status_code"], r["cost"], r["user_id"]) for r in refused} == {(402, None, "team")}
    assert sum((r["cost"] or Decimal(0) for r in rows), Decimal(0)) == Decimal("0.1")
    user = gateway.get_user("team")
    assert user["spend"] == Decimal("0.1") and user["reserved"] == 0
    assert user["spend"] <= Decimal("0.10")

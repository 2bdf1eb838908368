"""Routes end to end: a live gateway before fake providers on loopback that refuse
connections, answer 429 with Retry-After, 5xx, time out, or drop a stream before and after
its first byte; both strategies; holds and settlements at the right target's price; on
SQLite and PostgreSQL. Clients are the official openai and anthropic SDKs."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import openai
import pytest

from otari_server.accounting import estimates
from otari_server.accounting.prices import Consumption, Price
from otari_server.jsonio import loads
from tests.support.fakes import Failure, FakeAnthropic, FakeOpenAI
from tests.support.gateway import ANTHROPIC_KEY, MASTER, UPSTREAM_KEY
from tests.support.servers import MASTER_KEY, free_port, make_settings, running

PRICES = {
    "a:gpt-4o-mini": ("1", "2"),
    "b:gpt-4o-mini": ("5", "10"),
    "claude:claude-fake": ("3", "15"),
    "dead:gpt-4o-mini": ("1", "2"),
    "slow:gpt-4o-mini": ("1", "2"),
}
MESSAGES: Any = [{"role": "user", "content": "Hello"}]


@dataclass
class Routing:
    """A gateway with providers a and b (OpenAI fakes), claude (Anthropic fake), dead
    (nothing listens) and slow (fake a, 0.5 s timeout)."""

    url: str
    a: FakeOpenAI
    b: FakeOpenAI
    claude: FakeAnthropic
    admin: httpx.Client
    stack: ExitStack

    def route(self, name: str, **definition: Any) -> None:
        response = self.admin.put(f"/v1/routes/{name}", json=definition)
        assert response.status_code == 200, response.text

    def client(self, key: str = MASTER_KEY) -> openai.OpenAI:
        client = openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0)
        self.stack.callback(client.close)
        return client

    def usage(self, count: int) -> list[dict[str, Any]]:
        deadline = threading.Event()
        for _ in range(500):
            rows: list[dict[str, Any]] = loads(self.admin.get("/v1/usage").text)
            if len(rows) >= count:
                assert len(rows) == count, rows
                return rows
            deadline.wait(0.02)
        raise AssertionError(f"{count} usage rows expected, got {rows}")

    def metric(self, name: str, **labels: str) -> float:
        text = self.admin.get("/metrics").text
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
            if match and ",".join(sorted(match.group(1).split(","))) == wanted:
                return float(match.group(2))
        return 0.0


@pytest.fixture
def routing(database_url: str) -> Iterator[Routing]:
    with ExitStack() as stack:
        a = stack.enter_context(FakeOpenAI(api_key=UPSTREAM_KEY))
        b = stack.enter_context(FakeOpenAI(api_key=UPSTREAM_KEY))
        claude = stack.enter_context(FakeAnthropic(api_key=ANTHROPIC_KEY, models=("claude-fake",)))
        providers = {
            "a": {"type": "openai", "base_url": a.base_url, "api_key": UPSTREAM_KEY},
            "b": {"type": "openai", "base_url": b.base_url, "api_key": UPSTREAM_KEY},
            "claude": {"type": "anthropic", "base_url": claude.base_url, "api_key": ANTHROPIC_KEY},
            "dead": {
                "type": "openai",
                "base_url": f"http://127.0.0.1:{free_port()}/v1",
                "api_key": UPSTREAM_KEY,
            },
            "slow": {
                "type": "openai",
                "base_url": a.base_url,
                "api_key": UPSTREAM_KEY,
                "timeout": 0.5,
            },
        }
        config_routes = {"smart": {"targets": ["dead:gpt-4o-mini", "a:gpt-4o-mini"]}}
        settings = make_settings(
            database_url,
            providers=providers,
            routes=config_routes,
            usage_flush_interval=0.05,
            metrics=True,
        )
        url = stack.enter_context(running(settings))
        admin = stack.enter_context(httpx.Client(base_url=url, headers=MASTER, timeout=30))
        for model_key, (inp, out) in PRICES.items():
            response = admin.post(
                "/v1/pricing",
                json={
                    "model_key": model_key,
                    "input_price_per_million": inp,
                    "output_price_per_million": out,
                },
            )
            assert response.status_code == 200, response.text
        yield Routing(url, a, b, claude, admin, stack)


def price(model_key: str) -> Price:
    inp, out = PRICES[model_key]
    return Price(model_key, None, Decimal(inp), Decimal(out))  # type: ignore[arg-type]


def billed(row: dict[str, Any]) -> Decimal:
    """What the row must cost at its own model's price."""
    return price(row["model"]).cost(
        Consumption(prompt_tokens=row["prompt_tokens"], completion_tokens=row["completion_tokens"])
    )


def test_connection_refused_falls_back_and_the_row_names_route_target_attempts(
    routing: Routing,
) -> None:
    answer = routing.client().chat.completions.create(model="smart", messages=MESSAGES)
    assert answer.choices[0].message.content == "Hello from the fake provider"
    [row] = routing.usage(1)
    assert (row["route"], row["model"], row["provider"], row["attempts"], row["status"]) == (
        "smart",
        "a:gpt-4o-mini",
        "a",
        2,
        "success",
    )
    assert row["cost"] == billed(row) and row["cost"] > 0
    assert (
        routing.metric(
            "otari_route_fallbacks_total",
            route="smart",
            target="dead:gpt-4o-mini",
            reason="connection",
        )
        == 1
    )
    assert (
        routing.metric(
            "otari_route_attempts_total", route="smart", target="a:gpt-4o-mini", outcome="success"
        )
        == 1
    )


def test_5xx_moves_to_an_anthropic_target_translated_and_billed_at_its_price(
    routing: Routing,
) -> None:
    routing.route("mixed", targets=["a:gpt-4o-mini", "claude:claude-fake"])
    routing.a.fail(500, "internal error")
    answer = routing.client().chat.completions.create(model="mixed", messages=MESSAGES)
    assert answer.choices[0].message.content == "Hello from the fake provider"
    assert len(routing.a.requests) == 1 and len(routing.claude.requests) == 1
    [row] = routing.usage(1)
    assert (row["route"], row["model"], row["provider"], row["attempts"]) == (
        "mixed",
        "claude:claude-fake",
        "claude",
        2,
    )
    assert row["cost"] == billed(row)


def test_529_and_503_move_on(routing: Routing) -> None:
    routing.route("three", targets=["a:gpt-4o-mini", "claude:claude-fake", "b:gpt-4o-mini"])
    routing.a.fail(503, "unavailable")
    routing.claude.fail(529, "Overloaded", type="overloaded_error")
    answer = routing.client().chat.completions.create(model="three", messages=MESSAGES)
    assert answer.choices[0].message.content == "Hello from the fake provider"
    [row] = routing.usage(1)
    assert (row["model"], row["attempts"]) == ("b:gpt-4o-mini", 3)
    assert row["cost"] == billed(row)


def test_429_retry_after_within_the_cap_retries_the_same_target(routing: Routing) -> None:
    routing.route(
        "patient", targets=["a:gpt-4o-mini", "b:gpt-4o-mini"], retries=1, retry_after_cap=1
    )
    routing.a.fail(429, "slow down", headers={"Retry-After": "0"})
    routing.client().chat.completions.create(model="patient", messages=MESSAGES)
    assert len(routing.a.requests) == 2 and len(routing.b.requests) == 0
    [row] = routing.usage(1)
    assert (row["model"], row["attempts"]) == ("a:gpt-4o-mini", 2)


def test_429_retry_after_over_the_cap_moves_on_at_once(routing: Routing) -> None:
    routing.route(
        "impatient", targets=["a:gpt-4o-mini", "b:gpt-4o-mini"], retries=3, retry_after_cap=1
    )
    routing.a.fail(429, "slow down", headers={"Retry-After": "120"})
    routing.client().chat.completions.create(model="impatient", messages=MESSAGES)
    assert len(routing.a.requests) == 1 and len(routing.b.requests) == 1
    [row] = routing.usage(1)
    assert (row["model"], row["attempts"]) == ("b:gpt-4o-mini", 2)
    assert (
        routing.metric(
            "otari_route_fallbacks_total",
            route="impatient",
            target="a:gpt-4o-mini",
            reason="rate_limited",
        )
        == 1
    )


def test_other_4xx_is_wrong_everywhere_and_does_not_move_on(routing: Routing) -> None:
    routing.route("strict", targets=["a:gpt-4o-mini", "b:gpt-4o-mini"], retries=2)
    routing.a.fail(400, "Invalid value for 'temperature'", param="temperature")
    with pytest.raises(openai.BadRequestError) as caught:
        routing.client().chat.completions.create(model="strict", messages=MESSAGES)
    assert "Invalid value for 'temperature'" in caught.value.message
    assert len(routing.a.requests) == 1 and len(routing.b.requests) == 0
    [row] = routing.usage(1)
    assert (row["status"], row["route"], row["model"], row["attempts"], row["cost"]) == (
        "error",
        "strict",
        "a:gpt-4o-mini",
        1,
        Decimal(0),
    )


@pytest.mark.parametrize("fallbacks", [True, False])
def test_context_length_moves_on_only_with_context_window_fallbacks(
    routing: Routing, fallbacks: bool
) -> None:
    routing.route(
        "long",
        targets=["a:gpt-4o-mini", "b:gpt-4o-mini"],
        context_window_fallbacks=fallbacks,
        retries=2,
    )
    routing.a.fail(
        400, "This model's maximum context length is 8192 tokens.", code="context_length_exceeded"
    )
    client = routing.client()
    if fallbacks:
        client.chat.completions.create(model="long", messages=MESSAGES)
        assert (len(routing.a.requests), len(routing.b.requests)) == (1, 1)
    else:
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="long", messages=MESSAGES)
        assert (len(routing.a.requests), len(routing.b.requests)) == (1, 0)


def test_a_provider_timeout_moves_on(routing: Routing) -> None:
    routing.route("timed", targets=["slow:gpt-4o-mini", "b:gpt-4o-mini"])
    routing.a.push(delay=5)
    routing.client().chat.completions.create(model="timed", messages=MESSAGES)
    [row] = routing.usage(1)
    assert (row["model"], row["attempts"]) == ("b:gpt-4o-mini", 2)
    assert (
        routing.metric(
            "otari_route_attempts_total",
            route="timed",
            target="slow:gpt-4o-mini",
            outcome="timeout",
        )
        == 1
    )


def test_the_route_deadline_covers_every_attempt(routing: Routing) -> None:
    routing.route("hurried", targets=["a:gpt-4o-mini", "b:gpt-4o-mini"], timeout=0.3)
    routing.a.push(delay=5)
    with pytest.raises(openai.InternalServerError) as caught:
        routing.client().chat.completions.create(model="hurried", messages=MESSAGES)
    assert caught.value.status_code == 504
    assert "deadline" in caught.value.message
    assert len(routing.b.requests) == 0
    [row] = routing.usage(1)
    assert (row["status"], row["attempts"]) == ("error", 1)


def test_a_stream_dropped_before_its_first_byte_moves_on(routing: Routing) -> None:
    routing.route("streamy", targets=["a:gpt-4o-mini", "claude:claude-fake"])
    routing.a.push(cut_after=0)
    stream = routing.client().chat.completions.create(
        model="streamy", messages=MESSAGES, stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "Hello from the fake provider"
    [row] = routing.usage(1)
    assert (row["status"], row["model"], row["attempts"]) == ("success", "claude:claude-fake", 2)
    assert row["cost"] == billed(row)


def test_a_stream_opening_with_an_error_event_moves_on(routing: Routing) -> None:
    routing.route("streamy", targets=["a:gpt-4o-mini", "b:gpt-4o-mini"])
    routing.a.push(error=Failure(500, "boom"), error_after=0)
    stream = routing.client().chat.completions.create(
        model="streamy", messages=MESSAGES, stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "Hello from the fake provider"
    assert (len(routing.a.requests), len(routing.b.requests)) == (1, 1)


def test_a_stream_dropped_after_its_first_byte_is_not_retried(routing: Routing) -> None:
    routing.route("streamy", targets=["a:gpt-4o-mini", "b:gpt-4o-mini"], retries=2)
    routing.a.push(cut_after=2)
    with pytest.raises(openai.APIError):
        stream = routing.client().chat.completions.create(
            model="streamy", messages=MESSAGES, stream=True
        )
        for _ in stream:
            pass
    assert len(routing.b.requests) == 0 and len(routing.a.requests) == 1
    [row] = routing.usage(1)
    assert (row["status"], row["model"], row["attempts"]) == ("error", "a:gpt-4o-mini", 1)


def test_cooldown_skips_a_failing_target_and_explain_shows_it(routing: Routing) -> None:
    routing.route(
        "cool",
        targets=["a:gpt-4o-mini", "b:gpt-4o-mini"],
        cooldown_failures=1,
        cooldown_seconds=600,
    )
    routing.a.fail(503, "unavailable")
    client = routing.client()
    client.chat.completions.create(model="cool", messages=MESSAGES)
    client.chat.completions.create(model="cool", messages=MESSAGES)
    assert (len(routing.a.requests), len(routing.b.requests)) == (1, 2)
    rows = routing.usage(2)
    assert sorted(row["attempts"] for row in rows) == [1, 2]
    assert routing.metric("otari_route_cooldowns_total", route="cool", target="a:gpt-4o-mini") == 1
    assert (
        routing.metric(
            "otari_route_skips_total", route="cool", target="a:gpt-4o-mini", reason="cooldown"
        )
        == 1
    )
    explained = routing.admin.get("/v1/routes/cool/explain").json()
    first, second = explained["targets"]
    assert (first["model"], first["order"], first["status"]) == ("b:gpt-4o-mini", 1, "eligible")
    assert (second["model"], second["order"], second["status"]) == (
        "a:gpt-4o-mini",
        None,
        "cooling",
    )
    assert 0 < second["cooldown_remaining"] <= 600


def test_loadbalance_spreads_and_bills_each_row_at_its_target(routing: Routing) -> None:
    routing.route(
        "spread",
        strategy="loadbalance",
        targets=[{"model": "a:gpt-4o-mini", "weight": 1}, {"model": "b:gpt-4o-mini", "weight": 1}],
    )
    client = routing.client()
    for _ in range(30):
        client.chat.completions.create(model="spread", messages=MESSAGES)
    rows = routing.usage(30)
    served = {row["model"] for row in rows}
    assert served == {"a:gpt-4o-mini", "b:gpt-4o-mini"}  # 2 * 0.5**30 to fail by chance
    assert len(routing.a.requests) + len(routing.b.requests) == 30
    for row in rows:
        assert row["attempts"] == 1 and row["cost"] == billed(row)


def test_loadbalance_falls_back_when_its_pick_fails(routing: Routing) -> None:
    routing.route(
        "spread",
        strategy="loadbalance",
        cooldown_failures=0,
        targets=[{"model": "a:gpt-4o-mini", "weight": 1}, {"model": "b:gpt-4o-mini", "weight": 1}],
    )
    routing.a.default = routing.a.default.__class__(error=Failure(503, "down"))
    client = routing.client()
    for _ in range(10):
        answer = client.chat.completions.create(model="spread", messages=MESSAGES)
        assert answer.choices[0].message.content == "Hello from the fake provider"
    rows = routing.usage(10)
    assert {row["model"] for row in rows} == {"b:gpt-4o-mini"}
    assert sum(row["attempts"] for row in rows) == 10 + len(routing.a.requests)


def _user_with_budget(routing: Routing, user_id: str, budget: str) -> str:
    made = routing.admin.post(
        "/v1/budgets",
        content=f'{{"max_budget": {budget}}}',
        headers={"content-type": "application/json"},
    )
    assert made.status_code == 200, made.text
    response = routing.admin.post(
        "/v1/users", json={"user_id": user_id, "budget_id": made.json()["budget_id"]}
    )
    assert response.status_code == 200, response.text
    key = routing.admin.post("/v1/keys", json={"user_id": user_id})
    assert key.status_code == 200, key.text
    return str(key.json()["key"])


def test_the_hold_is_the_dearest_target_and_the_server_price_settles(routing: Routing) -> None:
    routing.route("cheapfirst", targets=["a:gpt-4o-mini", "b:gpt-4o-mini"])
    key = _user_with_budget(routing, "alice", "10")
    gate = routing.a.gate()
    routing.a.push(gate=gate)
    raw = b'{"model":"cheapfirst","messages":[{"role":"user","content":"Hello"}],"max_tokens":1000}'
    worst = Consumption(prompt_tokens=estimates.input_tokens(raw), completion_tokens=1000)
    results: list[httpx.Response] = []
    sender = threading.Thread(
        target=lambda: results.append(
            httpx.post(
                f"{routing.url}/v1/chat/completions",
                content=raw,
                timeout=30,
                headers={"Authorization": f"Bearer {key}", "content-type": "application/json"},
            )
        )
    )
    sender.start()
    gate.wait_for(1)
    held = loads(routing.admin.get("/v1/users/alice").text)["reserved"]
    assert held == price("b:gpt-4o-mini").cost(worst)  # b is dearer than a, which serves
    assert held != price("a:gpt-4o-mini").cost(worst)
    gate.release()
    sender.join(30)
    assert results[0].status_code == 200, results[0].text
    [row] = routing.usage(1)
    assert row["model"] == "a:gpt-4o-mini"
    user = loads(routing.admin.get("/v1/users/alice").text)
    assert user["spend"] == row["cost"] == billed(row)
    assert user["reserved"] == 0


def test_a_budget_that_only_fits_the_cheaper_target_is_refused(routing: Routing) -> None:
    routing.route("cheapfirst", targets=["a:gpt-4o-mini", "b:gpt-4o-mini"])
    raw = b'{"model":"cheapfirst","messages":[{"role":"user","content":"Hello"}],"max_tokens":1000}'
    worst = Consumption(prompt_tokens=estimates.input_tokens(raw), completion_tokens=1000)
    between = (price("a:gpt-4o-mini").cost(worst) + price("b:gpt-4o-mini").cost(worst)) / 2
    key = _user_with_budget(routing, "bob", f"{between:f}")
    refused = httpx.post(
        f"{routing.url}/v1/chat/completions",
        content=raw,
        timeout=30,
        headers={"Authorization": f"Bearer {key}", "content-type": "application/json"},
    )
    assert refused.status_code == 402
    assert (
        f"may cost up to {price('b:gpt-4o-mini').cost(worst).normalize():f}"
        in (refused.json()["error"]["message"])
    )
    assert len(routing.a.requests) == 0


def test_messages_through_a_route_with_the_anthropic_sdk(routing: Routing) -> None:
    routing.route("claudeish", targets=["dead:gpt-4o-mini", "claude:claude-fake"])
    client = anthropic.Anthropic(base_url=routing.url, api_key=MASTER_KEY, max_retries=0)
    routing.stack.callback(client.close)
    message = client.messages.create(model="claudeish", max_tokens=100, messages=MESSAGES)
    assert message.content[0].text == "Hello from the fake provider"  # type: ignore[union-attr]
    [row] = routing.usage(1)
    assert (row["endpoint"], row["route"], row["model"], row["attempts"]) == (
        "/v1/messages",
        "claudeish",
        "claude:claude-fake",
        2,
    )
    assert row["cost"] == billed(row)


def test_responses_through_a_route(routing: Routing) -> None:
    routing.route("resp", targets=["dead:gpt-4o-mini", "claude:claude-fake"])
    answer = routing.client().responses.create(model="resp", input="Hello")
    assert answer.output_text == "Hello from the fake provider"
    [row] = routing.usage(1)
    assert (row["endpoint"], row["model"], row["attempts"]) == (
        "/v1/responses",
        "claude:claude-fake",
        2,
    )
    assert row["cost"] == billed(row)


def test_embeddings_skip_targets_that_cannot_embed(routing: Routing) -> None:
    routing.route("embed", targets=["claude:claude-fake", "dead:gpt-4o-mini", "a:gpt-4o-mini"])
    answer = routing.client().embeddings.create(model="embed", input="Hello")
    assert len(answer.data) == 1
    [row] = routing.usage(1)
    assert (row["endpoint"], row["model"], row["attempts"]) == (
        "/v1/embeddings",
        "a:gpt-4o-mini",
        2,
    )  # claude skipped: no embeddings
    assert (
        routing.metric(
            "otari_route_skips_total", route="embed", target="claude:claude-fake", reason="unusable"
        )
        == 1
    )


def test_allow_lists_apply_to_targets_or_to_the_route_name(routing: Routing) -> None:
    routing.route("guarded", targets=["b:gpt-4o-mini", "a:gpt-4o-mini"])
    only_a = routing.admin.post("/v1/keys", json={"allowed_models": ["a:*"]}).json()["key"]
    routing.client(only_a).chat.completions.create(model="guarded", messages=MESSAGES)
    assert (len(routing.a.requests), len(routing.b.requests)) == (1, 0)
    by_name = routing.admin.post("/v1/keys", json={"allowed_models": ["guarded"]}).json()["key"]
    routing.client(by_name).chat.completions.create(model="guarded", messages=MESSAGES)
    assert len(routing.b.requests) == 1
    nothing = routing.admin.post("/v1/keys", json={"allowed_models": ["c:*"]}).json()["key"]
    with pytest.raises(openai.BadRequestError) as caught:
        routing.client(nothing).chat.completions.create(model="guarded", messages=MESSAGES)
    assert caught.value.code == "route_unavailable"
    assert "this API key may not use it" in caught.value.message
    refused = [row for row in routing.usage(3) if row["status"] == "refused"]
    assert [(r["route"], r["model"], r["attempts"], r["cost"]) for r in refused] == [
        ("guarded", "guarded", 0, None)
    ]


def test_every_target_failing_is_one_error_row(routing: Routing) -> None:
    routing.route("doomed", targets=["dead:gpt-4o-mini", "a:gpt-4o-mini"])
    routing.a.fail(500, "broken")
    with pytest.raises(openai.APIStatusError) as caught:
        routing.client().chat.completions.create(model="doomed", messages=MESSAGES)
    assert caught.value.status_code == 502
    [row] = routing.usage(1)
    assert (row["status"], row["model"], row["attempts"], row["cost"]) == (
        "error",
        "a:gpt-4o-mini",
        2,
        Decimal(0),
    )
    assert UPSTREAM_KEY not in caught.value.message

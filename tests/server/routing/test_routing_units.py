"""The pure parts of routing: parsing, plans for both strategies, the failure policy,
backoff and Retry-After, cooldowns and explain."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime

import pytest

from otari_server.routing.cooldowns import Cooldowns
from otari_server.routing.model import RouteError, Target, parse_config, parse_route
from otari_server.routing.order import explain, plan
from otari_server.routing.policy import (
    Failure,
    backoff,
    classify,
    moves_on,
    parse_retry_after,
    retries_same_target,
)

SMART = {
    "strategy": "fallback",
    "targets": ["openai:gpt-4o", "anthropic:claude-sonnet-4-5", "groq:llama-3.3-70b"],
}
SPREAD = {
    "strategy": "loadbalance",
    "targets": [
        {"model": "openai:gpt-4o-mini", "weight": 3},
        {"model": "together:llama-3-8b", "weight": 1},
    ],
}


def test_the_issue_examples_parse_with_documented_defaults() -> None:
    routes = parse_config({"smart": SMART, "spread": SPREAD})
    smart, spread = routes["smart"], routes["spread"]
    assert [t.model for t in smart.targets] == SMART["targets"]
    assert smart.source == "config" and smart.strategy == "fallback"
    assert (smart.retries, smart.backoff, smart.retry_after_cap, smart.timeout) == (
        0,
        0.5,
        30.0,
        None,
    )
    assert (smart.cooldown_failures, smart.cooldown_window, smart.cooldown_seconds) == (
        3,
        60.0,
        30.0,
    )
    assert smart.context_window_fallbacks is False
    assert spread.targets == (Target("openai:gpt-4o-mini", 3), Target("together:llama-3-8b", 1))
    assert spread.total_weight == 4


@pytest.mark.parametrize(
    ("name", "table", "field"),
    [
        ("openai:gpt-4o", SMART, "name"),  # a provider:model spelling
        ("openai/gpt-4o", SMART, "name"),
        ("", SMART, "name"),
        ("-x", SMART, "name"),
        ("ok", {**SMART, "strategy": "random"}, "strategy"),
        ("ok", {"targets": []}, "targets"),
        ("ok", {"targets": "openai:gpt-4o"}, "targets"),
        ("ok", {"targets": ["gpt-4o"]}, "targets[0]"),
        ("ok", {"targets": ["openai:"]}, "targets[0]"),
        ("ok", {"targets": ["openai:a", "openai:a"]}, "targets[1]"),
        ("ok", {"targets": [{"model": "openai:a", "weight": 0}]}, "targets[0].weight"),
        ("ok", {"targets": [{"model": "openai:a", "weight": True}]}, "targets[0].weight"),
        ("ok", {"targets": [{"model": "openai:a", "share": 2}]}, "targets[0]"),
        ("ok", {**SMART, "retries": -1}, "retries"),
        ("ok", {**SMART, "retries": 11}, "retries"),
        ("ok", {**SMART, "timeout": 0}, "timeout"),
        ("ok", {**SMART, "backoff": float("nan")}, "backoff"),
        ("ok", {**SMART, "cooldown_seconds": "30"}, "cooldown_seconds"),
        ("ok", {**SMART, "context_window_fallbacks": "yes"}, "context_window_fallbacks"),
        ("ok", {**SMART, "fallbacks": []}, "fallbacks"),
    ],
)
def test_bad_definitions_name_the_field(name: str, table: dict[str, object], field: str) -> None:
    with pytest.raises(RouteError) as caught:
        parse_route(name, table)
    assert caught.value.field == field


def test_config_errors_say_which_table() -> None:
    with pytest.raises(RouteError, match=r"^routes\.smart\.retries: "):
        parse_config({"smart": {**SMART, "retries": 99}})


def test_fallback_plan_keeps_the_listed_order_and_skips_unusable_targets() -> None:
    route = parse_route("smart", SMART)
    laid_out = plan(
        route,
        Cooldowns(),
        0.0,
        random.Random(1),
        {"anthropic:claude-sonnet-4-5": "no price, and require_pricing is on"},
    )
    assert [t.model for t in laid_out.tries] == ["openai:gpt-4o", "groq:llama-3.3-70b"]
    assert [(t.model, why) for t, why in laid_out.skipped] == [
        ("anthropic:claude-sonnet-4-5", "no price, and require_pricing is on")
    ]


def test_loadbalance_picks_first_by_weight_then_the_rest_in_order() -> None:
    route = parse_route(
        "spread",
        {
            "strategy": "loadbalance",
            "targets": [{"model": "a:1", "weight": 3}, {"model": "b:2", "weight": 1}, "c:3"],
        },
    )
    rng = random.Random(7)
    firsts: Counter[str] = Counter()
    for _ in range(5000):
        tries = [t.model for t in plan(route, Cooldowns(), 0.0, rng).tries]
        firsts[tries[0]] += 1
        assert sorted(tries) == ["a:1", "b:2", "c:3"]
        assert tries[1:] == [m for m in ("a:1", "b:2", "c:3") if m != tries[0]]
    # weights 3:1:1 -> 60%, 20%, 20% (5000 draws: well within +-3 points)
    assert abs(firsts["a:1"] / 5000 - 0.6) < 0.03
    assert abs(firsts["b:2"] / 5000 - 0.2) < 0.03


def test_cooling_targets_are_skipped_and_tried_only_when_nothing_else_is_left() -> None:
    route = parse_route(
        "smart", {**SMART, "cooldown_failures": 2, "cooldown_window": 10, "cooldown_seconds": 30}
    )
    cooldowns = Cooldowns()
    assert cooldowns.failed("openai:gpt-4o", route, 100.0) is False
    assert cooldowns.failed("openai:gpt-4o", route, 105.0) is True
    assert cooldowns.until("openai:gpt-4o", 106.0) == 135.0
    tries = plan(route, cooldowns, 106.0, random.Random(0)).tries
    assert [t.model for t in tries] == ["anthropic:claude-sonnet-4-5", "groq:llama-3.3-70b"]
    unusable = {"anthropic:claude-sonnet-4-5": "x", "groq:llama-3.3-70b": "y"}
    assert [t.model for t in plan(route, cooldowns, 106.0, random.Random(0), unusable).tries] == [
        "openai:gpt-4o"
    ]
    assert cooldowns.until("openai:gpt-4o", 135.0) is None  # over
    assert cooldowns.cooling(120.0) == {"openai:gpt-4o": 15.0}


def test_failures_outside_the_window_do_not_add_up_and_success_clears_them() -> None:
    route = parse_route("smart", {**SMART, "cooldown_failures": 2, "cooldown_window": 10})
    cooldowns = Cooldowns()
    assert cooldowns.failed("openai:gpt-4o", route, 0.0) is False
    assert cooldowns.failed("openai:gpt-4o", route, 10.0) is False  # the first fell out
    cooldowns.succeeded("openai:gpt-4o")
    assert cooldowns.failed("openai:gpt-4o", route, 11.0) is False
    off = parse_route("smart", {**SMART, "cooldown_failures": 0})
    assert not any(cooldowns.failed("groq:x", off, float(i)) for i in range(10))


@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [
        (None, "", Failure.CONNECTION),
        (429, "slow down", Failure.RATE_LIMITED),
        (500, "", Failure.SERVER),
        (503, "", Failure.SERVER),
        (529, "Overloaded", Failure.OVERLOADED),
        (400, "This model's maximum context length is 8192 tokens", Failure.CONTEXT_LENGTH),
        (400, "prompt is too long: 250000 tokens > 200000 maximum", Failure.CONTEXT_LENGTH),
        (400, "'messages' is required", Failure.REFUSED),
        (401, "bad key", Failure.REFUSED),
        (404, "no such model", Failure.REFUSED),
    ],
)
def test_failure_kinds(status: int | None, message: str, kind: Failure) -> None:
    assert classify(status, message) is kind


def test_which_failures_move_on() -> None:
    plain = parse_route("smart", SMART)
    windows = parse_route("smart", {**SMART, "context_window_fallbacks": True})
    for kind in (
        Failure.CONNECTION,
        Failure.TIMEOUT,
        Failure.RATE_LIMITED,
        Failure.SERVER,
        Failure.OVERLOADED,
    ):
        assert moves_on(kind, plain) and retries_same_target(kind)
    assert classify(None, timeout=True) is Failure.TIMEOUT
    assert not moves_on(Failure.REFUSED, windows)
    assert not moves_on(Failure.CONTEXT_LENGTH, plain)
    assert moves_on(Failure.CONTEXT_LENGTH, windows)
    assert not retries_same_target(Failure.CONTEXT_LENGTH)


def test_backoff_is_jittered_exponential_and_honours_retry_after_up_to_the_cap() -> None:
    route = parse_route("smart", {**SMART, "backoff": 0.5, "retry_after_cap": 3})
    rng = random.Random(3)
    for retry, ceiling in ((0, 0.5), (1, 1.0), (2, 2.0), (3, 3.0), (8, 3.0)):
        waits = [backoff(retry, None, route, rng) for _ in range(200)]
        assert all(w is not None and 0 <= w <= ceiling for w in waits)
        assert max(w for w in waits if w is not None) > ceiling * 0.8  # jitter spans the range
    assert backoff(0, 2.0, route, rng) == 2.0
    assert backoff(0, 3.0, route, rng) == 3.0
    assert backoff(0, 3.5, route, rng) is None  # longer than the cap: move on


def test_retry_after_values() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("2", now) == 2.0
    assert parse_retry_after("0.25", now) == 0.25
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:05 GMT", now) == 5.0
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0
    for bad in (None, "", "-1", "nan", "inf", "soon", "1e9"):
        assert parse_retry_after(bad, now) is None


def test_explain_shows_order_share_price_cooldown_and_reasons() -> None:
    route = parse_route(
        "spread",
        {
            "strategy": "loadbalance",
            "targets": [{"model": "a:1", "weight": 3}, {"model": "b:2", "weight": 1}, "c:3", "d:4"],
        },
    )
    cooldowns = Cooldowns()
    hot = parse_route("x", {"targets": ["c:3"], "cooldown_failures": 1, "cooldown_seconds": 20})
    cooldowns.failed("c:3", hot, 50.0)
    price = {"input_price_per_million": 1, "output_price_per_million": 2, "unit": "tokens"}
    shown = explain(
        route, cooldowns, 55.0, {"d:4": "no price, and require_pricing is on"}, {"a:1": price}
    )
    assert shown["route"] == "spread" and shown["strategy"] == "loadbalance"
    assert shown["targets"] == [
        {
            "order": 1,
            "model": "a:1",
            "weight": 3,
            "share": 0.75,
            "price": price,
            "cooldown_remaining": None,
            "status": "eligible",
            "reason": None,
        },
        {
            "order": 2,
            "model": "b:2",
            "weight": 1,
            "share": 0.25,
            "price": None,
            "cooldown_remaining": None,
            "status": "eligible",
            "reason": None,
        },
        {
            "order": None,
            "model": "c:3",
            "weight": 1,
            "share": None,
            "price": None,
            "cooldown_remaining": 15.0,
            "status": "cooling",
            "reason": "cooling down for 15s more after repeated failures",
        },
        {
            "order": None,
            "model": "d:4",
            "weight": 1,
            "share": None,
            "price": None,
            "cooldown_remaining": None,
            "status": "skipped",
            "reason": "no price, and require_pricing is on",
        },
    ]


def test_explain_when_only_cooling_targets_are_left() -> None:
    route = parse_route("smart", {"targets": ["a:1"], "cooldown_failures": 1})
    cooldowns = Cooldowns()
    cooldowns.failed("a:1", route, 0.0)
    [row] = explain(route, cooldowns, 10.0)["targets"]
    assert row["order"] == 1 and row["status"] == "cooling"
    assert row["reason"] == (
        "cooling down for 20s more after repeated failures; tried anyway, no other target is left"
    )


def test_errors_map_to_failure_kinds_with_their_retry_advice() -> None:
    from otari_server.errors import (
        BadGateway,
        GatewayTimeout,
        InvalidRequest,
        ProviderCredentialRejected,
        UpstreamError,
    )
    from otari_server.generation.routed import failure_of

    assert failure_of(UpstreamError("slow", 429, headers={"Retry-After": "7"})) == (
        Failure.RATE_LIMITED,
        7.0,
    )
    assert failure_of(UpstreamError("busy", 529, headers={"retry-after-ms": "250"})) == (
        Failure.OVERLOADED,
        0.25,
    )
    assert failure_of(UpstreamError("down", 503)) == (Failure.SERVER, None)
    assert failure_of(UpstreamError("too long: maximum context length is 8192", 400)) == (
        Failure.CONTEXT_LENGTH,
        None,
    )
    assert failure_of(UpstreamError("bad temperature", 400)) == (Failure.REFUSED, None)
    assert failure_of(GatewayTimeout("late")) == (Failure.TIMEOUT, None)
    assert failure_of(BadGateway("Could not reach provider 'a': ClientConnectorError")) == (
        Failure.CONNECTION,
        None,
    )
    assert failure_of(BadGateway("Provider 'a' failed with HTTP 500: x")) == (Failure.SERVER, None)
    assert failure_of(ProviderCredentialRejected("key refused", "a")) == (Failure.SERVER, None)
    assert failure_of(InvalidRequest("cannot translate")) == (Failure.REFUSED, None)

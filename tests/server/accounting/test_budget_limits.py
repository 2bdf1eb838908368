"""Calendar budgets, per-period request and token limits, the budget clamp and long-context
price tiers: pure rules with fixed instants, then end to end on both databases."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import openai
import pytest
from sqlalchemy import update
from starlette.testclient import TestClient

from otari_server.accounting import budget_rules
from otari_server.accounting.budget_rules import Need, Output, Period, Remaining
from otari_server.accounting.prices import Consumption, Price, Tier
from otari_server.accounting.reservations import hold_id
from otari_server.accounting.settlements import reclaim
from otari_server.jsonio import loads
from otari_server.storage.db import create_db_engine, session_factory
from otari_server.storage.tables import Reservation, User
from tests.support.factories import MASTER, make_budget, make_user
from tests.support.fakes_responses import FakeOpenAIResponses
from tests.support.gateway import Gateway, gateway_factory_fixture


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


# -- calendar periods (pure) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "started", "resets"),
    [
        (at(2026, 2, 14, 15, 30), at(2026, 2, 1), at(2026, 3, 1)),  # February: 28 days
        (at(2026, 2, 28, 23, 59, 59), at(2026, 2, 1), at(2026, 3, 1)),
        (at(2026, 3, 1), at(2026, 3, 1), at(2026, 4, 1)),  # the 1st at midnight starts a month
        (at(2028, 2, 29, 12), at(2028, 2, 1), at(2028, 3, 1)),  # a leap February: 29 days
        (at(2026, 1, 31, 8), at(2026, 1, 1), at(2026, 2, 1)),
        (at(2026, 12, 31, 23), at(2026, 12, 1), at(2027, 1, 1)),  # the year rolls too
    ],
)
def test_calendar_month_rolls_on_the_first(
    now: datetime, started: datetime, resets: datetime
) -> None:
    assert budget_rules.calendar_period(now, "calendar_month") == Period(started, resets)


def test_calendar_day_and_iso_week() -> None:
    assert budget_rules.calendar_period(at(2026, 2, 28, 18), "calendar_day") == Period(
        at(2026, 2, 28), at(2026, 3, 1)
    )
    # 2026-12-01 is a Tuesday: its week began on Monday 30 November.
    assert budget_rules.calendar_period(at(2026, 12, 1, 12), "calendar_week") == Period(
        at(2026, 11, 30), at(2026, 12, 7)
    )
    # A Sunday belongs to the week of the Monday before it, across a month end.
    assert budget_rules.calendar_period(at(2026, 3, 1, 23, 59), "calendar_week") == Period(
        at(2026, 2, 23), at(2026, 3, 2)
    )


def test_calendar_periods_are_utc_whatever_the_offset_given() -> None:
    # 00:30 on March 1st at UTC+5 is still February in UTC.
    local = datetime(2026, 3, 1, 0, 30, tzinfo=timezone(timedelta(hours=5)))
    assert budget_rules.calendar_period(local, "calendar_month") == Period(
        at(2026, 2, 1), at(2026, 3, 1)
    )


def test_aligned_periods_ignore_the_start_and_duration() -> None:
    attached = at(2026, 1, 17, 9, 45)
    assert budget_rules.first_period(attached, None, "calendar_month") == Period(
        at(2026, 1, 1), at(2026, 2, 1)
    )
    assert budget_rules.current_period(attached, 3600, at(2026, 2, 14), "calendar_month") == Period(
        at(2026, 2, 1), at(2026, 3, 1)
    )
    with pytest.raises(ValueError, match="calendar_year"):
        budget_rules.calendar_period(attached, "calendar_year")


# -- the budget rule (pure) ----------------------------------------------------------------

PRICE = Price("p:m", at(2026, 1, 1), Decimal("1"), Decimal("3"))


def _output(completion: int = 1000, choices: int = 1, price: Price | None = PRICE) -> Output:
    return Output(
        price, Consumption(prompt_tokens=100, completion_tokens=completion), choices, "max_tokens"
    )


def test_affordable_output_is_exact() -> None:
    # 100 prompt tokens cost 0.0001; each output token 0.000003: 0.0010001 affords 300.
    assert budget_rules.affordable_output(_output(), Decimal("0.0010001"), None) == 300
    assert budget_rules.affordable_output(_output(), Decimal("0.001"), None) == 300
    assert budget_rules.affordable_output(_output(), Decimal("0.0009999999"), None) == 299
    assert budget_rules.affordable_output(_output(), Decimal("0.0001"), None) == 0
    assert budget_rules.affordable_output(_output(), Decimal("0.00005"), None) == 0
    # Tokens bound it too (prompt first), and n choices share it.
    assert budget_rules.affordable_output(_output(), None, 250) == 150
    assert budget_rules.affordable_output(_output(choices=2), Decimal("0.001"), None) == 150
    # Never more than was asked for.
    assert budget_rules.affordable_output(_output(completion=40), Decimal(1), 10**6) == 40
    # An entry priced per request does not charge output tokens: all or nothing.
    per_request = Price("p:m", at(2026, 1, 1), Decimal("1000"), Decimal("5"), unit="requests")
    affordable = budget_rules.affordable_output(_output(price=per_request), Decimal("0.001"), None)
    assert affordable == 1000
    assert budget_rules.affordable_output(_output(price=per_request), Decimal("0.0009"), None) == 0


def test_judge_counts_requests_first_then_money_and_tokens() -> None:
    need = Need(Decimal("0.0031"), 1, 1100, _output())
    assert budget_rules.judge(need, Remaining(None, 0, None), True).refused == "requests"
    granted = budget_rules.judge(need, Remaining(Decimal(1), 5, None), False)
    assert (granted.amount, granted.requests, granted.tokens, granted.refused) == (
        Decimal("0.0031"),
        1,
        0,
        None,
    )
    refused = budget_rules.judge(need, Remaining(Decimal("0.001"), None, None), False)
    assert (refused.refused, refused.affordable) == ("money", 300)
    refused = budget_rules.judge(need, Remaining(None, None, 600), False)
    assert (refused.refused, refused.affordable) == ("tokens", 500)
    clamped = budget_rules.judge(need, Remaining(Decimal("0.001"), 3, 600), True)
    assert (clamped.clamped, clamped.amount, clamped.requests, clamped.tokens) == (
        300,
        Decimal("0.001"),
        1,
        400,
    )


def test_price_tiers_pick_the_tier_of_the_prompt() -> None:
    price = Price(
        "p:m",
        at(2026, 1, 1),
        Decimal("1"),
        Decimal("2"),
        cache_read_per_million=Decimal("0.1"),
        tiers=(Tier(11, Decimal("3"), Decimal("6")), Tier(101, None, Decimal("9"))),
    )
    assert price.cost(Consumption(prompt_tokens=10, completion_tokens=5)) == Decimal("0.000020")
    assert price.cost(Consumption(prompt_tokens=11, completion_tokens=5)) == Decimal("0.000063")
    # A rate a tier omits is the base entry's (input 1, cache reads 0.1), not a lower tier's.
    assert price.cost(
        Consumption(prompt_tokens=101, completion_tokens=5, cache_read_tokens=1)
    ) == Decimal("0.0001451")


# -- management API ------------------------------------------------------------------------


def test_budget_limits_and_alignment_round_trip(client: TestClient) -> None:
    created = make_budget(
        client,
        max_budget=5,
        reset_alignment="calendar_month",
        request_limit=10,
        token_limit=1000,
        budget_clamp=True,
    )
    assert (
        created["reset_alignment"],
        created["request_limit"],
        created["token_limit"],
        created["budget_clamp"],
        created["budget_duration_sec"],
    ) == ("calendar_month", 10, 1000, True, None)
    user = make_user(client, "alice", budget_id=created["budget_id"])
    now = datetime.now(UTC)
    period = budget_rules.calendar_period(now, "calendar_month")
    assert datetime.fromisoformat(user["budget_started_at"]) == period.started_at
    assert datetime.fromisoformat(user["next_budget_reset_at"]) == period.resets_at
    assert (
        user["current_requests"],
        user["current_tokens"],
        user["reserved_requests"],
        user["reserved_tokens"],
    ) == (0, 0, 0, 0)
    # A number of seconds replaces the alignment (and re-times the users), and back.
    patched = client.patch(
        f"/v1/budgets/{created['budget_id']}", json={"budget_duration_sec": 3600}, headers=MASTER
    ).json()
    assert (patched["reset_alignment"], patched["budget_duration_sec"]) == (None, 3600)
    patched = client.patch(
        f"/v1/budgets/{created['budget_id']}",
        json={"reset_alignment": "calendar_day", "token_limit": None},
        headers=MASTER,
    ).json()
    assert (
        patched["reset_alignment"],
        patched["budget_duration_sec"],
        patched["token_limit"],
        patched["request_limit"],
    ) == ("calendar_day", None, None, 10)
    user = client.get("/v1/users/alice", headers=MASTER).json()
    day = budget_rules.calendar_period(datetime.now(UTC), "calendar_day")
    assert datetime.fromisoformat(user["next_budget_reset_at"]) == day.resets_at


@pytest.mark.parametrize(
    "body",
    [
        {"budget_duration_sec": 86400, "reset_alignment": "calendar_month"},
        {"reset_alignment": "calendar_year"},
        {"request_limit": -1},
        {"token_limit": 10**15 + 1},
        {"request_limit": True},
    ],
)
def test_bad_budget_fields_are_refused_and_nothing_is_written(
    client: TestClient, body: dict[str, Any]
) -> None:
    response = client.post("/v1/budgets", json=body, headers=MASTER)
    assert response.status_code in (400, 422), response.text
    assert client.get("/v1/budgets", headers=MASTER).json() == []


def test_calendar_period_rolls_over_on_read(client: TestClient, database_url: str) -> None:
    budget_id = make_budget(
        client, max_budget=5, reset_alignment="calendar_month", request_limit=10
    )["budget_id"]
    make_user(client, "alice", budget_id=budget_id)
    engine = create_db_engine(database_url)
    with session_factory(engine).begin() as session:  # last January's period, used up
        session.execute(
            update(User)
            .where(User.user_id == "alice")
            .values(
                spend=Decimal("2.5"),
                requests=10,
                tokens=500,
                budget_started_at=at(2026, 1, 1),
                next_budget_reset_at=at(2026, 2, 1),
            )
        )
    engine.dispose()
    user = client.get("/v1/users/alice", headers=MASTER).json()
    period = budget_rules.calendar_period(datetime.now(UTC), "calendar_month")
    assert (user["spend"], user["current_requests"], user["current_tokens"]) == (0, 0, 0)
    assert datetime.fromisoformat(user["budget_started_at"]) == period.started_at


def test_price_tiers_in_both_forms_with_history(client: TestClient) -> None:
    def post(body: str) -> httpx.Response:
        return client.post(
            "/v1/pricing", content=body, headers={**MASTER, "content-type": "application/json"}
        )

    old = post(
        '{"model_key": "a:m", "input_price_per_million": 3, '
        '"output_price_per_million": 15, "effective_at": "2026-01-01T00:00:00Z"}'
    )
    assert old.status_code == 200 and old.json()["tiers"] == []
    new = post(
        '{"model_key": "a:m", "input_price_per_million": 3, '
        '"output_price_per_million": 15, "effective_at": "2026-02-01T00:00:00Z", '
        '"tiers": [{"above_input_tokens": 200000, "input_price_per_million": 6, '
        '"output_price_per_million": 22.5000000001}]}'
    )
    assert new.status_code == 200, new.text
    entry = loads(new.text)
    assert entry["tiers"] == [
        {
            "above_input_tokens": 200000,
            "input_price_per_million": Decimal(6),
            "output_price_per_million": Decimal("22.5000000001"),
        }
    ]
    assert entry["pricing_tiers"] == [
        {
            "min_input_tokens": 200001,
            "input_price_per_million": Decimal(6),
            "output_price_per_million": Decimal("22.5000000001"),
        }
    ]
    # The SDK's form is the same thing.
    sdk = post(
        '{"model_key": "b:m", "input_price_per_million": 1, '
        '"output_price_per_million": 2, '
        '"pricing_tiers": [{"min_input_tokens": 128001, "output_price_per_million": 4}]}'
    )
    assert loads(sdk.text)["tiers"] == [
        {"above_input_tokens": 128000, "output_price_per_million": Decimal(4)}
    ]
    history = client.get("/v1/pricing/a:m/history", headers=MASTER).json()
    assert [len(e["tiers"]) for e in history] == [1, 0]
    before = client.get(
        "/v1/pricing/a:m", params={"as_of": "2026-01-15T00:00:00Z"}, headers=MASTER
    ).json()
    assert before["tiers"] == []


@pytest.mark.parametrize(
    "tiers",
    [
        '"tiers": [{"input_price_per_million": 6}]',  # no threshold
        '"tiers": [{"min_input_tokens": 5, "above_input_tokens": 4}]',  # two
        '"tiers": [{"min_input_tokens": 0}]',
        '"tiers": [{"min_input_tokens": 9}, {"above_input_tokens": 8}]',  # the same start
        '"tiers": [{"min_input_tokens": 9}], "pricing_tiers": [{"min_input_tokens": 9}]',
        '"tiers": [{"min_input_tokens": 9}], "unit": "requests"',
        '"tiers": [{"min_input_tokens": 9, "input_price_per_million": 0.00000000001}]',
    ],
)
def test_bad_tiers_are_refused_before_anything_is_written(client: TestClient, tiers: str) -> None:
    body = (
        '{"model_key": "a:m", "input_price_per_million": 3, '
        f'"output_price_per_million": 15, {tiers}}}'
    )
    response = client.post(
        "/v1/pricing", content=body, headers={**MASTER, "content-type": "application/json"}
    )
    assert response.status_code in (400, 422), response.text
    assert client.get("/v1/pricing", headers=MASTER).json() == []


# -- end to end: limits enforced on admission ----------------------------------------------


def _budgeted_user(gateway: Gateway, user_id: str, **budget: Any) -> str:
    """A user on a new budget with these fields; returns an API key of theirs."""
    response = gateway.admin.post(
        "/v1/budgets", content=_json(budget), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    created = gateway.admin.post(
        "/v1/users", json={"user_id": user_id, "budget_id": response.json()["budget_id"]}
    )
    assert created.status_code == 200, created.text
    return gateway.key(user_id=user_id)


def _json(fields: dict[str, Any]) -> str:
    # Money as exact JSON numbers.
    return "{" + ", ".join(f'"{k}": {_value(v)}' for k, v in fields.items()) + "}"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and not value[0].isdigit():
        return f'"{value}"'
    return str(value)


def _chat(gateway: Gateway, key: str, content: bytes) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=content,
        timeout=30,
        headers={"Otari-Key": key, "content-type": "application/json"},
    )


def _body(max_tokens: int, words: str = "one two three") -> bytes:
    return (
        b'{"model": "fake:gpt-4o-mini", "max_tokens": %d, '
        b'"messages": [{"role": "user", "content": "%s"}]}' % (max_tokens, words.encode())
    )


def _settled(gateway: Gateway, user_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """The user once nothing is held for them any more: every request answered so far is
    settled (write-behind), whatever other rows the ledger writes."""
    deadline = time.monotonic() + timeout
    while True:
        user = gateway.get_user(user_id)
        if not (user["reserved"] or user["reserved_requests"] or user["reserved_tokens"]):
            return user
        assert time.monotonic() < deadline, user
        time.sleep(0.02)


def _worst_prompt(raw: bytes) -> int:
    return len(raw) // 3 + 1  # tokens.input_tokens: what admission reserves for the prompt


def test_request_limit_refuses_the_next_request_and_resets_with_the_calendar(
    gateway: Gateway, database_url: str
) -> None:
    key = _budgeted_user(gateway, "team", request_limit=3, reset_alignment="calendar_day")
    client = gateway.client(key)
    for _ in range(3):
        client.chat.completions.create(
            model="fake:gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(
            model="fake:gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    assert refused.value.status_code == 402
    day = budget_rules.calendar_period(datetime.now(UTC), "calendar_day")
    assert refused.value.body["message"] == (  # type: ignore[index]
        "Request limit reached for user 'team': 3 request(s) per period, none remains "
        f"until {day.resets_at.isoformat()}"
    )  # type: ignore[union-attr]
    assert len(gateway.openai_fake.requests) == 3
    user = _settled(gateway, "team")
    assert user["current_requests"] == 3
    assert user["current_tokens"] == 3 * (1 + 5)  # "hi" and the fake's five-word answer
    # The next calendar day starts a new period, at reservation time too.
    engine = create_db_engine(database_url)
    with session_factory(engine).begin() as session:
        session.execute(
            update(User)
            .where(User.user_id == "team")
            .values(
                budget_started_at=day.started_at - timedelta(days=1),
                next_budget_reset_at=day.started_at,
            )
        )
    engine.dispose()
    client.chat.completions.create(
        model="fake:gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
    )
    user = _settled(gateway, "team")
    assert (user["current_requests"], user["spend"]) == (1, Decimal("0.000011"))
    assert datetime.fromisoformat(user["budget_started_at"]) == day.started_at


def test_request_limit_holds_under_concurrency_across_instances(
    gateway_factory: Callable[..., Gateway],
) -> None:
    first, second = gateway_factory(), gateway_factory()  # two instances, one database
    first.price("fake:gpt-4o-mini", "1", "2")
    key = _budgeted_user(first, "team", request_limit=5)

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
        async with (
            httpx.AsyncClient(base_url=first.url, timeout=60, headers={"Otari-Key": key}) as a,
            httpx.AsyncClient(base_url=second.url, timeout=60, headers={"Otari-Key": key}) as b,
        ):
            return list(await asyncio.gather(*(one(c) for c in [a, b] * 10)))

    statuses = asyncio.run(run())
    assert sorted(statuses) == [200] * 5 + [402] * 15
    assert len(first.openai_fake.requests) + len(second.openai_fake.requests) == 5
    assert _settled(first, "team")["current_requests"] == 5


def test_token_limit_reserves_the_worst_case_settles_the_real_count_and_clamps(
    gateway: Gateway,
) -> None:
    raw = _body(50)
    worst = _worst_prompt(raw) + 50
    key = _budgeted_user(gateway, "team", token_limit=worst + 4)
    gate = gateway.openai_fake.gate()
    gateway.openai_fake.push(gate=gate)
    with httpx.Client(timeout=30) as http:
        result: list[httpx.Response] = []
        runner = threading.Thread(
            target=lambda: result.append(
                http.post(
                    f"{gateway.url}/v1/chat/completions",
                    content=raw,
                    headers={"Otari-Key": key, "content-type": "application/json"},
                )
            )
        )
        runner.start()
        gate.wait_for(1)
        held = gateway.get_user("team")
        assert (held["reserved_tokens"], held["reserved_requests"]) == (worst, 0)
        gate.release()
        runner.join()
    assert result[0].status_code == 200
    assert _settled(gateway, "team")["current_tokens"] == 3 + 5
    # worst + 4 - 8 tokens remain: 46 of the 50 output tokens asked for.
    refused = _chat(gateway, key, raw)
    assert refused.status_code == 402
    assert refused.json()["error"]["message"] == (
        f"Token limit exceeded for user 'team': this request may use up to {worst} tokens, "
        f"{worst - 4} of {worst + 4} remain; lower max_tokens to 46 or less"
    )
    # With the clamp on, the same request runs with max_tokens lowered to what fits.
    budget_id = gateway.get_user("team")["budget_id"]
    assert (
        gateway.admin.patch(f"/v1/budgets/{budget_id}", json={"budget_clamp": True}).status_code
        == 200
    )
    gateway.openai_fake.push(text=" ".join(["word"] * 60))
    served = _chat(gateway, key, raw)
    assert served.status_code == 200, served.text
    assert gateway.openai_fake.last.body["max_tokens"] == 46
    assert served.json()["choices"][0]["finish_reason"] == "length"
    user = _settled(gateway, "team")
    assert user["current_tokens"] == 8 + 3 + 46
    assert user["current_tokens"] <= worst + 4


# -- end to end: the clamp and the refusal's advice ----------------------------------------


def test_refusal_says_which_max_tokens_fits(gateway: Gateway) -> None:
    gateway.price("fake:gpt-4o-mini", "0", "1000")  # 0.001 per output token
    key = _budgeted_user(gateway, "team", max_budget="0.0105")
    client = gateway.client(key)
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(
            model="fake:gpt-4o-mini",
            max_completion_tokens=100,
            messages=[{"role": "user", "content": "hi"}],
        )
    assert refused.value.status_code == 402
    assert refused.value.body["message"] == (  # type: ignore[index]
        "Budget exceeded for user 'team': this request may cost up to 0.1, 0.0105 of 0.0105 "
        "remains; lower max_completion_tokens to 10 or less"
    )
    assert gateway.openai_fake.requests == []
    client.chat.completions.create(
        model="fake:gpt-4o-mini",
        max_completion_tokens=10,
        messages=[{"role": "user", "content": "hi"}],
    )


def test_both_output_limits_sent_hold_the_larger(gateway: Gateway) -> None:
    # Servers differ in which of the two they obey (Ollama reads only max_tokens): holding
    # the smaller one let an answer of 50 tokens run on a hold of 5.
    gateway.price("fake:gpt-4o-mini", "0", "1000")  # 0.001 per output token
    key = _budgeted_user(gateway, "team", max_budget="0.01")
    refused = _chat(
        gateway,
        key,
        b'{"model": "fake:gpt-4o-mini", "max_completion_tokens": 5, '
        b'"max_tokens": 50, "messages": [{"role": "user", '
        b'"content": "hi"}]}',
    )
    assert refused.status_code == 402
    assert refused.json()["error"]["message"] == (
        "Budget exceeded for user 'team': this request may cost up to 0.05, 0.01 of 0.01 "
        "remains; lower max_completion_tokens to 10 or less"
    )
    assert gateway.openai_fake.requests == []


def test_clamp_lowers_max_tokens_and_never_overspends(gateway: Gateway) -> None:
    gateway.price("fake:gpt-4o-mini", "0", "1000")
    key = _budgeted_user(gateway, "team", max_budget="0.01", budget_clamp=True)
    gateway.openai_fake.push(text=" ".join(["word"] * 40))
    answer = gateway.client(key).chat.completions.create(
        model="fake:gpt-4o-mini", max_tokens=1000, n=2, messages=[{"role": "user", "content": "hi"}]
    )
    # Two choices share the 10 affordable output tokens: five each.
    assert gateway.openai_fake.last.body["max_tokens"] == 5
    assert answer.choices[0].finish_reason == "length"
    rows = gateway.usage(1)
    assert rows[0]["completion_tokens"] == 5  # the fake answers one choice
    user = gateway.get_user("team")
    assert user["spend"] == Decimal("0.005") and user["reserved"] == 0
    assert user["spend"] <= Decimal("0.01")


def test_global_clamp_on_messages(gateway_factory: Callable[..., Gateway]) -> None:
    gateway = gateway_factory(budget_clamp=True)
    gateway.price("claude:claude-sonnet", "0", "1000")
    key = _budgeted_user(gateway, "team", max_budget="0.012")
    gateway.anthropic_fake.push(text=" ".join(["word"] * 40))
    # An explicit timeout: the SDK otherwise refuses a non-streamed max_tokens this large.
    client = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0, timeout=30)
    try:
        message = client.messages.create(
            model="claude:claude-sonnet",
            max_tokens=64000,
            messages=[{"role": "user", "content": "hi"}],
        )
    finally:
        client.close()
    assert gateway.anthropic_fake.last.body["max_tokens"] == 12
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 12
    assert _settled(gateway, "team")["spend"] == Decimal("0.012")


def test_a_budget_can_refuse_the_clamp_the_gateway_allows(
    gateway_factory: Callable[..., Gateway],
) -> None:
    gateway = gateway_factory(budget_clamp=True)
    gateway.price("fake:gpt-4o-mini", "0", "1000")
    key = _budgeted_user(gateway, "team", max_budget="0.01", budget_clamp=False)
    refused = _chat(gateway, key, _body(100))
    assert refused.status_code == 402
    assert refused.json()["error"]["message"].endswith("lower max_tokens to 10 or less")
    assert gateway.openai_fake.requests == []


# -- end to end: long-context tiers at hold and at settlement ------------------------------


def test_tier_of_the_worst_case_is_held_and_the_real_tier_is_billed(gateway: Gateway) -> None:
    body = (
        '{"model_key": "fake:gpt-4o-mini", "input_price_per_million": 1, '
        '"output_price_per_million": 2, "tiers": [{"above_input_tokens": 10, '
        '"input_price_per_million": 3, "output_price_per_million": 6}]}'
    )
    assert (
        gateway.admin.post(
            "/v1/pricing", content=body, headers={"content-type": "application/json"}
        ).status_code
        == 200
    )
    key = _budgeted_user(gateway, "team", max_budget="1")
    short, long = _body(50), _body(50, " ".join(["w"] * 12))
    spent = Decimal(0)
    # The worst-case prompt of both is over 10 tokens: both hold at the long-context rates.
    for raw, real_cost in (
        (short, Decimal("0.000013")),  # 3 + 5 tokens at 1 and 2 per M
        (long, Decimal("0.000066")),
    ):  # 12 + 5 tokens at 3 and 6 per M
        gate = gateway.openai_fake.gate()
        gateway.openai_fake.push(gate=gate)
        done: list[httpx.Response] = []
        runner = threading.Thread(
            target=lambda raw=raw, done=done: done.append(_chat(gateway, key, raw))
        )
        runner.start()
        gate.wait_for(1)
        held = gateway.get_user("team")["reserved"]
        assert held == (Decimal(3 * _worst_prompt(raw)) + Decimal(6 * 50)) / Decimal(10**6)
        gate.release()
        runner.join()
        assert done[0].status_code == 200
        spent += real_cost
        assert _settled(gateway, "team")["spend"] == spent
    assert spent == Decimal("0.000079")


def test_clamp_lowers_max_output_tokens_on_responses(database_url: str) -> None:
    gen = gateway_factory_fixture(database_url, FakeOpenAIResponses)
    start = next(gen)
    try:
        gateway = start(budget_clamp=True)
        gateway.price("fake:gpt-4o-mini", "0", "1000")
        key = _budgeted_user(gateway, "team", max_budget="0.007")
        gateway.openai_fake.push(text=" ".join(["word"] * 40))
        response = gateway.client(key).responses.create(
            model="fake:gpt-4o-mini", input="hi", max_output_tokens=5000
        )
        assert gateway.openai_fake.last.body["max_output_tokens"] == 7
        assert response.status == "incomplete"
        assert response.incomplete_details is not None
        assert response.incomplete_details.reason == "max_output_tokens"
        assert _settled(gateway, "team")["spend"] == Decimal("0.007")
    finally:
        gen.close()


# -- holds: released by settlement, given back by reclaim -----------------------------------


def test_a_request_the_provider_refused_does_not_use_up_the_request_limit(gateway: Gateway) -> None:
    key = _budgeted_user(gateway, "team", request_limit=1)
    client = gateway.client(key)
    gateway.openai_fake.fail(500, "upstream broke")
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(
            model="fake:gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    assert _settled(gateway, "team")["current_requests"] == 0
    client.chat.completions.create(
        model="fake:gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
    )
    assert _settled(gateway, "team")["current_requests"] == 1
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(
            model="fake:gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    assert refused.value.status_code == 402


def test_reclaim_gives_back_held_requests_and_tokens(client: TestClient, database_url: str) -> None:
    budget_id = make_budget(client, request_limit=5, token_limit=1000)["budget_id"]
    make_user(client, "alice", budget_id=budget_id)
    engine = create_db_engine(database_url)
    now = datetime.now(UTC)
    with engine.begin() as conn:  # a dead instance's hold, expired
        conn.execute(
            Reservation.__table__.insert().values(
                id=hold_id("gone:1", "alice"),
                user_id="alice",
                amount=Decimal(0),
                requests=2,
                tokens=700,
                instance_id="gone:1",
                created_at=now - timedelta(hours=2),
                expires_at=now - timedelta(hours=1),
            )
        )
        conn.execute(
            update(User)
            .where(User.user_id == "alice")
            .values(reserved_requests=3, reserved_tokens=900)
        )  # 1 and 200 held by a live instance
    with engine.begin() as conn:
        assert reclaim(conn, None, now) == 1
    engine.dispose()
    user = client.get("/v1/users/alice", headers=MASTER).json()
    assert (user["reserved_requests"], user["reserved_tokens"]) == (1, 200)

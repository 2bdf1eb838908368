"""Budget alerts: one signed webhook event per crossed threshold and budget period, across
instances, retried after a failure, never on the request's path."""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from aiohttp import web
from sqlalchemy import create_engine, select

from otari_server.jsonio import loads
from otari_server.storage.db import normalize_url
from otari_server.storage.tables import BudgetAlert
from tests.support.fakes import FakeOpenAI
from tests.support.gateway import MASTER, UPSTREAM_KEY, Gateway
from tests.support.loopback import LoopbackServer
from tests.support.procs import wait_until
from tests.support.servers import make_settings, running

SECRET = "whsec-test-secret-0123456789"
MODEL = "fake:gpt-4o-mini"
# Input is free and the fake answers 5 output tokens: each request costs exactly 0.01.
COST = Decimal("0.01")


class Receiver(LoopbackServer):
    """A webhook receiver on loopback: records every POST, answers scripted statuses."""

    name = "webhook"

    def __init__(self, statuses: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.statuses = list(statuses)
        self.received: list[tuple[dict[str, str], bytes]] = []
        self._lock = threading.Lock()

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        return app

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self._lock:
            self.received.append((dict(request.headers), body))
            status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status)

    def events(self) -> list[dict[str, Any]]:
        """Every event received, after checking its signature."""
        with self._lock:
            received = list(self.received)
        events = []
        for headers, body in received:
            expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            assert headers["Otari-Signature"] == expected
            assert headers["Content-Type"] == "application/json"
            events.append(loads(body))
        return events

    def wait_for(self, count: int) -> list[dict[str, Any]]:
        wait_until(lambda: len(self.received) >= count, 15, f"{count} webhook POST(s)")
        return self.events()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server


def alerts_config(receiver: Receiver, **extra: Any) -> dict[str, Any]:
    return {"webhook_url": f"{receiver.url}/hook", "webhook_secret": SECRET, **extra}


def budgeted(
    admin: httpx.Client, user_id: str, max_budget: str, thresholds: list[str] | None = None
) -> str:
    """A user with its own budget, and a key for it; returns the key."""
    body = (
        f'{{"max_budget": {max_budget}'
        + (f', "alert_thresholds": [{", ".join(thresholds)}]' if thresholds else "")
        + "}"
    )
    budget = admin.post("/v1/budgets", content=body, headers={"content-type": "application/json"})
    assert budget.status_code == 200, budget.text
    user = admin.post(
        "/v1/users", json={"user_id": user_id, "budget_id": budget.json()["budget_id"]}
    )
    assert user.status_code == 200, user.text
    key = admin.post("/v1/keys", json={"user_id": user_id})
    return str(key.json()["key"])


def chat(url: str, key: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        timeout=30,
        headers={"Authorization": f"Bearer {key}"},
        json={"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
    )


def price(admin: httpx.Client) -> None:
    response = admin.post(
        "/v1/pricing",
        content=(
            f'{{"model_key": "{MODEL}", "input_price_per_million": 0, '
            '"output_price_per_million": 2000}'
        ),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200, response.text


def alert_rows(database_url: str) -> list[BudgetAlert]:
    engine = create_engine(normalize_url(database_url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(BudgetAlert.__table__).order_by(BudgetAlert.id)).all()
            return [BudgetAlert(**row._asdict()) for row in rows]
    finally:
        engine.dispose()


def delivered(database_url: str, count: int) -> list[BudgetAlert]:
    """Wait until `count` alert rows are recorded as delivered (the receiver sees a POST
    before its sender writes that down); then they must be all the rows there are."""
    wait_until(
        lambda: sum(r.delivered_at is not None for r in alert_rows(database_url)) >= count,
        15,
        f"{count} delivered alert(s)",
    )
    rows = alert_rows(database_url)
    assert len(rows) == count
    return rows


def test_one_signed_event_per_crossed_threshold(
    gateway_factory: Callable[..., Gateway], receiver: Receiver, database_url: str
) -> None:
    gateway = gateway_factory(alerts=alerts_config(receiver))
    price(gateway.admin)
    # alice overrides the thresholds; bob has the gateway's ([0.8, 1]).
    alice = budgeted(gateway.admin, "alice", "0.05", ["0.4", "0.6"])
    bob = budgeted(gateway.admin, "bob", "0.01")

    assert chat(gateway.url, alice).status_code == 200
    assert chat(gateway.url, alice).status_code == 200  # spend 0.02: 0.4 of 0.05
    (first,) = receiver.wait_for(1)
    assert chat(gateway.url, alice).status_code == 200  # spend 0.03: 0.6
    second = receiver.wait_for(2)[1]
    user = gateway.get_user("alice")
    budget_id = user["budget_id"]
    started = datetime.fromisoformat(user["budget_started_at"]).isoformat()
    for event, fraction, spend in ((first, "0.4", "0.02"), (second, "0.6", "0.03")):
        assert set(event) == {
            "type",
            "id",
            "user_id",
            "budget_id",
            "threshold",
            "spend",
            "max_budget",
            "period_start",
            "period_end",
            "timestamp",
        }
        assert (event["type"], event["user_id"], event["budget_id"]) == (
            "budget.threshold_crossed",
            "alice",
            budget_id,
        )
        assert (event["threshold"], event["spend"], event["max_budget"]) == (
            Decimal(fraction),
            Decimal(spend),
            Decimal("0.05"),
        )
        assert datetime.fromisoformat(event["period_start"]).isoformat() == started
        assert event["period_end"] is None
    # Money is written as plain decimal numbers.
    assert b'"spend":0.02,' in receiver.received[0][1]

    # More spend in the same period crosses nothing new: no event. bob's request comes
    # after alice's last settlement, so once bob's events are in, alice's were checked.
    assert chat(gateway.url, alice).status_code == 200
    assert chat(gateway.url, alice).status_code == 200
    gateway.usage(5)
    assert chat(gateway.url, bob).status_code == 200  # 0.01 of 0.01: both 0.8 and 1
    events = receiver.wait_for(4)
    assert sorted((e["user_id"], e["threshold"]) for e in events) == [
        ("alice", Decimal("0.4")),
        ("alice", Decimal("0.6")),
        ("bob", Decimal("0.8")),
        ("bob", Decimal("1")),
    ]
    assert all(e["spend"] == COST for e in events if e["user_id"] == "bob")
    rows = delivered(database_url, 4)
    assert all(r.attempts == 1 and r.last_error is None for r in rows)
    assert len(receiver.received) == 4


def test_a_failed_delivery_is_retried_with_the_same_signed_event(
    gateway_factory: Callable[..., Gateway], database_url: str
) -> None:
    with Receiver(statuses=(500,)) as receiver:
        gateway = gateway_factory(
            alerts=alerts_config(receiver, thresholds=[1], retry_base_sec=0.2)
        )
        price(gateway.admin)
        key = budgeted(gateway.admin, "carol", "0.01")
        assert chat(gateway.url, key).status_code == 200
        events = receiver.wait_for(2)
        assert receiver.received[0][1] == receiver.received[1][1]  # the same event again
        assert events[0]["threshold"] == Decimal("1") and events[0]["spend"] == COST
        wait_until(
            lambda: alert_rows(database_url)[0].delivered_at is not None,
            10,
            "the retry to be recorded",
        )
        (row,) = alert_rows(database_url)
        assert row.attempts == 2 and row.last_error is None
        assert len(receiver.received) == 2


@pytest.fixture
def two_apps(postgres_url: str, receiver: Receiver) -> Iterator[tuple[str, str]]:
    """Two gateway apps sharing one PostgreSQL, one fake provider and one webhook."""
    with ExitStack() as stack:
        fake = stack.enter_context(FakeOpenAI(api_key=UPSTREAM_KEY))
        providers = {"fake": {"type": "openai", "base_url": fake.base_url, "api_key": UPSTREAM_KEY}}
        urls = [
            stack.enter_context(
                running(
                    make_settings(
                        postgres_url,
                        providers=providers,
                        usage_flush_interval=0.05,
                        alerts=alerts_config(receiver, thresholds=[0.5, 0.8, 1]),
                        auto_migrate=index == 0,
                    )
                )
            )
            for index in range(2)
        ]
        yield urls[0], urls[1]


def test_two_instances_serving_one_user_send_each_event_once(
    two_apps: tuple[str, str], receiver: Receiver, postgres_url: str
) -> None:
    a, b = two_apps
    with httpx.Client(base_url=a, headers=MASTER, timeout=30) as admin:
        price(admin)
        key = budgeted(admin, "dana", "0.2")
        sentinels = [budgeted(admin, f"sentinel-{i}", "0.01") for i in range(2)]
    # 20 requests at once, alternating between the instances: spend reaches the whole
    # budget (0.2), both instances settle (and check) dana's spend many times.
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda i: chat((a, b)[i % 2], key), range(20)))
    assert [r.status_code for r in answers] == [200] * 20
    # Each instance then serves a sentinel after dana's last settlement on it.
    assert chat(a, sentinels[0]).status_code == 200
    assert chat(b, sentinels[1]).status_code == 200
    wait_until(
        lambda: (
            {e["user_id"] for e in receiver.events()} >= {"sentinel-0", "sentinel-1"}
            and len(receiver.received) >= 9
        ),
        15,
        "the sentinels' events",
    )
    dana = [e for e in receiver.events() if e["user_id"] == "dana"]
    assert sorted(e["threshold"] for e in dana) == [Decimal("0.5"), Decimal("0.8"), Decimal("1")]
    assert len(receiver.received) == 9  # 3 for dana, 3 for each sentinel
    rows = delivered(postgres_url, 9)
    assert all(r.attempts == 1 for r in rows)


def test_alert_settings_are_validated_and_exact() -> None:
    from otari_server.accounting.budget_alerts import parse_settings
    from otari_server.settings import ConfigError

    base = {"webhook_url": "https://hooks.example.com/otari", "webhook_secret": SECRET}
    assert parse_settings({}) is None
    parsed = parse_settings({**base, "thresholds": [1.0, 0.8, 0.8]})
    assert parsed is not None and parsed.thresholds == (Decimal("0.8"), Decimal("1"))
    assert parse_settings(base).thresholds == (Decimal("0.8"), Decimal("1"))  # type: ignore[union-attr]
    for bad, says in (
        ({**base, "thresholds": [0]}, "thresholds[0]"),
        ({**base, "thresholds": ["x"]}, "thresholds[0]"),
        ({**base, "thresholds": []}, "thresholds"),
        ({"webhook_url": base["webhook_url"]}, "webhook_secret"),
        ({**base, "webhook_url": "ftp://x"}, "webhook_url"),
        ({**base, "retries": 3}, "alerts.retries"),
    ):
        with pytest.raises(ConfigError, match=re.escape(says)):
            parse_settings(bad)


def test_budget_alert_thresholds_round_trip_and_bad_ones_are_refused(client: Any) -> None:
    created = client.post(
        "/v1/budgets",
        content='{"max_budget": 10, "alert_thresholds": [0.9, 0.50, 0.9]}',
        headers={**MASTER, "content-type": "application/json"},
    )
    assert created.status_code == 200, created.text
    assert loads(created.text)["alert_thresholds"] == [Decimal("0.5"), Decimal("0.9")]
    budget_id = created.json()["budget_id"]
    for bad in ("[0]", "[-1]", "[]", '["x"]'):
        refused = client.patch(
            f"/v1/budgets/{budget_id}",
            content=f'{{"alert_thresholds": {bad}}}',
            headers={**MASTER, "content-type": "application/json"},
        )
        assert refused.status_code in (400, 422), bad
    cleared = client.patch(
        f"/v1/budgets/{budget_id}", json={"alert_thresholds": None}, headers=MASTER
    )
    assert cleared.json()["alert_thresholds"] is None

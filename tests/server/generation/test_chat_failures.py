"""Upstream failures, disconnects and crashes: clear errors, nothing leaked, nothing lost."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import httpx
import openai
import pytest
from sqlalchemy import update
from starlette.testclient import TestClient

from otari_server.app import create_app
from otari_server.runtime import instance_name
from otari_server.storage.db import create_db_engine, session_factory
from otari_server.storage.tables import Reservation, User, utcnow
from tests.support.fakes import Behaviour, Failure
from tests.support.gateway import UPSTREAM_KEY, Gateway
from tests.support.servers import MASTER_KEY, free_port, make_settings


@pytest.fixture
def gw(gateway: Gateway) -> Gateway:
    gateway.user("alice", max_budget="5")
    return gateway


def alice(gateway: Gateway) -> openai.OpenAI:
    return gateway.client(gateway.key(user_id="alice"))


def ask(client: openai.OpenAI, **kwargs: object) -> object:
    return client.chat.completions.create(  # type: ignore[call-overload]
        model=kwargs.pop("model", "fake:gpt-4o-mini"),
        messages=[{"role": "user", "content": "hi"}],
        **kwargs,
    )


def test_provider_4xx_keeps_status_and_message_without_the_key(gw: Gateway) -> None:
    gw.openai_fake.fail(400, f"Invalid 'temperature' for key {UPSTREAM_KEY}", param="temperature")
    with pytest.raises(openai.BadRequestError) as info:
        ask(alice(gw))
    message = str(info.value)
    assert "Invalid 'temperature'" in message and UPSTREAM_KEY not in message
    [row] = gw.usage(1)
    assert row["status"] == "error" and UPSTREAM_KEY not in str(row["error_message"])
    assert gw.get_user("alice")["reserved"] == 0


def test_provider_5xx_becomes_502(gw: Gateway) -> None:
    gw.openai_fake.fail(500, "The server had an error")
    with pytest.raises(openai.APIStatusError) as info:
        ask(alice(gw))
    assert info.value.status_code == 502
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "upstream_error"
    assert "Traceback" not in str(body)
    [row] = gw.usage(1)
    assert row["status"] == "error" and row["cost"] == 0


def test_timeout_becomes_504(gateway_factory: Callable[..., Gateway]) -> None:
    gateway = gateway_factory(request_timeout=0.5)
    gateway.price("fake:gpt-4o-mini", "1", "2")
    gateway.openai_fake.push(delay=30)  # the fake cancels it when the gateway gives up
    with pytest.raises(openai.APIStatusError) as info:
        ask(gateway.client(gateway.key()))
    assert info.value.status_code == 504
    assert gateway.usage(1)[0]["status"] == "error"


def test_unreachable_provider_becomes_502(database_url: str) -> None:
    port = free_port()  # a port that refuses connections (this worker's range)
    providers = {"dead": {"type": "openai", "base_url": f"http://127.0.0.1:{port}/v1"}}
    settings = make_settings(database_url, providers=providers, require_pricing=False)
    with TestClient(create_app(settings)) as client:
        response = client.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
            json={"model": "dead:m", "messages": [{"role": "user", "content": "x"}]},
        )
    assert response.status_code == 502
    assert "Could not reach provider 'dead'" in response.json()["error"]["message"]


def test_malformed_provider_json_becomes_502(gw: Gateway) -> None:
    gw.openai_fake.push(malformed=True)
    with pytest.raises(openai.APIStatusError) as info:
        ask(alice(gw))
    assert info.value.status_code == 502
    assert "malformed" in str(info.value)


def test_stream_cut_midway_ends_with_an_error_event(gw: Gateway) -> None:
    gw.openai_fake.push(cut_after=3)
    with pytest.raises(openai.APIError) as info:
        list(ask(alice(gw), stream=True))  # type: ignore[call-overload]
    assert "provider" in str(info.value).lower()
    [row] = gw.usage(1)
    assert row["status"] == "error" and row["completion_tokens"] == 2
    assert gw.get_user("alice")["reserved"] == 0


def test_provider_error_inside_a_stream_is_relayed(gw: Gateway) -> None:
    gw.openai_fake.push(error=Failure(500, "overloaded mid-stream"), error_after=2)
    with pytest.raises(openai.APIError) as info:
        list(ask(alice(gw), stream=True))  # type: ignore[call-overload]
    assert "overloaded mid-stream" in str(info.value)
    assert len(gw.usage(1)) == 1


def test_client_disconnect_mid_stream_is_recorded_and_settled(gw: Gateway) -> None:
    gate = gw.openai_fake.gate()
    gw.openai_fake.push(Behaviour(gate=gate, hold_after=3))
    key = gw.key(user_id="alice")
    with (
        httpx.Client(base_url=gw.url, timeout=30) as http,
        http.stream(
            "POST",
            "/v1/chat/completions",
            headers={"Otari-Key": key},
            json={
                "model": "fake:gpt-4o-mini",
                "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
            },
        ) as response,
    ):
        first = next(response.iter_bytes())
        assert first.startswith(b"data: ")
        # Leaving the block closes the connection while the provider is still streaming.
    # No wait at the gate: the relay may stop before the provider even reaches it.
    [row] = gw.usage(1)  # written without the provider ever finishing: the relay stopped
    gate.release()
    assert row["status"] == "client_disconnected"
    deadline = time.monotonic() + 10
    while gw.get_user("alice")["reserved"] != 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gw.get_user("alice")["reserved"] == 0


def test_model_allow_lists_are_enforced(gw: Gateway) -> None:
    limited = gw.client(gw.key(allowed_models=["claude:*"]))
    with pytest.raises(openai.PermissionDeniedError):
        ask(limited)
    ask(limited, model="claude:claude-sonnet")
    gw.admin.patch("/v1/users/alice", json={"allowed_models": ["fake:gpt-4o-mini"]})
    user_key = gw.client(gw.key(user_id="alice"))
    ask(user_key)
    with pytest.raises(openai.PermissionDeniedError):
        ask(user_key, model="claude:claude-sonnet")
    assert len(gw.openai_fake.requests) == 1


def test_excluded_keys_are_metered_but_not_charged(gw: Gateway) -> None:
    gw.admin.post("/v1/budgets", json={"budget_id": "tiny", "max_budget": 0})
    gw.admin.patch("/v1/users/alice", json={"budget_id": "tiny"})
    excluded = gw.client(gw.key(user_id="alice", exclude_from_budget=True))
    ask(excluded)
    [row] = gw.usage(1)
    assert row["cost"] == Decimal("0.000011") and row["counts_toward_budget"] is False
    assert gw.get_user("alice")["spend"] == 0


def test_cache_prices_apply_to_cached_prompt_tokens(
    gateway_factory: Callable[..., Gateway],
) -> None:
    gateway = gateway_factory()
    gateway.admin.post(
        "/v1/pricing",
        json={
            "model_key": "fake:gpt-4o-mini",
            "input_price_per_million": 10,
            "output_price_per_million": 20,
            "cache_read_price_per_million": 1,
        },
    )
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 10,
        "total_tokens": 110,
        "prompt_tokens_details": {"cached_tokens": 60},
    }
    gateway.openai_fake.push(
        body={
            "id": "c",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "ok"},
                }
            ],
            "usage": usage,
        }
    )
    ask(gateway.client(gateway.key()))
    [row] = gateway.usage(1)
    # 40 fresh x $10/M + 60 cached x $1/M + 10 output x $20/M
    assert row["cost"] == Decimal("0.00066") and row["cache_read_tokens"] == 60


def test_crash_reservations_are_reclaimed_at_next_start(database_url: str) -> None:
    settings = make_settings(database_url, port=free_port())
    with TestClient(create_app(settings)) as client:
        client.post(
            "/v1/budgets",
            json={"budget_id": "b", "max_budget": 1},
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
        )
        client.post(
            "/v1/users",
            json={"user_id": "u", "budget_id": "b"},
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
        )
    # What a SIGKILL mid-request leaves: a held amount and its reservation row.
    engine = create_db_engine(database_url)
    now = utcnow()
    with session_factory(engine).begin() as session:
        session.execute(update(User).where(User.user_id == "u").values(reserved=Decimal("0.7")))
        session.add(
            Reservation(
                id="r1",
                user_id="u",
                amount=Decimal("0.7"),
                instance_id=instance_name(settings),
                created_at=now,
                expires_at=now + timedelta(hours=1),
            )
        )
        session.add(
            Reservation(
                id="r2",
                user_id="u",
                amount=Decimal(0),
                instance_id="elsewhere:1",
                created_at=now,
                expires_at=now + timedelta(hours=1),
            )
        )
    engine.dispose()
    with TestClient(create_app(settings)) as client:
        user = client.get("/v1/users/u", headers={"Authorization": f"Bearer {MASTER_KEY}"})
        assert user.json()["reserved"] == 0
    engine = create_db_engine(database_url)
    with session_factory(engine)() as session:
        remaining = [r.id for r in session.query(Reservation)]
    engine.dispose()
    assert remaining == ["r2"]  # another live instance's hold is left alone


def test_spent_budget_renews_when_its_period_ends(gw: Gateway, database_url: str) -> None:
    gw.admin.post(
        "/v1/budgets", json={"budget_id": "daily", "max_budget": 0.001, "budget_duration_sec": 3600}
    )
    gw.admin.patch("/v1/users/alice", json={"budget_id": "daily"})
    client = alice(gw)
    engine = create_db_engine(database_url)
    with session_factory(engine).begin() as session:  # exhausted, in a period now over
        session.execute(
            update(User)
            .where(User.user_id == "alice")
            .values(
                spend=Decimal("0.001"),
                next_budget_reset_at=utcnow() - timedelta(seconds=1),
                budget_started_at=utcnow() - timedelta(seconds=3601),
            )
        )
    engine.dispose()
    ask(client, max_tokens=5)
    gw.usage(1)
    user = gw.get_user("alice")
    assert user["spend"] == Decimal("0.000011")


ANTHROPIC_ODD = {  # a content block that is no object
    "id": "msg_odd",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet",
    "content": ["just a string"],
    "stop_reason": "end_turn",
    "usage": {"input_tokens": 3, "output_tokens": 2},
}
OPENAI_ODD = {  # a choice that is no object
    "id": "chatcmpl-odd",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini",
    "choices": ["just a string"],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
}


def test_an_answer_a_translator_cannot_read_is_a_502_with_its_traceback_logged(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    import anthropic

    key = gw.key(user_id="alice")
    gw.anthropic_fake.push(body=ANTHROPIC_ODD)
    with pytest.raises(openai.InternalServerError) as chat:
        ask(gw.client(key), model="claude:claude-sonnet")
    assert chat.value.status_code == 502
    assert "Provider 'claude' returned a malformed response" in str(chat.value)
    gw.anthropic_fake.push(body=ANTHROPIC_ODD)
    with pytest.raises(openai.InternalServerError) as responses:
        gw.client(key).responses.create(model="claude:claude-sonnet", input="hi")
    assert responses.value.status_code == 502
    gw.openai_fake.push(body=OPENAI_ODD)
    with pytest.raises(anthropic.InternalServerError) as messages:
        gw.anthropic(key).messages.create(
            model="fake:gpt-4o-mini", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert messages.value.status_code == 502
    logged = [r for r in caplog.records if r.getMessage().startswith("could not translate")]
    assert [r.getMessage().split(" (")[0] for r in logged] == [
        "could not translate an answer of provider 'claude'",
        "could not translate an answer of provider 'claude'",
        "could not translate an answer of provider 'fake'",
    ]
    assert all(r.exc_info is not None for r in logged)  # the traceback tells a bug apart
    assert all(UPSTREAM_KEY not in r.getMessage() for r in caplog.records)
    assert [row["status_code"] for row in gw.usage(3)] == [502, 502, 502]

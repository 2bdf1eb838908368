"""The official otari client SDK (PyPI `otari` 0.4.x), unchanged, against a running gateway.

Every management method of `otari.control_plane.ControlPlane` is driven over real HTTP (the SDK
calls `/api/v1/...`), on SQLite and on PostgreSQL, and the values it parses are checked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from otari import OtariClient
from otari._client import (
    ApiClient,
    Configuration,
    CreateBudgetRequest,
    CreateKeyRequest,
    CreateUserRequest,
    PricingTier,
    SetPricingRequest,
    UpdateBudgetRequest,
    UpdateKeyRequest,
    UpdateUserRequest,
)
from otari._client.api.models_api import ModelsApi
from otari._client.exceptions import NotFoundException
from otari.control_plane import ControlPlane
from otari.errors import AuthenticationError, ModelNotFoundError, OtariError

from otari_server.storage.db import create_db_engine, session_factory
from otari_server.storage.tables import UsageLog, User
from tests.support.servers import MASTER_KEY, make_settings, running

DAY = 86400
SLASH_MODEL = "openrouter:meta-llama/llama-3-70b"


@pytest.fixture
def gateway(database_url: str) -> Iterator[str]:
    """Base URL of a live gateway on the parametrized database."""
    with running(make_settings(database_url)) as url:
        yield url


@pytest.fixture
def cp(gateway: str) -> Iterator[ControlPlane]:
    """The SDK's management client, authenticated with the master key."""
    control_plane = ControlPlane(gateway, MASTER_KEY)
    yield control_plane
    control_plane.close()


def at(text: str | None) -> datetime:
    """Parse a timestamp the SDK hands back as a string."""
    assert text is not None
    return datetime.fromisoformat(text)


def usage_row(row_id: str, user_id: str | None, timestamp: datetime, cost: str) -> UsageLog:
    """A usage row as the proxy would record it for a chat completion."""
    return UsageLog(
        id=row_id,
        user_id=user_id,
        api_key_id=None,
        timestamp=timestamp,
        model="gpt-4o",
        provider="openai",
        endpoint="/v1/chat/completions",
        prompt_tokens=100,
        completion_tokens=20,
        total_tokens=120,
        cost=Decimal(cost),
        status="success",
        error_message=None,
        latency_ms=42,
    )


def write_rows(database_url: str, change: Callable[[Any], None]) -> None:
    """Test setup straight in the gateway's database (no generation endpoint exists yet)."""
    engine = create_db_engine(database_url)
    try:
        with session_factory(engine).begin() as session:
            change(session)
    finally:
        engine.dispose()


def test_keys(cp: ControlPlane, gateway: str) -> None:
    cp.users.create(CreateUserRequest(user_id="alice"))
    expires = datetime(2099, 1, 2, 3, 4, 5, tzinfo=UTC)
    created = cp.keys.create(
        CreateKeyRequest(
            key_name="ci", user_id="alice", metadata={"team": "infra", "n": 3}, expires_at=expires
        )
    )
    assert created.key.startswith("gw-") and len(created.key) > 30
    assert created.key_name == "ci" and created.user_id == "alice" and created.is_active
    assert created.metadata == {"team": "infra", "n": 3}
    assert at(created.expires_at) == expires
    assert created.key_prefix is not None and created.key.startswith(created.key_prefix)

    fetched = cp.keys.get(created.id)
    assert (fetched.id, fetched.key_name, fetched.user_id) == (created.id, "ci", "alice")
    assert fetched.last_used_at is None
    assert [key.id for key in cp.keys.list()] == [created.id]

    # The /api/v1 alias and /v1 are the same resource.
    plain = httpx.get(
        f"{gateway}/v1/keys/{created.id}", headers={"Authorization": f"Bearer {MASTER_KEY}"}
    )
    assert plain.status_code == 200 and plain.json()["key_name"] == "ci"
    assert "key" not in plain.json(), "the secret is shown only once"

    renamed = cp.keys.update(created.id, UpdateKeyRequest(key_name="renamed"))
    assert renamed.key_name == "renamed" and renamed.is_active
    assert renamed.metadata == {"team": "infra", "n": 3}, "PATCH keeps fields not sent"
    assert cp.keys.update(created.id, UpdateKeyRequest(is_active=False)).is_active is False
    assert cp.keys.update(created.id, UpdateKeyRequest(is_active=True)).is_active is True

    cp.keys.delete(created.id)
    # As the otari SDK's own suite expects: a deleted key is gone.
    with pytest.raises(ModelNotFoundError) as deleted:
        cp.keys.get(created.id)
    assert deleted.value.status_code == 404
    assert created.id not in [key.id for key in cp.keys.list()]

    with pytest.raises(ModelNotFoundError) as missing:
        cp.keys.get("no-such-key")
    assert missing.value.status_code == 404 and "no-such-key" in str(missing.value)
    with pytest.raises(ModelNotFoundError):
        cp.keys.delete("no-such-key")


def test_keys_list_pages(cp: ControlPlane) -> None:
    ids = [cp.keys.create(CreateKeyRequest(key_name=f"k{i}")).id for i in range(3)]
    assert [key.id for key in cp.keys.list()] == ids
    assert [key.id for key in cp.keys.list(skip=1, limit=1)] == ids[1:2]
    assert all(key.user_id is None for key in cp.keys.list())


def test_created_key_authenticates_the_sdk_until_revoked(cp: ControlPlane, gateway: str) -> None:
    key = cp.keys.create(CreateKeyRequest(key_name="app"))
    client = OtariClient(gateway, api_key=key.key)
    try:
        assert client.list_models() == []
        as_api_key = ControlPlane(gateway, key.key)
        with pytest.raises(AuthenticationError) as forbidden:
            as_api_key.keys.list()
        as_api_key.close()
        assert forbidden.value.status_code == 403
        cp.keys.delete(key.id)
        with pytest.raises(AuthenticationError) as refused:
            client.list_models()
        assert refused.value.status_code == 401
    finally:
        client.close()


def test_wrong_master_key_is_refused(gateway: str) -> None:
    impostor = ControlPlane(gateway, "sk-not-the-master-key")
    with pytest.raises(AuthenticationError) as refused:
        impostor.users.list()
    impostor.close()
    assert refused.value.status_code == 401


def test_users(cp: ControlPlane) -> None:
    budget = cp.budgets.create(CreateBudgetRequest(max_budget=25.5, budget_duration_sec=DAY))
    user = cp.users.create(
        CreateUserRequest(
            user_id="alice",
            alias="Alice",
            budget_id=budget.budget_id,
            metadata={"team": "research"},
        )
    )
    assert (user.user_id, user.alias, user.budget_id) == ("alice", "Alice", budget.budget_id)
    assert user.blocked is False and user.metadata == {"team": "research"}
    assert user.spend == 0 and user.reserved == 0
    assert at(user.next_budget_reset_at) - at(user.budget_started_at) == timedelta(seconds=DAY)

    assert cp.users.get("alice").alias == "Alice"
    cp.users.create(CreateUserRequest(user_id="bob"))
    assert [u.user_id for u in cp.users.list()] == ["alice", "bob"]
    assert [u.user_id for u in cp.users.list(skip=1, limit=5)] == ["bob"]

    blocked = cp.users.update("alice", UpdateUserRequest(blocked=True))
    assert blocked.blocked is True and blocked.alias == "Alice"
    assert blocked.metadata == {"team": "research"}, "PATCH keeps fields not sent"
    detached = cp.users.update("alice", UpdateUserRequest(budget_id=None))
    assert detached.budget_id is None and detached.next_budget_reset_at is None

    with pytest.raises(OtariError) as duplicate:
        cp.users.create(CreateUserRequest(user_id="bob"))
    assert duplicate.value.status_code == 409

    key = cp.keys.create(CreateKeyRequest(user_id="bob"))
    cp.users.delete("bob")
    with pytest.raises(ModelNotFoundError) as gone:
        cp.users.get("bob")
    assert gone.value.status_code == 404
    assert [u.user_id for u in cp.users.list()] == ["alice"]
    assert cp.keys.get(key.id).is_active is False, "deleting a user deactivates its keys"

    restored = cp.users.create(CreateUserRequest(user_id="bob", alias="Bob again"))
    assert restored.alias == "Bob again" and restored.spend == 0

    for call in (
        lambda: cp.users.get("nobody"),
        lambda: cp.users.delete("nobody"),
        lambda: cp.users.update("nobody", UpdateUserRequest(alias="x")),
    ):
        with pytest.raises(ModelNotFoundError):
            call()


def test_user_usage(cp: ControlPlane, database_url: str) -> None:
    cp.users.create(CreateUserRequest(user_id="alice"))
    cp.users.create(CreateUserRequest(user_id="bob"))
    day = datetime(2024, 5, 1, 12, tzinfo=UTC)
    write_rows(
        database_url,
        lambda session: session.add_all(
            [
                usage_row("u1", "alice", day, "0.000125"),
                usage_row("u2", "bob", day + timedelta(hours=1), "1.5"),
                usage_row("u3", "alice", day + timedelta(hours=2), "0.0000000375"),
            ]
        ),
    )

    rows = cp.users.get_usage("alice")
    assert [row.id for row in rows] == ["u3", "u1"], "newest first, only alice"
    assert [row.cost for row in rows] == [0.0000000375, 0.000125]
    assert rows[1].model == "gpt-4o" and rows[1].endpoint == "/v1/chat/completions"
    assert (rows[1].prompt_tokens, rows[1].completion_tokens, rows[1].total_tokens) == (
        100,
        20,
        120,
    )
    assert at(rows[1].timestamp) == day and rows[1].status == "success"
    assert [row.id for row in cp.users.get_usage("alice", skip=1, limit=1)] == ["u1"]

    cp.users.delete("alice")
    assert [row.id for row in cp.users.get_usage("alice")] == ["u3", "u1"], "history is kept"
    with pytest.raises(ModelNotFoundError):
        cp.users.get_usage("nobody")


def test_budgets(cp: ControlPlane, database_url: str) -> None:
    budget = cp.budgets.create(CreateBudgetRequest(max_budget=25.5, budget_duration_sec=DAY))
    assert budget.max_budget == 25.5 and budget.budget_duration_sec == DAY
    assert budget.user_count == 0 and budget.total_spend == 0
    unlimited = cp.budgets.create(CreateBudgetRequest())
    assert unlimited.max_budget is None and unlimited.budget_duration_sec is None

    assert cp.budgets.get(budget.budget_id).max_budget == 25.5
    assert {b.budget_id for b in cp.budgets.list()} == {budget.budget_id, unlimited.budget_id}
    assert len(cp.budgets.list(skip=1, limit=1)) == 1

    updated = cp.budgets.update(budget.budget_id, UpdateBudgetRequest(max_budget=30.25))
    assert updated.max_budget == 30.25 and updated.budget_duration_sec == DAY
    weekly = cp.budgets.update(budget.budget_id, UpdateBudgetRequest(budget_duration_sec=7 * DAY))
    assert weekly.budget_duration_sec == 7 * DAY and weekly.max_budget == 30.25

    cp.users.create(CreateUserRequest(user_id="alice", budget_id=budget.budget_id))

    def spend(session: Any) -> None:
        session.get(User, "alice").spend = Decimal("12.3456789")

    write_rows(database_url, spend)
    used = cp.budgets.get(budget.budget_id)
    assert used.user_count == 1 and used.total_spend == 12.3456789
    assert cp.users.get("alice").spend == 12.3456789

    with pytest.raises(OtariError) as in_use:
        cp.budgets.delete(budget.budget_id)
    assert in_use.value.status_code == 409
    cp.users.update("alice", UpdateUserRequest(budget_id=unlimited.budget_id))
    cp.budgets.delete(budget.budget_id)
    with pytest.raises(ModelNotFoundError):
        cp.budgets.get(budget.budget_id)
    with pytest.raises(ModelNotFoundError):
        cp.budgets.update("no-such-budget", UpdateBudgetRequest(max_budget=1))


def test_pricing(cp: ControlPlane) -> None:
    now = datetime.now(UTC)
    current = cp.pricing.set(
        SetPricingRequest(
            model_key="openai:gpt-4o", input_price_per_million=2.5, output_price_per_million=10
        )
    )
    assert current.model_key == "openai:gpt-4o"
    assert (current.input_price_per_million, current.output_price_per_million) == (2.5, 10)
    assert abs(at(current.effective_at) - now) < timedelta(minutes=1)

    old = datetime(2024, 1, 1, tzinfo=UTC)
    new = datetime(2024, 6, 1, tzinfo=UTC)
    future = now + timedelta(days=30)
    for effective_at, price in ((old, 0.15), (new, 0.12), (future, 0.1)):
        entry = cp.pricing.set(
            SetPricingRequest(
                model_key=SLASH_MODEL,
                input_price_per_million=price,
                output_price_per_million=0.6,
                effective_at=effective_at,
            )
        )
        assert at(entry.effective_at) == effective_at and entry.model_key == SLASH_MODEL

    assert cp.pricing.get(SLASH_MODEL).input_price_per_million == 0.12
    assert (
        cp.pricing.get(SLASH_MODEL, as_of=datetime(2024, 3, 1, tzinfo=UTC)).input_price_per_million
        == 0.15
    )
    assert cp.pricing.get(SLASH_MODEL, as_of=future).input_price_per_million == 0.1
    with pytest.raises(ModelNotFoundError):
        cp.pricing.get(SLASH_MODEL, as_of=datetime(2023, 1, 1, tzinfo=UTC))

    history = cp.pricing.get_history(SLASH_MODEL)
    assert [at(e.effective_at) for e in history] == [future, new, old]
    assert [e.input_price_per_million for e in history] == [0.1, 0.12, 0.15]

    listed = {e.model_key: e.input_price_per_million for e in cp.pricing.list()}
    assert listed == {"openai:gpt-4o": 2.5, SLASH_MODEL: 0.12}
    assert len(cp.pricing.list(skip=1, limit=1)) == 1

    cp.pricing.delete(SLASH_MODEL, effective_at=new)
    assert [at(e.effective_at) for e in cp.pricing.get_history(SLASH_MODEL)] == [future, old]
    assert cp.pricing.get(SLASH_MODEL).input_price_per_million == 0.15
    cp.pricing.delete(SLASH_MODEL)
    for call in (
        lambda: cp.pricing.get(SLASH_MODEL),
        lambda: cp.pricing.delete(SLASH_MODEL),
        lambda: cp.pricing.get_history(SLASH_MODEL),
    ):
        with pytest.raises(ModelNotFoundError):
            call()
    assert [e.model_key for e in cp.pricing.list()] == ["openai:gpt-4o"]


def test_usage(cp: ControlPlane, database_url: str) -> None:
    cp.users.create(CreateUserRequest(user_id="alice"))
    start = datetime(2024, 5, 1, tzinfo=UTC)
    write_rows(
        database_url,
        lambda session: session.add_all(
            [
                usage_row("u1", "alice", start, "0.5"),
                usage_row("u2", "bob", start + timedelta(days=1), "0.25"),
                usage_row("u3", "alice", start + timedelta(days=2), "0.0000000375"),
                usage_row("u4", None, start + timedelta(days=3), "2"),
            ]
        ),
    )

    everything = cp.usage.list()
    assert [row.id for row in everything] == ["u4", "u3", "u2", "u1"], "newest first"
    assert [row.cost for row in everything] == [2, 0.0000000375, 0.25, 0.5]
    assert everything[0].user_id is None and everything[1].user_id == "alice"
    assert everything[1].source and everything[1].counts_toward_budget is True
    assert [row.id for row in cp.usage.list(user_id="alice")] == ["u3", "u1"]
    assert [row.id for row in cp.usage.list(start_date=start + timedelta(days=1))] == [
        "u4",
        "u3",
        "u2",
    ]
    assert [row.id for row in cp.usage.list(end_date=start + timedelta(days=1))] == ["u1"], (
        "end_date is exclusive"
    )
    window = cp.usage.list(
        start_date=start + timedelta(hours=1), end_date=start + timedelta(days=3), user_id="alice"
    )
    assert [row.id for row in window] == ["u3"]
    assert [row.id for row in cp.usage.list(skip=1, limit=2)] == ["u3", "u2"]
    assert cp.usage.list(user_id="nobody") == []


def test_models(cp: ControlPlane, gateway: str) -> None:
    key = cp.keys.create(CreateKeyRequest(key_name="models"))
    cp.pricing.set(
        SetPricingRequest(
            model_key="openai:gpt-4o", input_price_per_million=2.5, output_price_per_million=10
        )
    )
    cp.pricing.set(
        SetPricingRequest(
            model_key=SLASH_MODEL,
            input_price_per_million=0.15,
            output_price_per_million=0.6,
            effective_at=datetime(2024, 1, 1, tzinfo=UTC),
        )
    )
    cp.pricing.set(
        SetPricingRequest(
            model_key="anthropic:claude-next",
            input_price_per_million=1,
            output_price_per_million=2,
            effective_at=datetime.now(UTC) + timedelta(days=1),
        )
    )

    client = OtariClient(gateway, api_key=key.key)
    try:
        models = client.list_models()
    finally:
        client.close()
    assert [(m.id, m.owned_by, m.object) for m in models] == [
        ("openai:gpt-4o", "openai", "model"),
        (SLASH_MODEL, "openrouter", "model"),
    ]
    assert models[1].created == int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())

    # ControlPlane has no models accessor; the SDK's generated ModelsApi is the way in.
    with ApiClient(Configuration(host=gateway)) as api:
        api.set_default_header("Otari-Key", f"Bearer {key.key}")
        model = ModelsApi(api).models_get_model(SLASH_MODEL)
        assert (model.id, model.owned_by) == (SLASH_MODEL, "openrouter")
        with pytest.raises(NotFoundException) as missing:
            ModelsApi(api).models_get_model("anthropic:claude-next")
        assert missing.value.status == 404


# Request fields the SDK knows beyond the reference. Each must come back as sent, or be refused
# with 400/422; ignoring it (a key with allowed_models that can call any model, a cache price
# that is never charged) is the one wrong answer.
def _budget_name(cp: ControlPlane) -> tuple[object, object]:
    return "team", cp.budgets.create(CreateBudgetRequest(name="team")).name


def _budget_limits(cp: ControlPlane) -> tuple[object, object]:
    budget = cp.budgets.create(CreateBudgetRequest(request_limit=10, token_limit=1000))
    return (10, 1000), (budget.request_limit, budget.token_limit)


def _budget_alignment(cp: ControlPlane) -> tuple[object, object]:
    budget = cp.budgets.create(CreateBudgetRequest(max_budget=5, reset_alignment="calendar_month"))
    return "calendar_month", budget.reset_alignment


def _key_allowed_models(cp: ControlPlane) -> tuple[object, object]:
    key = cp.keys.create(CreateKeyRequest(allowed_models=["openai:gpt-4o"]))
    return ["openai:gpt-4o"], key.allowed_models


def _key_exclude_from_budget(cp: ControlPlane) -> tuple[object, object]:
    return True, cp.keys.create(CreateKeyRequest(exclude_from_budget=True)).exclude_from_budget


def _user_allowed_models(cp: ControlPlane) -> tuple[object, object]:
    user = cp.users.create(CreateUserRequest(user_id="u", allowed_models=["openai:gpt-4o"]))
    return ["openai:gpt-4o"], user.allowed_models


def _pricing_cache_prices(cp: ControlPlane) -> tuple[object, object]:
    entry = cp.pricing.set(
        SetPricingRequest(
            model_key="anthropic:claude",
            input_price_per_million=3,
            output_price_per_million=15,
            cache_read_price_per_million=0.3,
            cache_write_price_per_million=3.75,
            cache_write_1h_price_per_million=6,
        )
    )
    return (0.3, 3.75, 6), (
        entry.cache_read_price_per_million,
        entry.cache_write_price_per_million,
        entry.cache_write_1h_price_per_million,
    )


def _pricing_unit(cp: ControlPlane) -> tuple[object, object]:
    entry = cp.pricing.set(
        SetPricingRequest(
            model_key="openai:omni-moderation",
            input_price_per_million=0,
            output_price_per_million=0,
            unit="requests",
        )
    )
    return "requests", entry.unit


def _pricing_tiers(cp: ControlPlane) -> tuple[object, object]:
    entry = cp.pricing.set(
        SetPricingRequest(
            model_key="gemini:gemini-pro",
            input_price_per_million=1.25,
            output_price_per_million=10,
            pricing_tiers=[
                PricingTier(
                    min_input_tokens=200001,
                    input_price_per_million=2.5,
                    output_price_per_million=15,
                )
            ],
        )
    )
    return [(200001, 2.5, 15)], [
        (tier.min_input_tokens, tier.input_price_per_million, tier.output_price_per_million)
        for tier in entry.pricing_tiers
    ]


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(case, id=case.__name__.lstrip("_"))
        for case in (
            _budget_name,
            _budget_limits,
            _budget_alignment,
            _key_allowed_models,
            _key_exclude_from_budget,
            _user_allowed_models,
            _pricing_cache_prices,
            _pricing_unit,
            _pricing_tiers,
        )
    ],
)
def test_sdk_fields_are_kept_or_refused(
    sqlite_url: str, case: Callable[[ControlPlane], tuple[object, object]]
) -> None:
    with running(make_settings(sqlite_url)) as url:
        control_plane = ControlPlane(url, MASTER_KEY)
        try:
            sent, got = case(control_plane)
        except OtariError as refused:
            assert refused.status_code in (400, 422), refused
            return
        finally:
            control_plane.close()
    assert got == sent

"""Every resource's round trip, in-process (CliRunner) and through the installed executable,
against a real gateway."""

from __future__ import annotations

import csv
import io
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx

from otari_cli.errors import ExitCode
from tests.cli.conftest import FAKE_MODEL, Cli, InProcess, Result


def ok(result: Result) -> Result:
    assert result.code == 0, f"exit {result.code}: {result.err}"
    return result


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_budgets_round_trip(cli: Cli) -> None:
    created = ok(cli("budgets", "create", "--max", "25.00", "--period", "30d")).json()
    budget_id = created["budget_id"]
    assert created["max_budget"] == Decimal("25") and created["budget_duration_sec"] == 2592000
    assert ok(cli("budgets", "get", budget_id)).json()["budget_id"] == budget_id
    updated = ok(cli("budgets", "update", budget_id, "--max", "30.5", "--period", "1w")).json()
    assert updated["max_budget"] == Decimal("30.5") and updated["budget_duration_sec"] == 604800
    assert budget_id in ok(cli("budgets", "list", "-q")).out.split()
    assert ok(cli("budgets", "delete", budget_id, "--yes")).json()[0]["status"] == "deleted"
    gone = cli("budgets", "get", budget_id)
    assert gone.code == ExitCode.REFUSED and "404" in gone.err


def test_budget_limits_round_trip(cli: Cli) -> None:
    created = ok(
        cli(
            "budgets",
            "create",
            "--max",
            "25",
            "--reset-alignment",
            "calendar_month",
            "--request-limit",
            "1000",
            "--token-limit",
            "2000000",
            "--clamp",
        )
    ).json()
    assert (
        created["reset_alignment"],
        created["request_limit"],
        created["token_limit"],
        created["budget_clamp"],
        created["budget_duration_sec"],
    ) == ("calendar_month", 1000, 2000000, True, None)
    budget_id = created["budget_id"]
    updated = ok(
        cli("budgets", "update", budget_id, "--period", "1d", "--no-clamp", "--request-limit", "0")
    ).json()
    assert (
        updated["reset_alignment"],
        updated["budget_duration_sec"],
        updated["budget_clamp"],
        updated["request_limit"],
    ) == (None, 86400, False, 0)
    table = ok(cli("budgets", "get", budget_id, "-o", "table")).out
    assert "token limit" in table and "2000000" in table
    wrong = cli("budgets", "create", "--reset-alignment", "calendar_year")
    assert wrong.code != 0 and "calendar_year" in wrong.err
    both = cli("budgets", "create", "--period", "1d", "--reset-alignment", "calendar_day")
    assert both.code == ExitCode.REFUSED and "exclusive" in both.err


def test_users_round_trip(cli: Cli) -> None:
    budget_id = ok(cli("budgets", "create", "--max", "5")).json()["budget_id"]
    user_id = unique("alice")
    created = ok(
        cli(
            "users",
            "create",
            user_id,
            "--alias",
            "Alice",
            "--budget",
            budget_id,
            "--metadata",
            "team=ml",
        )
    ).json()
    assert (created["user_id"], created["alias"], created["budget_id"]) == (
        user_id,
        "Alice",
        budget_id,
    )
    assert created["metadata"] == {"team": "ml"} and created["blocked"] is False
    updated = ok(cli("users", "update", user_id, "--alias", "Al", "--blocked")).json()
    assert (updated["alias"], updated["blocked"]) == ("Al", True)
    assert ok(cli("users", "get", user_id)).json()["alias"] == "Al"
    detached = ok(cli("users", "update", user_id, "--no-budget")).json()
    assert detached["budget_id"] is None and detached["alias"] == "Al"
    assert user_id in ok(cli("users", "list", "-q")).out.split()
    assert ok(cli("users", "usage", user_id)).json() == []
    duplicate = cli("users", "create", user_id)
    assert duplicate.code == ExitCode.REFUSED, duplicate.err
    ok(cli("users", "delete", user_id, "--yes"))
    assert user_id not in ok(cli("users", "list", "-q")).out.split()


def test_keys_round_trip(cli: Cli) -> None:
    user_id = unique("bob")
    ok(cli("users", "create", user_id))
    created = ok(
        cli(
            "keys",
            "create",
            "--name",
            "ci",
            "--user",
            user_id,
            "--expires",
            "30d",
            "-m",
            "env=prod",
        )
    ).json()
    key_id, secret = created["id"], created["key"]
    assert secret.startswith("gw-") and created["user_id"] == user_id
    assert created["metadata"] == {"env": "prod"}
    expires = datetime.fromisoformat(created["expires_at"])
    expires = expires if expires.tzinfo else expires.replace(tzinfo=UTC)
    assert abs(expires - datetime.now(UTC) - timedelta(days=30)) < timedelta(minutes=5)
    shown = ok(cli("keys", "get", key_id)).json()
    assert shown["key_name"] == "ci" and "key" not in shown
    updated = ok(cli("keys", "update", key_id, "--name", "ci-2", "--inactive")).json()
    assert (updated["key_name"], updated["is_active"]) == ("ci-2", False)
    reactivated = ok(cli("keys", "update", key_id, "--active", "--no-expiry")).json()
    assert reactivated["is_active"] is True and reactivated["expires_at"] is None
    assert key_id in ok(cli("keys", "list", "-q")).out.split()
    revoked = cli("keys", "revoke", key_id, "--yes", "-q")
    assert ok(revoked).out == f"{key_id}\n"
    gone = cli("keys", "get", key_id)
    assert gone.code == ExitCode.REFUSED and "404" in gone.err
    assert key_id not in ok(cli("keys", "list", "-q")).out.split()


def test_pricing_tiers_round_trip(cli: Cli) -> None:
    model = f"fakeai:{unique('m')}"
    entry = ok(
        cli(
            "pricing",
            "set",
            model,
            "--input-price",
            "1.25",
            "--output-price",
            "10",
            "--tier",
            "200000:2.5:15",
            "--tier",
            "1000000::20",
        )
    ).json()
    assert entry["tiers"] == [
        {
            "above_input_tokens": 200000,
            "input_price_per_million": Decimal("2.5"),
            "output_price_per_million": 15,
        },
        {"above_input_tokens": 1000000, "output_price_per_million": 20},
    ]
    assert [t["min_input_tokens"] for t in entry["pricing_tiers"]] == [200001, 1000001]
    wrong = cli(
        "pricing", "set", model, "--input-price", "1", "--output-price", "1", "--tier", "lots:1:1"
    )
    assert wrong.code != 0 and "ABOVE_INPUT_TOKENS" in wrong.err


def test_pricing_round_trip(cli: Cli) -> None:
    model = f"fakeai:{unique('m')}/v1"
    first = ok(cli("pricing", "set", model, "--input-price", "0.15", "--output-price", "0.60"))
    assert first.json()["input_price_per_million"] == Decimal("0.15")
    between = datetime.now(UTC).isoformat()
    time.sleep(0.01)  # the two prices need distinct effective times
    ok(cli("pricing", "set", model, "--input-price", "0.20", "--output-price", "0.80"))
    now = ok(cli("pricing", "get", model)).json()
    assert now["model_key"] == model and now["output_price_per_million"] == Decimal("0.80")
    old = ok(cli("pricing", "get", model, "--as-of", between)).json()
    assert old["input_price_per_million"] == Decimal("0.15")
    history = ok(cli("pricing", "history", model)).json()
    assert sorted(h["input_price_per_million"] for h in history) == [
        Decimal("0.15"),
        Decimal("0.20"),
    ]
    assert model in ok(cli("pricing", "list", "-q")).out.split()
    assert model in [m["id"] for m in ok(cli("models", "list")).json()]
    assert ok(cli("models", "get", model)).json()["id"] == model
    ok(cli("pricing", "delete", model, "--yes"))
    gone = cli("pricing", "get", model)
    assert gone.code == ExitCode.REFUSED, gone.err


def test_health(cli: Cli) -> None:
    health = ok(cli("health")).json()
    assert health["status"] == "healthy" and health["ready"] is True


def test_usage_filters(cli: Cli) -> None:
    user_id = unique("carol")
    ok(cli("users", "create", user_id))
    ok(cli("pricing", "set", FAKE_MODEL, "--input-price", "1", "--output-price", "2"))
    secret = ok(cli("keys", "create", "--user", user_id)).json()["key"]
    url = gateway_url(cli)
    for _ in range(3):
        answer = httpx.post(
            f"{url}/v1/chat/completions",
            timeout=30,
            headers={"Authorization": f"Bearer {secret}"},
            json={"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hello"}]},
        )
        assert answer.status_code == 200, answer.text
    rows = poll_usage(cli, user_id, 3)
    assert {r["user_id"] for r in rows} == {user_id}
    assert rows[0]["prompt_tokens"] == 10 and rows[0]["cost"] == Decimal("0.00002")
    assert len(ok(cli("usage", "--user", user_id, "--limit", "2")).json()) == 2
    assert len(ok(cli("usage", "--user", user_id, "--all")).json()) == 3
    assert ok(cli("usage", "--user", user_id, "--since", "2999-01-01")).json() == []
    assert ok(cli("usage", "--user", user_id, "--until", "2000-01-01")).json() == []
    assert len(ok(cli("usage", "--user", user_id, "--since", "1h")).json()) == 3
    assert len(ok(cli("users", "usage", user_id)).json()) == 3
    assert ok(cli("usage", "--user", unique("nobody"))).json() == []


def gateway_url(cli: Cli) -> str:
    if isinstance(cli, InProcess):
        return cli.url
    return str(ok(cli("context", "show")).json()["url"])


def poll_usage(cli: Cli, user_id: str, count: int) -> list[dict[str, object]]:
    """Usage is written behind the response: poll until `count` rows show, with a deadline."""
    deadline = time.monotonic() + 20
    while True:
        rows: list[dict[str, object]] = ok(cli("usage", "--user", user_id)).json()
        if len(rows) >= count or time.monotonic() > deadline:
            recent = cli("usage", "--limit", "5")
            assert len(rows) == count, f"recent usage: {recent.out} {recent.err}"
            return rows
        time.sleep(0.1)


def test_rate_limits_are_settable_on_keys_and_users(cli: Cli) -> None:
    user_id = unique("limited")
    created = ok(cli("users", "create", user_id, "--rpm-limit", "60", "--tpm-limit", "1000"))
    assert (created.json()["rpm_limit"], created.json()["tpm_limit"]) == (60, 1000)
    cleared = ok(cli("users", "update", user_id, "--no-limits")).json()
    assert (cleared["rpm_limit"], cleared["tpm_limit"]) == (None, None)
    key = ok(cli("keys", "create", "--rpm-limit", "5", "-o", "json")).json()
    assert key["rpm_limit"] == 5 and key["tpm_limit"] is None
    changed = ok(cli("keys", "update", key["id"], "--tpm-limit", "900")).json()
    assert (changed["rpm_limit"], changed["tpm_limit"]) == (5, 900)
    refused = cli("keys", "update", key["id"], "--rpm-limit", "0")
    assert refused.code == ExitCode.USAGE


def test_tiny_money_is_plain_in_table_json_and_csv(cli: Cli) -> None:
    """Issue 11 item 9: 0.0000000001, never 1E-10, in every output format."""
    wide = {"COLUMNS": "300"}  # a table row on one line, so a value is never folded
    model = f"fakeai:{unique('tenth-nano')}"
    ok(cli("pricing", "set", model, "--input-price", "1e-10", "--output-price", "0.0000000375"))
    table = ok(cli("pricing", "get", model, "-o", "table", env=wide)).out
    assert "0.0000000001" in table and "0.0000000375" in table and "E-" not in table
    listed = ok(cli("pricing", "list", "-o", "table", env=wide)).out
    assert "0.0000000001" in listed and "E-" not in listed
    as_json = ok(cli("pricing", "get", model, "-o", "json")).out
    assert '"input_price_per_million": 0.0000000001' in as_json
    assert '"output_price_per_million": 0.0000000375' in as_json
    rows = list(csv.DictReader(io.StringIO(ok(cli("pricing", "get", model, "-o", "csv")).out)))
    assert rows[0]["input_price_per_million"] == "0.0000000001"
    assert rows[0]["output_price_per_million"] == "0.0000000375"

    user_id = unique("tiny")
    ok(cli("users", "create", user_id))
    priced = f"fakeai:{unique('tiny')}"
    ok(cli("pricing", "set", priced, "--input-price", "0.00001", "--output-price", "0.0075"))
    secret = ok(cli("keys", "create", "--user", user_id)).json()["key"]
    answer = httpx.post(
        f"{gateway_url(cli)}/v1/chat/completions",
        timeout=30,
        headers={"Authorization": f"Bearer {secret}"},
        json={"model": priced, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert answer.status_code == 200, answer.text
    # 10 prompt tokens at 0.00001 and 5 completion tokens at 0.0075 per million.
    [row] = poll_usage(cli, user_id, 1)
    assert row["cost"] == Decimal("0.0000000376")
    usage_json = ok(cli("usage", "--user", user_id, "-o", "json")).out
    assert '"cost":0.0000000376' in usage_json  # rows stream as compact JSON lines
    usage_csv = list(
        csv.DictReader(io.StringIO(ok(cli("usage", "--user", user_id, "-o", "csv")).out))
    )
    assert usage_csv[0]["cost"] == "0.0000000376"
    usage_table = ok(cli("usage", "--user", user_id, "-o", "table", env=wide)).out
    assert "0.0000000376" in usage_table and "E-" not in usage_table
    user_table = ok(cli("users", "get", user_id, "-o", "table", env=wide)).out
    assert "0.0000000376" in user_table and "E-" not in user_table

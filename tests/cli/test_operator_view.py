"""Issue 15: detail views show what an operator reads first (the secret first on `keys
create`), names are accepted where ids are, budgets have names and a calendar-month period.
Each test runs in-process (CliRunner) and through the installed executable, against a real
gateway."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from otari_cli.errors import ExitCode
from tests.cli.conftest import Cli
from tests.cli.test_roundtrip import ok, unique

KEY_DETAIL = [
    "id",
    "name",
    "prefix",
    "user",
    "active",
    "expires",
    "last used",
    "spend",
    "rpm limit",
    "tpm limit",
    "models",
    "created",
]
USER_DETAIL = [
    "user id",
    "alias",
    "blocked",
    "budget",
    "spend",
    "period started",
    "next reset",
    "rpm limit",
    "tpm limit",
    "models",
    "created",
    "updated",
]
BUDGET_DETAIL = [
    "budget id",
    "name",
    "max",
    "period",
    "request limit",
    "token limit",
    "clamp",
    "alert thresholds",
    "users",
    "created",
    "updated",
]


def detail(table: str) -> list[tuple[str, str]]:
    """A field/value table (as `-o table` writes it off a terminal) as (label, value) rows."""
    lines = [line.strip() for line in table.splitlines() if line.strip()]
    assert re.split(r"\s{2,}", lines[0]) == ["field", "value"], table
    rows = [re.split(r"\s{2,}", line, maxsplit=1) for line in lines[1:]]
    return [(row[0], row[1] if len(row) > 1 else "") for row in rows]


def utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def test_keys_create_shows_the_secret_first_and_internal_fields_only_in_json(cli: Cli) -> None:
    user_id, alias, name = unique("dana"), unique("Dana"), unique("deploy")
    ok(cli("users", "create", user_id, "--alias", alias))
    created = ok(
        cli("keys", "create", "--name", name, "--user", alias, "--rpm-limit", "30", "-o", "table")
    )
    rows = detail(created.out)
    assert [label for label, _ in rows] == ["secret", *KEY_DETAIL]
    values = dict(rows)
    secret = values["secret"]
    assert secret.startswith("gw-") and len(secret) > 40
    assert values["prefix"].endswith("…") and secret.startswith(values["prefix"][:-1])
    assert (
        values["name"],
        values["user"],
        values["rpm limit"],
        values["tpm limit"],
        values["models"],
        values["active"],
    ) == (name, user_id, "30", "unlimited", "any", "yes")
    assert "Save the key now" in created.err
    assert "workspace" not in created.out and "telemetry" not in created.out

    shown = ok(cli("keys", "get", name, "-o", "table")).out
    assert [label for label, _ in detail(shown)] == KEY_DETAIL
    assert dict(detail(shown))["id"] == values["id"]
    as_json = ok(cli("keys", "get", values["id"], "-o", "json")).json()
    assert as_json["workspace_id"] and "capture_agent_telemetry" in as_json
    assert as_json["key_prefix"] == values["prefix"][:-1] and "key" not in as_json

    rotated = detail(ok(cli("keys", "rotate", name, "--grace", "1h", "-o", "table")).out)
    assert [label for label, _ in rotated] == ["secret", "old secret stops", *KEY_DETAIL]
    assert rotated[0][1] != secret and rotated[0][1].startswith("gw-")
    assert dict(rotated)["id"] == values["id"]


def test_user_detail_leaves_holds_and_period_counters_to_json(cli: Cli) -> None:
    budget = unique("team")
    ok(cli("budgets", "create", "--name", budget, "--max", "10", "--period", "1d"))
    user_id, alias = unique("erin"), unique("Erin")
    rows = detail(
        ok(cli("users", "create", user_id, "--alias", alias, "--budget", budget, "-o", "table")).out
    )
    assert [label for label, _ in rows] == USER_DETAIL
    assert (dict(rows)["user id"], dict(rows)["alias"], dict(rows)["spend"]) == (
        user_id,
        alias,
        "0",
    )
    shown = ok(cli("users", "get", alias, "-o", "table")).out
    assert [label for label, _ in detail(shown)] == USER_DETAIL
    assert "reserved" not in shown and "current" not in shown
    as_json = ok(cli("users", "get", alias, "-o", "json")).json()
    assert as_json["user_id"] == user_id
    assert {
        "reserved",
        "current_requests",
        "current_tokens",
        "reserved_requests",
        "reserved_tokens",
    } <= as_json.keys()


def test_budgets_have_names_and_a_calendar_month_period(cli: Cli) -> None:
    name = unique("monthly")
    created = ok(cli("budgets", "create", "--name", name, "--max", "25", "--period", "1mo"))
    budget = created.json()
    budget_id = budget["budget_id"]
    assert (budget["name"], budget["reset_alignment"], budget["budget_duration_sec"]) == (
        name,
        "calendar_month",
        None,
    )
    assert ok(cli("budgets", "get", name)).json()["budget_id"] == budget_id
    rows = detail(ok(cli("budgets", "get", name, "-o", "table")).out)
    assert [label for label, _ in rows] == BUDGET_DETAIL
    assert (
        dict(rows)["period"],
        dict(rows)["max"],
        dict(rows)["request limit"],
        dict(rows)["clamp"],
    ) == ("calendar month", "25", "unlimited", "gateway default")
    listed = ok(cli("budgets", "list", "-o", "table", env={"COLUMNS": "250"})).out
    [line] = [line for line in listed.splitlines() if line.startswith(budget_id)]
    assert re.split(r"\s{2,}", line.strip())[:4] == [budget_id, name, "25", "calendar month"]

    # A user put on it spends from the 1st of this month to the 1st of the next, UTC.
    user_id = unique("frank")
    user = ok(cli("users", "create", user_id, "--budget", name)).json()
    assert user["budget_id"] == budget_id
    started, resets = utc(user["budget_started_at"]), utc(user["next_budget_reset_at"])
    assert started == started.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (started.year + started.month // 12, started.month % 12 + 1)
    assert resets == datetime(*following, 1, tzinfo=UTC)

    thirty = ok(cli("budgets", "update", name, "--period", "30d")).json()
    assert (thirty["budget_duration_sec"], thirty["reset_alignment"]) == (2592000, None)
    assert dict(detail(ok(cli("budgets", "get", name, "-o", "table")).out))["period"] == "30d"
    back = ok(cli("budgets", "update", name, "--period", "1MO", "--name", f"{name}-2")).json()
    assert (back["budget_duration_sec"], back["reset_alignment"], back["name"]) == (
        None,
        "calendar_month",
        f"{name}-2",
    )
    again = ok(cli("users", "get", user_id)).json()
    assert utc(again["next_budget_reset_at"]) == resets

    for wrong in (
        ["--period", "2mo"],
        ["--period", "1mo", "--reset-alignment", "calendar_week"],
        ["--period", "1month"],
    ):
        refused = cli("budgets", "create", "--name", name, *wrong)
        assert refused.code == ExitCode.USAGE and refused.out == "", refused.err
        assert "--period" in refused.err or "1mo" in refused.err
    assert name not in [b["name"] for b in ok(cli("budgets", "list")).json()]

    ok(cli("users", "update", user_id, "--no-budget"))
    deleted = ok(cli("budgets", "delete", f"{name}-2", "--yes")).json()
    assert deleted == [{"budget_id": budget_id, "status": "deleted"}]


def test_names_are_accepted_where_ids_are(cli: Cli) -> None:
    name = unique("ci")
    key_id = ok(cli("keys", "create", "--name", name)).json()["id"]
    renamed = ok(cli("keys", "update", name, "--name", f"{name}-2")).json()
    assert (renamed["id"], renamed["key_name"]) == (key_id, f"{name}-2")
    assert ok(cli("keys", "delete", f"{name}-2", "--yes", "-q")).out == f"{key_id}\n"
    gone = cli("keys", "get", key_id)
    assert gone.code == ExitCode.REFUSED and "no key has the id or name" in gone.err

    # Two keys of one name: the CLI names both and changes neither.
    twin = unique("twin")
    first = ok(cli("keys", "create", "--name", twin)).json()["id"]
    second = ok(cli("keys", "create", "--name", twin)).json()["id"]
    ambiguous = cli("keys", "revoke", twin, "--yes")
    assert ambiguous.code == ExitCode.USAGE and ambiguous.out == ""
    assert f"2 keys are named '{twin}' ({first}, {second}): give the id" in ambiguous.err
    assert {first, second} <= set(ok(cli("keys", "list", "-q")).out.split())

    missing = cli("users", "get", unique("nobody"))
    assert missing.code == ExitCode.REFUSED and "no user has the id or name" in missing.err
    gina = unique("gina")
    missing_budget = cli("users", "create", gina, "--budget", unique("nobudget"))
    assert missing_budget.code == ExitCode.REFUSED
    assert "no budget has the id or name" in missing_budget.err
    assert gina not in ok(cli("users", "list", "-q")).out.split()  # nothing written

    # An id wins over a name: another user's alias equal to this id does not make it ambiguous.
    user_id = unique("hana")
    ok(cli("users", "create", user_id))
    ok(cli("users", "create", unique("ida"), "--alias", user_id))
    assert ok(cli("users", "get", user_id)).json()["alias"] is None
    alias = unique("Jo")
    other = unique("jo")
    ok(cli("users", "create", other, "--alias", alias))
    assert ok(cli("users", "usage", alias)).json() == []
    assert ok(cli("users", "update", alias, "--blocked")).json()["user_id"] == other
    assert ok(cli("users", "delete", alias, "--yes")).json() == [
        {"user_id": other, "status": "deleted"}
    ]


def test_price_detail_shows_the_rates_that_apply(cli: Cli) -> None:
    model = f"fakeai:{unique('detail')}"
    rows = detail(
        ok(
            cli(
                "pricing",
                "set",
                model,
                "--input-price",
                "1.25",
                "--output-price",
                "10",
                "--tier",
                "200000:2.5:",
                "-o",
                "table",
            )
        ).out
    )
    assert [label for label, _ in rows] == [
        "model",
        "unit",
        "input /1M",
        "output /1M",
        "long-context tiers",
        "effective",
        "source",
        "updated",
    ]
    assert dict(rows)["long-context tiers"] == "above 200000: 2.5 / base"
    assert (dict(rows)["model"], dict(rows)["input /1M"], dict(rows)["output /1M"]) == (
        model,
        "1.25",
        "10",
    )
    shown = ok(cli("pricing", "get", model, "-o", "table")).out
    assert detail(shown) == rows
    as_json = ok(cli("pricing", "get", model, "-o", "json")).json()
    assert (
        as_json["price_per_image"] is None
        and as_json["pricing_tiers"][0]["min_input_tokens"] == 200001
    )

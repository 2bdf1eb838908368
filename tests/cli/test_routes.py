"""`otari routes list|get|set|delete|explain` against a real gateway (in-process and through
the installed executable); config routes are read-only."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from otari_cli.errors import ExitCode
from tests.cli.conftest import Cli, InProcess, Result


def ok(result: Result) -> Result:
    assert result.code == 0, f"exit {result.code}: {result.err}"
    return result


def test_routes_round_trip(cli: Cli) -> None:
    name = f"smart-{uuid.uuid4().hex[:8]}"
    created = ok(
        cli(
            "routes",
            "set",
            name,
            "--strategy",
            "loadbalance",
            "--target",
            "fakeai:big=3",
            "--target",
            "fakeai:small",
            "--retries",
            "2",
            "--timeout",
            "20",
            "--context-window-fallbacks",
        )
    ).json()
    assert created["targets"] == [
        {"model": "fakeai:big", "weight": 3},
        {"model": "fakeai:small", "weight": 1},
    ]
    assert (created["strategy"], created["retries"], created["timeout"]) == (
        "loadbalance",
        2,
        Decimal("20.0"),
    )
    assert created["context_window_fallbacks"] is True and created["source"] == "api"
    assert ok(cli("routes", "get", name)).json()["name"] == name
    assert name in ok(cli("routes", "list", "-q")).out.split()
    ok(cli("pricing", "set", "fakeai:big", "--input-price", "2.5", "--output-price", "10"))

    explained = ok(cli("-o", "json", "routes", "explain", name)).json()
    assert explained["route"] == name and explained["strategy"] == "loadbalance"
    big, small = explained["targets"]
    assert (big["model"], big["order"], big["share"], big["status"]) == (
        "fakeai:big",
        1,
        Decimal("1.0"),
        "eligible",
    )  # the other is skipped
    assert big["price"] == {
        "input_price_per_million": Decimal("2.5"),
        "output_price_per_million": Decimal("10"),
        "unit": "tokens",
    }
    assert (small["status"], small["reason"]) == ("skipped", "no price, and require_pricing is on")
    table = ok(cli("-o", "table", "routes", "explain", name, env={"COLUMNS": "250"})).out
    assert "fakeai:big" in table and "2.5 / 10" in table and "100%" in table
    assert "no price, and require_pricing is on" in table

    replaced = ok(cli("routes", "set", name, "--target", "fakeai:small")).json()
    assert replaced["strategy"] == "fallback" and replaced["retries"] == 0
    assert ok(cli("routes", "delete", name, "--yes")).json()[0]["status"] == "deleted"
    gone = cli("routes", "get", name)
    assert gone.code == ExitCode.REFUSED and "404" in gone.err


def test_a_bad_route_is_refused_with_the_field(cli: Cli) -> None:
    refused = cli("routes", "set", "fakeai:x", "--target", "fakeai:small")
    assert refused.code == ExitCode.REFUSED
    assert "name" in refused.err and "provider:model" in refused.err
    unknown = cli("routes", "set", "x", "--target", "nope:small")
    assert unknown.code == ExitCode.REFUSED and "unknown provider 'nope'" in unknown.err


@pytest.fixture
def config_cli(tmp_path: Path) -> Iterator[InProcess]:
    from tests.support.servers import MASTER_KEY, make_settings, running

    settings = make_settings(
        f"sqlite:///{tmp_path / 'otari.db'}",
        providers={
            "fakeai": {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "x"}
        },
        routes={"fixed": {"targets": ["fakeai:a", "fakeai:b"]}},
    )
    with running(settings) as url:
        yield InProcess(url, MASTER_KEY)


def test_config_routes_are_listed_read_only(config_cli: InProcess) -> None:
    listed = ok(config_cli("-o", "json", "routes")).json()
    assert [(r["name"], r["source"], r["read_only"]) for r in listed] == [("fixed", "config", True)]
    refused = config_cli("routes", "delete", "fixed", "--yes")
    assert refused.code == ExitCode.REFUSED and "read-only" in refused.err
    table = ok(config_cli("-o", "table", "routes", "list", env={"COLUMNS": "250"})).out
    assert "fixed" in table and "fakeai:a, fakeai:b" in table and "config" in table

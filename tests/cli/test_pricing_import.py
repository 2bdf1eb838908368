"""`otari pricing import` against a real gateway: dry run, confirmation, a no-op repeat."""

from __future__ import annotations

from decimal import Decimal

from otari_cli.errors import ExitCode
from tests.cli.conftest import InProcess

ARGS = ("pricing", "import", "--provider", "openai", "--model", "gpt-4o-mini")


def test_import_dry_run_then_write_then_nothing_left(inprocess_cli: InProcess) -> None:
    planned = inprocess_cli(*ARGS, "--dry-run")
    assert planned.code == 0, planned.err
    (row,) = planned.json()
    assert (row["model_key"], row["action"]) == ("openai:gpt-4o-mini", "add")
    assert (row["input_price_per_million"], row["output_price_per_million"]) == (
        Decimal("0.15"),
        Decimal("0.6"),
    )
    assert "dry run" in planned.err
    assert inprocess_cli("pricing", "get", "openai:gpt-4o-mini").code == ExitCode.REFUSED

    refused = inprocess_cli(*ARGS)  # no terminal and no --yes: refuses, writes nothing
    assert refused.code != 0 and "--yes" in refused.err
    assert inprocess_cli("pricing", "get", "openai:gpt-4o-mini").code == ExitCode.REFUSED

    done = inprocess_cli(*ARGS, "--yes")
    assert done.code == 0 and "wrote 1 price(s)" in done.err, done.err
    price = inprocess_cli("pricing", "get", "openai:gpt-4o-mini").json()
    assert price["input_price_per_million"] == Decimal("0.15")

    again = inprocess_cli(*ARGS, "--yes")
    assert again.code == 0 and again.json() == []
    assert "0 price(s) to write, 1 unchanged" in again.err

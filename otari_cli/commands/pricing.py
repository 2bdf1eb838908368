"""`otari pricing`: what each model costs per million tokens, over time."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

import typer

from otari_cli import params
from otari_cli.client import path
from otari_cli.errors import UsageError
from otari_cli.output import Column, cell, when
from otari_cli.runtime import runtime

app = typer.Typer(help="Model pricing (list is the default).")
ID = "model_key"

COLUMNS = [
    Column("MODEL", ID),
    Column("INPUT /1M", "input_price_per_million"),
    Column("OUTPUT /1M", "output_price_per_million"),
    Column("EFFECTIVE", "effective_at", when),
    Column("UPDATED", "updated_at", when),
]


def _tiers(value: object) -> str:
    """Long-context tiers as `above N: input / output` (prices per million tokens)."""
    if not isinstance(value, list) or not value:
        return "-"
    parts = []
    for tier in value:
        if not isinstance(tier, dict):
            return cell(value)
        prices = " / ".join(
            cell(tier.get(f"{side}_price_per_million", "base")) for side in ("input", "output")
        )
        parts.append(f"above {tier.get('above_input_tokens')}: {prices}")
    return "; ".join(parts)


# A price's detail view: the rates that apply, then when. The tiers' second spelling
# (pricing_tiers, for the otari SDK) and the row's creation time stay in -o json.
DETAIL = [
    Column("model", ID),
    Column("unit", "unit"),
    Column("input /1M", "input_price_per_million"),
    Column("output /1M", "output_price_per_million"),
    Column("cache read /1M", "cache_read_price_per_million", optional=True),
    Column("cache write /1M", "cache_write_price_per_million", optional=True),
    Column("cache write 1h /1M", "cache_write_1h_price_per_million", optional=True),
    Column("per image", "price_per_image", optional=True),
    Column("per audio second", "price_per_audio_second", optional=True),
    Column("per 1M characters", "price_per_million_characters", optional=True),
    Column("per request", "price_per_request", optional=True),
    Column("long-context tiers", "tiers", _tiers, optional=True),
    Column("effective", "effective_at", when),
    Column("source", "origin"),
    Column("updated", "updated_at", when),
]

ModelKey = Annotated[str, typer.Argument(help="provider:model, e.g. openai:gpt-4o-mini.")]


def _price(flag: str, what: str) -> object:
    return typer.Option(flag, parser=params.money, help=f"Price per million {what} tokens.")


def tier(text: str) -> dict[str, object]:
    """A long-context tier from `ABOVE:INPUT:OUTPUT` (prompt tokens, then two prices per
    million tokens; an empty price keeps the base one), e.g. `200000:2.5:15`."""
    parts = text.split(":")
    if len(parts) != 3 or not parts[0].isdigit():
        raise typer.BadParameter(
            f"{text!r}: expected ABOVE_INPUT_TOKENS:INPUT:OUTPUT, e.g. 200000:2.5:15"
        )
    result: dict[str, object] = {"above_input_tokens": int(parts[0])}
    for key, value in (
        ("input_price_per_million", parts[1]),
        ("output_price_per_million", parts[2]),
    ):
        if value:
            result[key] = params.money(value)
    return result


@app.callback(invoke_without_command=True)
def pricing(ctx: typer.Context) -> None:
    """Manage model pricing."""
    if ctx.invoked_subcommand is None:
        list_pricing(ctx)


@app.command("list")
def list_pricing(ctx: typer.Context, limit: params.Limit = None) -> None:
    """List the pricing entries."""
    rt = runtime(ctx)
    rt.output.items(rt.gateway.pages("/v1/pricing", limit=limit), COLUMNS, ID)


@app.command("get")
def get_pricing(
    ctx: typer.Context,
    model_key: ModelKey,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", parser=params.past, help="The price in effect at this time."),
    ] = None,
) -> None:
    """Show the price in effect for a model (now, or --as-of a time)."""
    rt = runtime(ctx)
    rt.output.item(
        rt.gateway.get(path("v1", "pricing", model_key), {"as_of": as_of}), ID, fields=DETAIL
    )


@app.command("set")
def set_pricing(
    ctx: typer.Context,
    model_key: ModelKey,
    input_price: Annotated[Decimal, _price("--input-price", "input")],
    output_price: Annotated[Decimal, _price("--output-price", "output")],
    effective_at: Annotated[
        str | None,
        typer.Option(
            "--effective-at",
            parser=params.future,
            help="From when the price applies (default: now): ISO time or a duration from now.",
        ),
    ] = None,
    tiers: Annotated[
        list[str] | None,
        typer.Option(
            "--tier",
            metavar="ABOVE:INPUT:OUTPUT",
            help="Long-context prices above this many prompt tokens, e.g. 200000:2.5:15 "
            "(repeatable).",
        ),
    ] = None,
) -> None:
    """Set a model's price from now (or --effective-at); earlier prices stay in history."""
    rt = runtime(ctx)
    body: dict[str, object] = {
        "model_key": model_key,
        "input_price_per_million": input_price,
        "output_price_per_million": output_price,
    }
    if effective_at:
        body["effective_at"] = effective_at
    if tiers:
        body["tiers"] = [tier(text) for text in tiers]
    rt.output.item(rt.gateway.post("/v1/pricing", body), ID, fields=DETAIL)


IMPORT_COLUMNS = [
    Column("MODEL", ID),
    Column("ACTION", "action"),
    Column("INPUT /1M", "input_price_per_million"),
    Column("OUTPUT /1M", "output_price_per_million"),
    Column("CACHE READ /1M", "cache_read_price_per_million"),
    Column("CACHE WRITE /1M", "cache_write_price_per_million"),
    Column("NOW IN/OUT", "now"),
]


def _import_rows(result: dict[str, object]) -> list[dict[str, object]]:
    changes = result["changes"]
    assert isinstance(changes, list)
    rows = []
    for change in changes:
        if change["action"] == "unchanged":
            continue
        current = change.get("current")
        now = (
            f"{current['input_price_per_million']} / {current['output_price_per_million']}"
            if current
            else None
        )
        rows.append({**{k: v for k, v in change.items() if k != "current"}, "now": now})
    return rows


@app.command("import")
def import_pricing(
    ctx: typer.Context,
    provider: Annotated[
        list[str] | None,
        typer.Option("--provider", help="Only this provider (repeatable; default: all mapped)."),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Only models matching this glob, e.g. 'gpt-4o*'.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would change; write nothing.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Also replace operator-set prices that differ.")
    ] = False,
    yes: params.Yes = False,
) -> None:
    """Import published prices from genai-prices (effective now; history kept).

    Shows what would be added or changed first. Prices you set yourself are kept
    ("kept") unless --overwrite; importing again when nothing changed writes nothing.
    """
    rt = runtime(ctx)
    body: dict[str, object] = {
        "providers": provider or None,
        "model": model,
        "overwrite": overwrite,
        "dry_run": True,
    }
    planned = rt.gateway.post("/v1/pricing/import", body)
    rows = _import_rows(planned)
    writes = sum(1 for row in rows if row["action"] in ("add", "change"))
    unchanged = len(planned["changes"]) - len(rows)
    if dry_run or not writes:
        rt.output.items(rows, IMPORT_COLUMNS, ID)
        rt.output.message(
            f"{writes} price(s) to write, {unchanged} unchanged (genai-prices "
            f"{planned['source_version']}){'; dry run' if dry_run else ''}"
        )
        return
    rt.output.items(rows, IMPORT_COLUMNS, ID)
    rt.confirm(f"Write {writes} price(s) from genai-prices {planned['source_version']}", yes)
    done = rt.gateway.post("/v1/pricing/import", {**body, "dry_run": False})
    rt.output.message(f"wrote {done['written']} price(s), effective {done['effective_at']}")


@app.command("history")
def pricing_history(ctx: typer.Context, model_key: ModelKey) -> None:
    """Every price a model has had."""
    rt = runtime(ctx)
    rt.output.items(rt.gateway.get(path("v1", "pricing", model_key, "history")), COLUMNS, ID)


@app.command("delete")
def delete_pricing(
    ctx: typer.Context,
    model_key: ModelKey,
    effective_at: Annotated[
        str | None,
        typer.Option(
            "--effective-at",
            parser=params.past,
            help="Delete only the entry effective at this time.",
        ),
    ] = None,
    yes: params.Yes = False,
) -> None:
    """Delete a model's pricing (asks first on a terminal)."""
    rt = runtime(ctx)
    which = f" entry effective at {effective_at}" if effective_at else ""
    rt.confirm(f"Delete the pricing{which} of {model_key}", yes)
    rt.gateway.delete(path("v1", "pricing", model_key), {"effective_at": effective_at})
    rt.output.items(
        [{ID: model_key, "status": "deleted"}],
        [Column("MODEL", ID), Column("STATUS", "status")],
        ID,
    )


@app.command(
    "create",
    hidden=True,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
@app.command(
    "update",
    hidden=True,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def create_or_update(ctx: typer.Context) -> None:
    """Prices are set, never edited in place: point to `otari pricing set`."""
    raise UsageError(
        f"there is no `otari pricing {ctx.info_name}`: a price is set with "
        "`otari pricing set MODEL --input-price X --output-price Y` (it takes effect now, or at "
        "--effective-at, and keeps the history)"
    )

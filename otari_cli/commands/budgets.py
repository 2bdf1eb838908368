"""`otari budgets`: spending limits that users are put on."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

import typer

from otari_cli import params, refs
from otari_cli.client import path
from otari_cli.completion import BudgetId, BudgetIds
from otari_cli.durations import format_duration, parse_duration
from otari_cli.errors import UsageError
from otari_cli.output import Column, cell, limit, when
from otari_cli.runtime import runtime

app = typer.Typer(help="Budgets (list is the default).")
ID = "budget_id"
MONTH = "1mo"
CALENDAR_NAMES = {
    "calendar_day": "calendar day",
    "calendar_week": "calendar week",
    "calendar_month": "calendar month",
}


def period(budget: Mapping[str, Any]) -> str:
    """How often a budget resets: `30d`, `calendar month`, or `never`."""
    alignment = budget.get("reset_alignment")
    if alignment:
        return CALENDAR_NAMES.get(str(alignment), str(alignment))
    duration = budget.get("budget_duration_sec")
    if duration is None:
        return "never"
    return format_duration(duration) if isinstance(duration, int) else cell(duration)


def _clamp(value: object) -> str:
    return "gateway default" if value is None else cell(value)


def _alerts(value: object) -> str:
    return "gateway default" if value is None else cell(value)


COLUMNS = [
    Column("BUDGET ID", ID),
    Column("NAME", "name"),
    Column("MAX", "max_budget"),
    Column("PERIOD", "budget_duration_sec", of=period),
    Column("REQUESTS", "request_limit"),
    Column("TOKENS", "token_limit"),
    Column("USERS", "user_count"),
    Column("CREATED", "created_at", when),
]
# The detail view: the limits and who draws on them. The summed spend and holds of its
# users (each in its own period) and the organisation id stay in -o json.
DETAIL = [
    Column("budget id", ID),
    Column("name", "name"),
    Column("max", "max_budget", limit),
    Column("period", "budget_duration_sec", of=period),
    Column("request limit", "request_limit", limit),
    Column("token limit", "token_limit", limit),
    Column("clamp", "budget_clamp", _clamp),
    Column("alert thresholds", "alert_thresholds", _alerts),
    Column("users", "user_count"),
    Column("created", "created_at", when),
    Column("updated", "updated_at", when),
]

Max = Annotated[
    Decimal | None,
    typer.Option("--max", parser=params.money, help="Spending limit per period, e.g. 25.00."),
]
Name = Annotated[
    str | None,
    typer.Option("--name", help="A name for people to read (accepted where the id is)."),
]
Period = Annotated[
    str | None,
    typer.Option(
        "--period",
        metavar="DURATION",
        help="How often the spend resets: 30d, 1w, 12h, 3600s (counted from when a user is "
        "put on the budget), or 1mo: each calendar month, from the 1st at 00:00 UTC.",
    ),
]


def period_fields(text: str | None, alignment: str | None) -> dict[str, object]:
    """The budget fields a --period sets: `budget_duration_sec`, or for `1mo` the calendar
    month (`reset_alignment`), which no fixed number of seconds is.

    Raises UsageError for a bad duration, a number of months other than one, or `1mo`
    together with --reset-alignment.
    """
    if text is None:
        return {}
    spec = text.strip().lower()
    if spec.endswith("mo") and spec[:-2].isdigit():
        if spec != MONTH:
            raise UsageError(
                f"invalid --period {text!r}: a monthly budget resets each "
                "calendar month, --period 1mo (months differ in length, so "
                "2mo and up have no fixed meaning)"
            )
        if alignment is not None:
            raise UsageError("give --period 1mo or --reset-alignment, not both")
        return {"reset_alignment": "calendar_month"}
    try:
        return {"budget_duration_sec": parse_duration(spec)}
    except UsageError as exc:
        raise UsageError(f"invalid --period: {exc.message}; or 1mo for a calendar month") from None


class Calendar(StrEnum):
    """UTC calendar periods a budget can reset on."""

    DAY = "calendar_day"
    WEEK = "calendar_week"
    MONTH = "calendar_month"


Alignment = Annotated[
    Calendar | None,
    typer.Option(
        "--reset-alignment",
        help="Reset on a UTC calendar day, ISO week (Monday) or month (the 1st) instead of "
        "every --period.",
    ),
]
RequestLimit = Annotated[
    int | None,
    typer.Option("--request-limit", min=0, help="Requests allowed per period (402 beyond)."),
]
TokenLimit = Annotated[
    int | None,
    typer.Option(
        "--token-limit", min=0, help="Tokens (prompt + completion) allowed per period (402 beyond)."
    ),
]
Clamp = Annotated[
    bool | None,
    typer.Option(
        "--clamp/--no-clamp",
        help="Lower a request's max_tokens to what fits instead of refusing it (default: the "
        "gateway's budget_clamp setting).",
    ),
]


@app.callback(invoke_without_command=True)
def budgets(ctx: typer.Context) -> None:
    """Manage budgets."""
    if ctx.invoked_subcommand is None:
        list_budgets(ctx)


@app.command("list")
def list_budgets(ctx: typer.Context, limit: params.Limit = None) -> None:
    """List budgets."""
    rt = runtime(ctx)
    rt.output.items(rt.gateway.pages("/v1/budgets", limit=limit), COLUMNS, ID)


@app.command("get")
def get_budget(ctx: typer.Context, budget_id: BudgetId) -> None:
    """Show one budget (by id or name)."""
    rt = runtime(ctx)
    _, shown = refs.act(
        rt.gateway,
        refs.BUDGET,
        budget_id,
        lambda found: rt.gateway.get(path("v1", "budgets", found)),
    )
    rt.output.item(shown, ID, fields=DETAIL)


@app.command("create")
def create_budget(
    ctx: typer.Context,
    name: Name = None,
    max_budget: Max = None,
    period: Period = None,
    reset_alignment: Alignment = None,
    request_limit: RequestLimit = None,
    token_limit: TokenLimit = None,
    clamp: Clamp = None,
) -> None:
    """Create a budget (without --max it only tracks spend; without --period or
    --reset-alignment it never resets)."""
    rt = runtime(ctx)
    body = {
        "name": name,
        "max_budget": max_budget,
        "reset_alignment": reset_alignment,
        "request_limit": request_limit,
        "token_limit": token_limit,
        "budget_clamp": clamp,
        **period_fields(period, reset_alignment),
    }
    created = rt.gateway.post("/v1/budgets", {k: v for k, v in body.items() if v is not None})
    rt.output.item(created, ID, fields=DETAIL)


@app.command("update")
def update_budget(
    ctx: typer.Context,
    budget_id: BudgetId,
    name: Name = None,
    max_budget: Max = None,
    period: Period = None,
    reset_alignment: Alignment = None,
    request_limit: RequestLimit = None,
    token_limit: TokenLimit = None,
    clamp: Clamp = None,
) -> None:
    """Change a budget's name, limits or period, by id or name (a --period in seconds
    replaces a calendar alignment, and the other way round)."""
    rt = runtime(ctx)
    fields = {
        "name": name,
        "max_budget": max_budget,
        "reset_alignment": reset_alignment,
        "request_limit": request_limit,
        "token_limit": token_limit,
        "budget_clamp": clamp,
        **period_fields(period, reset_alignment),
    }
    body = params.changes((), **fields)
    _, changed = refs.act(
        rt.gateway,
        refs.BUDGET,
        budget_id,
        lambda found: rt.gateway.patch(path("v1", "budgets", found), body),
    )
    rt.output.item(changed, ID, fields=DETAIL)


@app.command("delete")
def delete_budgets(ctx: typer.Context, budget_ids: BudgetIds, yes: params.Yes = False) -> None:
    """Delete budgets, by id or name (asks first on a terminal)."""
    rt = runtime(ctx)
    rt.confirm(f"Delete {len(budget_ids)} budget(s): {', '.join(budget_ids)}", yes)
    deleted = [
        refs.act(
            rt.gateway,
            refs.BUDGET,
            budget_id,
            lambda found: rt.gateway.delete(path("v1", "budgets", found)),
        )[0]
        for budget_id in budget_ids
    ]
    rt.output.items(
        [{ID: budget_id, "status": "deleted"} for budget_id in deleted],
        [Column("BUDGET ID", ID), Column("STATUS", "status")],
        ID,
    )

"""`otari budgets`: spending limits that users are put on."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Annotated

import typer

from otari_cli import params
from otari_cli.client import path
from otari_cli.durations import format_duration
from otari_cli.output import Column, cell, when
from otari_cli.runtime import runtime

app = typer.Typer(help="Budgets (list is the default).")
ID = "budget_id"


def period(value: object) -> str:
    """budget_duration_sec as a human duration."""
    return format_duration(value) if isinstance(value, int) else cell(value)


COLUMNS = [
    Column("BUDGET ID", ID),
    Column("MAX", "max_budget"),
    Column("PERIOD", "budget_duration_sec", period),
    Column("ALIGNED", "reset_alignment"),
    Column("REQUESTS", "request_limit"),
    Column("TOKENS", "token_limit"),
    Column("CREATED", "created_at", when),
    Column("UPDATED", "updated_at", when),
]
SHOWS = {c.field: c.show for c in COLUMNS}

Max = Annotated[
    Decimal | None,
    typer.Option("--max", parser=params.money, help="Spending limit per period, e.g. 25.00."),
]
Period = Annotated[
    int | None,
    typer.Option(
        "--period",
        parser=params.duration,
        metavar="DURATION",
        help="How often the spend resets: 30d, 1w, 12h, 3600s.",
    ),
]



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
    typer.Option("--token-limit", min=0,
                 help="Tokens (prompt + completion) allowed per period (402 beyond)."),
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
def get_budget(ctx: typer.Context, budget_id: str) -> None:
    """Show one budget."""
    rt = runtime(ctx)
    rt.output.item(rt.gateway.get(path("v1", "budgets", budget_id)), ID, SHOWS)


@app.command("create")
def create_budget(
    ctx: typer.Context,
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
    body = {"max_budget": max_budget, "budget_duration_sec": period,
            "reset_alignment": reset_alignment, "request_limit": request_limit,
            "token_limit": token_limit, "budget_clamp": clamp}
    created = rt.gateway.post("/v1/budgets", {k: v for k, v in body.items() if v is not None})
    rt.output.item(created, ID, SHOWS)


@app.command("update")
def update_budget(
    ctx: typer.Context,
    budget_id: str,
    max_budget: Max = None,
    period: Period = None,
    reset_alignment: Alignment = None,
    request_limit: RequestLimit = None,
    token_limit: TokenLimit = None,
    clamp: Clamp = None,
) -> None:
    """Change a budget's limits or period (a --period replaces a calendar alignment, and
    the other way round)."""
    rt = runtime(ctx)
    body = params.changes(max_budget=max_budget, budget_duration_sec=period,
                          reset_alignment=reset_alignment, request_limit=request_limit,
                          token_limit=token_limit, budget_clamp=clamp)
    rt.output.item(rt.gateway.patch(path("v1", "budgets", budget_id), body), ID, SHOWS)


@app.command("delete")
def delete_budgets(ctx: typer.Context, budget_ids: list[str], yes: params.Yes = False) -> None:
    """Delete budgets (asks first on a terminal)."""
    rt = runtime(ctx)
    rt.confirm(f"Delete {len(budget_ids)} budget(s): {', '.join(budget_ids)}", yes)
    for budget_id in budget_ids:
        rt.gateway.delete(path("v1", "budgets", budget_id))
    rt.output.items(
        [{ID: budget_id, "status": "deleted"} for budget_id in budget_ids],
        [Column("BUDGET ID", ID), Column("STATUS", "status")],
        ID,
    )

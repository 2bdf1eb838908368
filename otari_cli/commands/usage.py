"""`otari usage`: the usage log, filtered and streamed; `otari usage prune` rolls old rows up."""

from __future__ import annotations

from typing import Annotated

import typer

from otari_cli import params
from otari_cli.output import Column, when
from otari_cli.runtime import runtime

app = typer.Typer()

PAGE_MAX = 1000  # the gateway's largest page
PRUNE_TIMEOUT = 3600.0  # seconds: pruning a large table runs batch after batch

COLUMNS = [
    Column("TIME", "timestamp", when),
    Column("ID", "id"),
    Column("USER", "user_id"),
    Column("MODEL", "model"),
    Column("ENDPOINT", "endpoint"),
    Column("IN", "prompt_tokens"),
    Column("OUT", "completion_tokens"),
    Column("COST", "cost"),
    Column("STATUS", "status"),
]

Since = Annotated[
    str | None,
    typer.Option(
        "--since",
        parser=params.past,
        help="From this time: ISO date/datetime, or a duration ago (7d).",
    ),
]
Until = Annotated[
    str | None,
    typer.Option(
        "--until", parser=params.past, help="Until this time: ISO date/datetime or a duration ago."
    ),
]


@app.callback(invoke_without_command=True)
def usage(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option("--user", help="Only this user's usage.")] = None,
    since: Since = None,
    until: Until = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="At most this many entries, newest first.")
    ] = 100,
    every: Annotated[
        bool, typer.Option("--all", help="Every entry, written as it arrives (-o jsonl, csv).")
    ] = False,
) -> None:
    """Show the usage log, newest first."""
    if ctx.invoked_subcommand is not None:
        return
    rt = runtime(ctx)
    filters = {"user_id": user, "start_date": since, "end_date": until}
    rows = rt.gateway.walk(
        "/v1/usage",
        filters,
        page_size=PAGE_MAX if every else min(limit, PAGE_MAX),
        limit=None if every else limit,
    )
    rt.output.stream(rows, COLUMNS)


@app.command("prune")
def prune(
    ctx: typer.Context,
    before: Annotated[str, typer.Option(
        "--before", parser=params.past,
        help="Roll up and delete rows before this day (midnight UTC): ISO date or 90d.")],
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Only count the rows and cost that would be rolled up.")] = False,
) -> None:
    """Move old usage rows into daily roll-ups (summaries stay exact) and delete them."""
    rt = runtime(ctx)
    result = rt.gateway.post("/v1/usage/prune", {"before": before, "dry_run": dry_run},
                             timeout=max(rt.options.timeout, PRUNE_TIMEOUT))
    rt.output.item(result, id_field="rows")

"""`otari usage`: the usage log, filtered by user and time."""

from __future__ import annotations

from typing import Annotated

import typer

from otari_cli import params
from otari_cli.output import Column, when
from otari_cli.runtime import runtime

app = typer.Typer()

PAGE_MAX = 1000  # the gateway's largest page

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


@app.command("usage")
def usage(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option("--user", help="Only this user's usage.")] = None,
    since: Since = None,
    until: Until = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="At most this many entries, newest first.")
    ] = 100,
    every: Annotated[bool, typer.Option("--all", help="Page through every entry.")] = False,
) -> None:
    """Show the usage log, newest first."""
    rt = runtime(ctx)
    filters = {"user_id": user, "start_date": since, "end_date": until}
    rows = rt.gateway.pages(
        "/v1/usage",
        filters,
        page_size=PAGE_MAX if every else min(limit, PAGE_MAX),
        limit=None if every else limit,
    )
    rt.output.items(rows, COLUMNS)

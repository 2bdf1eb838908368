"""`otari users`: the people or services that keys spend for."""

from __future__ import annotations

from typing import Annotated

import typer

from otari_cli import params
from otari_cli.client import path
from otari_cli.commands.usage import COLUMNS as USAGE_COLUMNS
from otari_cli.completion import UserId, UserIds
from otari_cli.errors import UsageError
from otari_cli.output import Column, when
from otari_cli.runtime import runtime

app = typer.Typer(help="Users (list is the default).")

COLUMNS = [
    Column("USER ID", "user_id"),
    Column("ALIAS", "alias"),
    Column("SPEND", "spend"),
    Column("BUDGET", "budget_id"),
    Column("BLOCKED", "blocked"),
    Column("NEXT RESET", "next_budget_reset_at", when),
    Column("CREATED", "created_at", when),
]
SHOWS = {c.field: c.show for c in COLUMNS}
ID = "user_id"

Alias = Annotated[str | None, typer.Option("--alias", help="A name for people to read.")]
Budget = Annotated[str | None, typer.Option("--budget", help="The budget id to spend against.")]


@app.callback(invoke_without_command=True)
def users(ctx: typer.Context) -> None:
    """Manage users."""
    if ctx.invoked_subcommand is None:
        list_users(ctx)


@app.command("list")
def list_users(ctx: typer.Context, limit: params.Limit = None) -> None:
    """List users."""
    rt = runtime(ctx)
    rt.output.items(rt.gateway.pages("/v1/users", limit=limit), COLUMNS, ID)


@app.command("get")
def get_user(ctx: typer.Context, user_id: UserId) -> None:
    """Show one user."""
    rt = runtime(ctx)
    rt.output.item(rt.gateway.get(path("v1", "users", user_id)), ID, SHOWS)


@app.command("create")
def create_user(
    ctx: typer.Context,
    user_id: Annotated[str, typer.Argument(help="The new user's id.")],
    alias: Alias = None,
    budget: Budget = None,
    blocked: Annotated[bool, typer.Option("--blocked", help="Create it blocked.")] = False,
    metadata: params.Metadata = None,
    rpm_limit: params.RpmLimit = None,
    tpm_limit: params.TpmLimit = None,
) -> None:
    """Create a user."""
    rt = runtime(ctx)
    body = {
        "user_id": user_id,
        "alias": alias,
        "budget_id": budget,
        "blocked": blocked,
        "metadata": params.metadata(metadata),
        "rpm_limit": rpm_limit,
        "tpm_limit": tpm_limit,
    }
    created = rt.gateway.post("/v1/users", {k: v for k, v in body.items() if v is not None})
    rt.output.item(created, ID, SHOWS)


@app.command("update")
def update_user(
    ctx: typer.Context,
    user_id: UserId,
    alias: Alias = None,
    budget: Budget = None,
    blocked: Annotated[
        bool | None, typer.Option("--blocked/--unblocked", help="Block or unblock the user.")
    ] = None,
    metadata: params.Metadata = None,
    no_budget: Annotated[
        bool, typer.Option("--no-budget", help="Take the user off its budget.")
    ] = False,
    rpm_limit: params.RpmLimit = None,
    tpm_limit: params.TpmLimit = None,
    no_limits: params.NoLimits = False,
) -> None:
    """Change a user's alias, budget, blocked state, metadata or rate limits."""
    rt = runtime(ctx)
    if no_budget and budget:
        raise UsageError("give --budget or --no-budget, not both")
    if no_limits and (rpm_limit or tpm_limit):
        raise UsageError("give --rpm-limit/--tpm-limit or --no-limits, not both")
    body = params.changes(
        (["budget_id"] if no_budget else []) + (["rpm_limit", "tpm_limit"] if no_limits else []),
        alias=alias,
        budget_id=budget,
        blocked=blocked,
        metadata=params.metadata(metadata) if metadata else None,
        rpm_limit=rpm_limit,
        tpm_limit=tpm_limit,
    )
    rt.output.item(rt.gateway.patch(path("v1", "users", user_id), body), ID, SHOWS)


@app.command("delete")
def delete_users(ctx: typer.Context, user_ids: UserIds, yes: params.Yes = False) -> None:
    """Delete users and deactivate their keys (asks first on a terminal)."""
    rt = runtime(ctx)
    rt.confirm(
        f"Delete {len(user_ids)} user(s) and deactivate their keys: {', '.join(user_ids)}", yes
    )
    for user_id in user_ids:
        rt.gateway.delete(path("v1", "users", user_id))
    rt.output.items(
        [{ID: user_id, "status": "deleted"} for user_id in user_ids],
        [Column("USER ID", ID), Column("STATUS", "status")],
        ID,
    )


@app.command("usage")
def user_usage(ctx: typer.Context, user_id: UserId, limit: params.Limit = None) -> None:
    """A user's usage history, newest first."""
    rt = runtime(ctx)
    rows = rt.gateway.walk(path("v1", "users", user_id, "usage"), page_size=1000, limit=limit)
    rt.output.stream(rows, USAGE_COLUMNS)

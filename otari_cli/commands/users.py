"""`otari users`: the people or services that keys spend for."""

from __future__ import annotations

from typing import Annotated

import typer

from otari_cli import params, refs
from otari_cli.client import path
from otari_cli.commands.usage import COLUMNS as USAGE_COLUMNS
from otari_cli.completion import UserId, UserIds, budget_ids
from otari_cli.errors import UsageError
from otari_cli.output import Column, cell, limit, when
from otari_cli.runtime import Runtime, runtime

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
ID = "user_id"


def _models(value: object) -> str:
    return "any" if value is None else cell(value)


# A user's detail view: what an operator reads first. Holds in flight (reserved) and the
# period's request and token counters stay in -o json.
DETAIL = [
    Column("user id", "user_id"),
    Column("alias", "alias"),
    Column("blocked", "blocked"),
    Column("budget", "budget_id"),
    Column("spend", "spend"),
    Column("period started", "budget_started_at", when),
    Column("next reset", "next_budget_reset_at", when),
    Column("rpm limit", "rpm_limit", limit),
    Column("tpm limit", "tpm_limit", limit),
    Column("models", "allowed_models", _models),
    Column("metadata", "metadata", optional=True),
    Column("created", "created_at", when),
    Column("updated", "updated_at", when),
]

Alias = Annotated[str | None, typer.Option("--alias", help="A name for people to read.")]
Budget = Annotated[
    str | None,
    typer.Option(
        "--budget", help="The budget to spend against (id or name).", autocompletion=budget_ids
    ),
]


def _budget(rt: Runtime, budget: str | None) -> str | None:
    return None if budget is None else refs.resolve(rt.gateway, refs.BUDGET, budget)


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
    """Show one user (by id or alias)."""
    rt = runtime(ctx)
    _, shown = refs.act(
        rt.gateway, refs.USER, user_id, lambda found: rt.gateway.get(path("v1", "users", found))
    )
    rt.output.item(shown, ID, fields=DETAIL)


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
        "budget_id": _budget(rt, budget),
        "blocked": blocked,
        "metadata": params.metadata(metadata),
        "rpm_limit": rpm_limit,
        "tpm_limit": tpm_limit,
    }
    created = rt.gateway.post("/v1/users", {k: v for k, v in body.items() if v is not None})
    rt.output.item(created, ID, fields=DETAIL)


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
        budget_id=_budget(rt, budget),
        blocked=blocked,
        metadata=params.metadata(metadata) if metadata else None,
        rpm_limit=rpm_limit,
        tpm_limit=tpm_limit,
    )
    _, changed = refs.act(
        rt.gateway,
        refs.USER,
        user_id,
        lambda found: rt.gateway.patch(path("v1", "users", found), body),
    )
    rt.output.item(changed, ID, fields=DETAIL)


@app.command("delete")
def delete_users(ctx: typer.Context, user_ids: UserIds, yes: params.Yes = False) -> None:
    """Delete users, by id or alias, and deactivate their keys (asks first on a terminal)."""
    rt = runtime(ctx)
    rt.confirm(
        f"Delete {len(user_ids)} user(s) and deactivate their keys: {', '.join(user_ids)}", yes
    )
    deleted = [
        refs.act(
            rt.gateway,
            refs.USER,
            user_id,
            lambda found: rt.gateway.delete(path("v1", "users", found)),
        )[0]
        for user_id in user_ids
    ]
    rt.output.items(
        [{ID: user_id, "status": "deleted"} for user_id in deleted],
        [Column("USER ID", ID), Column("STATUS", "status")],
        ID,
    )


@app.command("usage")
def user_usage(ctx: typer.Context, user_id: UserId, limit: params.Limit = None) -> None:
    """A user's usage history (by id or alias), newest first."""
    rt = runtime(ctx)
    user_id = refs.resolve(rt.gateway, refs.USER, user_id)
    rows = rt.gateway.walk(path("v1", "users", user_id, "usage"), page_size=1000, limit=limit)
    rt.output.stream(rows, USAGE_COLUMNS)

"""`otari keys`: API keys for the gateway's clients."""

from __future__ import annotations

from typing import Annotated

import typer

from otari_cli import params
from otari_cli.client import path
from otari_cli.completion import KeyId, KeyIds
from otari_cli.durations import parse_duration
from otari_cli.errors import UsageError
from otari_cli.output import Column, when
from otari_cli.runtime import runtime

app = typer.Typer(help="API keys (list is the default).")

COLUMNS = [
    Column("ID", "id"),
    Column("NAME", "key_name"),
    Column("PREFIX", "key_prefix"),
    Column("USER", "user_id"),
    Column("ACTIVE", "is_active"),
    Column("EXPIRES", "expires_at", when),
    Column("LAST USED", "last_used_at", when),
    Column("CREATED", "created_at", when),
]
SHOWS = {c.field: c.show for c in COLUMNS}

Expires = Annotated[
    str | None,
    typer.Option(
        "--expires",
        parser=params.future,
        help="Expiry: a duration from now (30d, 12h) or an ISO date/datetime.",
    ),
]


@app.callback(invoke_without_command=True)
def keys(ctx: typer.Context) -> None:
    """Manage API keys."""
    if ctx.invoked_subcommand is None:
        list_keys(ctx)


@app.command("list")
def list_keys(ctx: typer.Context, limit: params.Limit = None) -> None:
    """List API keys."""
    rt = runtime(ctx)
    rt.output.items(rt.gateway.pages("/v1/keys", limit=limit), COLUMNS)


@app.command("get")
def get_key(ctx: typer.Context, key_id: KeyId) -> None:
    """Show one API key."""
    rt = runtime(ctx)
    rt.output.item(rt.gateway.get(path("v1", "keys", key_id)), shows=SHOWS)


@app.command("create")
def create_key(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option("--name", help="A name for the key.")] = None,
    user: Annotated[str | None, typer.Option("--user", help="The user the key spends for.")] = None,
    expires: Expires = None,
    metadata: params.Metadata = None,
    rpm_limit: params.RpmLimit = None,
    tpm_limit: params.TpmLimit = None,
) -> None:
    """Create an API key and print its secret (shown this once only; -q prints only the secret)."""
    rt = runtime(ctx)
    body = {"key_name": name, "user_id": user, "expires_at": expires,
            "rpm_limit": rpm_limit, "tpm_limit": tpm_limit}
    body = {k: v for k, v in body.items() if v is not None}
    created = rt.gateway.post("/v1/keys", {**body, "metadata": params.metadata(metadata)})
    # -q prints the secret: the one thing a script needs and can never get again.
    rt.output.item(created, id_field="key", shows=SHOWS)
    if rt.output.tabular:
        rt.output.message("Save the key now: the gateway cannot show it again.")


@app.command("rotate")
def rotate_key(
    ctx: typer.Context,
    key_id: KeyId,
    grace: Annotated[
        str | None,
        typer.Option("--grace", help="How long the old secret keeps working (1h, 30m; "
                     "default: it stops at once)."),
    ] = None,
) -> None:
    """Give a key a new secret and print it (shown this once only; -q prints only the secret).

    Same id, name, user, limits and usage history; the old secret stops at once, or after
    --grace (other gateway instances follow within auth_cache_ttl).
    """
    rt = runtime(ctx)
    body = {"grace_period_sec": parse_duration(grace) if grace else 0}
    rotated = rt.gateway.post(path("v1", "keys", key_id, "rotate"), body)
    rt.output.item(rotated, id_field="key", shows=SHOWS)
    if rt.output.tabular:
        rt.output.message("Save the key now: the gateway cannot show it again.")


@app.command("update")
def update_key(
    ctx: typer.Context,
    key_id: KeyId,
    name: Annotated[str | None, typer.Option("--name", help="A new name.")] = None,
    expires: Expires = None,
    active: Annotated[
        bool | None, typer.Option("--active/--inactive", help="Enable or disable the key.")
    ] = None,
    metadata: params.Metadata = None,
    no_expiry: Annotated[bool, typer.Option("--no-expiry", help="Never expire.")] = False,
    rpm_limit: params.RpmLimit = None,
    tpm_limit: params.TpmLimit = None,
    no_limits: params.NoLimits = False,
) -> None:
    """Change an API key's name, expiry, active state, metadata or rate limits."""
    rt = runtime(ctx)
    if no_expiry and expires:
        raise UsageError("give --expires or --no-expiry, not both")
    if no_limits and (rpm_limit or tpm_limit):
        raise UsageError("give --rpm-limit/--tpm-limit or --no-limits, not both")
    body = params.changes(
        (["expires_at"] if no_expiry else []) + (["rpm_limit", "tpm_limit"] if no_limits else []),
        key_name=name,
        expires_at=expires,
        is_active=active,
        metadata=params.metadata(metadata) if metadata else None,
        rpm_limit=rpm_limit,
        tpm_limit=tpm_limit,
    )
    rt.output.item(rt.gateway.patch(path("v1", "keys", key_id), body), shows=SHOWS)


@app.command("delete")
@app.command("revoke")
def revoke_keys(ctx: typer.Context, key_ids: KeyIds, yes: params.Yes = False) -> None:
    """Revoke API keys (asks first on a terminal); `delete` is the same command."""
    rt = runtime(ctx)
    rt.confirm(f"Revoke {len(key_ids)} key(s): {', '.join(key_ids)}", yes)
    for key_id in key_ids:
        rt.gateway.delete(path("v1", "keys", key_id))
    rt.output.items(
        [{"id": key_id, "status": "revoked"} for key_id in key_ids],
        [Column("ID", "id"), Column("STATUS", "status")],
    )

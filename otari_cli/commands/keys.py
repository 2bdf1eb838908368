"""`otari keys`: API keys for the gateway's clients."""

from __future__ import annotations

from typing import Annotated

import typer

from otari_cli import params, refs
from otari_cli.client import path
from otari_cli.completion import KeyId, KeyIds, user_ids
from otari_cli.durations import parse_duration
from otari_cli.errors import UsageError
from otari_cli.output import Column, cell, limit, when
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


def _models(value: object) -> str:
    return "any" if value is None else cell(value)


def _shown(data: object) -> str:
    """How a key is recognised: its prefix and last characters (never the secret)."""
    if not isinstance(data, dict) or not data.get("key_prefix"):
        return "-"
    return f"{data['key_prefix']}…{data.get('key_suffix') or ''}"


# A key's detail view (get, update): what an operator reads first; workspace ids and
# telemetry flags stay in -o json.
DETAIL = [
    Column("id", "id"),
    Column("name", "key_name"),
    Column("prefix", "key_prefix", of=_shown),
    Column("user", "user_id"),
    Column("active", "is_active"),
    Column("expires", "expires_at", when),
    Column("last used", "last_used_at", when),
    Column("spend", "spend"),
    Column("rpm limit", "rpm_limit", limit),
    Column("tpm limit", "tpm_limit", limit),
    Column("models", "allowed_models", _models),
    Column(
        "excluded from budget",
        "exclude_from_budget",
        optional=True,
        of=lambda data: data.get("exclude_from_budget") or None,
    ),
    Column("metadata", "metadata", optional=True),
    Column("created", "created_at", when),
]
# create and rotate: the secret first (shown this once), then the key.
SECRET = [Column("secret", "key"), *DETAIL]

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
    """Show one API key (by id or name)."""
    rt = runtime(ctx)
    _, shown = refs.act(
        rt.gateway, refs.KEY, key_id, lambda found: rt.gateway.get(path("v1", "keys", found))
    )
    rt.output.item(shown, fields=DETAIL)


@app.command("create")
def create_key(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option("--name", help="A name for the key.")] = None,
    user: Annotated[
        str | None,
        typer.Option(
            "--user", help="The user the key spends for (id or alias).", autocompletion=user_ids
        ),
    ] = None,
    expires: Expires = None,
    metadata: params.Metadata = None,
    rpm_limit: params.RpmLimit = None,
    tpm_limit: params.TpmLimit = None,
) -> None:
    """Create an API key and print its secret (shown this once only; -q prints only the secret)."""
    rt = runtime(ctx)
    if user is not None:
        user = refs.resolve(rt.gateway, refs.USER, user)
    body = {
        "key_name": name,
        "user_id": user,
        "expires_at": expires,
        "rpm_limit": rpm_limit,
        "tpm_limit": tpm_limit,
    }
    body = {k: v for k, v in body.items() if v is not None}
    created = rt.gateway.post("/v1/keys", {**body, "metadata": params.metadata(metadata)})
    # -q prints the secret: the one thing a script needs and can never get again.
    rt.output.item(created, id_field="key", fields=SECRET)
    if rt.output.tabular:
        rt.output.message("Save the key now: the gateway cannot show it again.")


@app.command("rotate")
def rotate_key(
    ctx: typer.Context,
    key_id: KeyId,
    grace: Annotated[
        str | None,
        typer.Option(
            "--grace",
            help="How long the old secret keeps working (1h, 30m; default: it stops at once).",
        ),
    ] = None,
) -> None:
    """Give a key a new secret and print it (shown this once only; -q prints only the secret).

    Same id, name, user, limits and usage history; the old secret stops at once, or after
    --grace (other gateway instances follow within auth_cache_ttl).
    """
    rt = runtime(ctx)
    body = {"grace_period_sec": parse_duration(grace) if grace else 0}
    _, rotated = refs.act(
        rt.gateway,
        refs.KEY,
        key_id,
        lambda found: rt.gateway.post(path("v1", "keys", found, "rotate"), body),
    )
    rt.output.item(
        rotated,
        id_field="key",
        fields=[*SECRET[:1], Column("old secret stops", "previous_key_expires_at", when), *DETAIL],
    )
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
    _, changed = refs.act(
        rt.gateway,
        refs.KEY,
        key_id,
        lambda found: rt.gateway.patch(path("v1", "keys", found), body),
    )
    rt.output.item(changed, fields=DETAIL)


@app.command("delete")
@app.command("revoke")
def revoke_keys(ctx: typer.Context, key_ids: KeyIds, yes: params.Yes = False) -> None:
    """Revoke API keys, by id or name (asks first on a terminal); `delete` is the same
    command."""
    rt = runtime(ctx)
    rt.confirm(f"Revoke {len(key_ids)} key(s): {', '.join(key_ids)}", yes)
    revoked = [
        refs.act(
            rt.gateway, refs.KEY, key_id, lambda found: rt.gateway.delete(path("v1", "keys", found))
        )[0]
        for key_id in key_ids
    ]
    rt.output.items(
        [{"id": key_id, "status": "revoked"} for key_id in revoked],
        [Column("ID", "id"), Column("STATUS", "status")],
    )

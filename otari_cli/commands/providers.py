"""`otari providers`: the providers the gateway forwards to, and where each came from."""

from __future__ import annotations

import typer

from otari_cli.output import Column
from otari_cli.runtime import runtime

app = typer.Typer(help="Providers (list is the default).")

COLUMNS = [
    Column("NAME", "name"),
    Column("TYPE", "type"),
    Column("BASE URL", "base_url"),
    Column("KEY", "api_key_set", lambda value: "set" if value else "none"),
    Column("SOURCE", "source"),
]


@app.callback(invoke_without_command=True)
def providers(ctx: typer.Context) -> None:
    """List the configured providers."""
    if ctx.invoked_subcommand is None:
        list_providers(ctx)


@app.command("list")
def list_providers(ctx: typer.Context) -> None:
    """Configured providers and the presets their environment variables enable."""
    rt = runtime(ctx)
    rt.output.items(rt.gateway.get("/v1/providers")["data"], COLUMNS, "name")

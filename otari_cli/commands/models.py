"""`otari models`: the models the gateway serves (those with pricing)."""

from __future__ import annotations

from datetime import UTC, datetime

import typer

from otari_cli.client import path
from otari_cli.output import Column, cell
from otari_cli.runtime import runtime

app = typer.Typer(help="Models (list is the default).")


def unix_time(value: object) -> str:
    """Seconds since the epoch as a UTC date and time."""
    if isinstance(value, int):
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return cell(value)


COLUMNS = [
    Column("ID", "id"),
    Column("OWNED BY", "owned_by"),
    Column("CREATED", "created", unix_time),
]


@app.callback(invoke_without_command=True)
def models(ctx: typer.Context) -> None:
    """List or show models."""
    if ctx.invoked_subcommand is None:
        list_models(ctx)


@app.command("list")
def list_models(ctx: typer.Context) -> None:
    """List models."""
    rt = runtime(ctx)
    rt.output.items(rt.gateway.get("/v1/models")["data"], COLUMNS)


@app.command("get")
def get_model(ctx: typer.Context, model_id: str) -> None:
    """Show one model."""
    rt = runtime(ctx)
    rt.output.item(rt.gateway.get(path("v1", "models", model_id)), shows={"created": unix_time})

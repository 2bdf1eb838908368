"""`otari health`: is the gateway up and ready."""

from __future__ import annotations

import typer

from otari_cli.errors import ServerError
from otari_cli.runtime import runtime

app = typer.Typer()


@app.command("health")
def health(ctx: typer.Context) -> None:
    """Show the gateway's health and readiness (exit 5 when it is not ready)."""
    rt = runtime(ctx)
    body = rt.gateway.get("/health")
    ready, detail = rt.gateway.readiness()
    rt.output.item({**body, "ready": ready}, id_field="status")
    if not ready:
        raise ServerError(503, f"the gateway is not ready: {detail}")

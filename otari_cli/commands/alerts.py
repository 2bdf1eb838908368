"""`otari alerts`: budget alert webhooks."""

from __future__ import annotations

import typer

from otari_cli.runtime import runtime

app = typer.Typer(help="Budget alerts.", no_args_is_help=True)


@app.command("test")
def test_alert(ctx: typer.Context) -> None:
    """Send a sample budget alert (marked "test": true) to the gateway's webhook."""
    rt = runtime(ctx)
    result = rt.gateway.post("/v1/alerts/test", {})
    rt.output.item(result, id_field="status")

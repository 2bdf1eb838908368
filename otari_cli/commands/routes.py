"""`otari routes`: model names served by several targets, with fallbacks (list is the default)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from otari_cli import params
from otari_cli.client import path
from otari_cli.completion import route_names
from otari_cli.output import Column, Format, cell
from otari_cli.runtime import runtime

app = typer.Typer(help="Routes: one model name over several provider:model targets.")
ID = "name"


def _targets(value: object) -> str:
    if not isinstance(value, list):
        return cell(value)
    return ", ".join(
        t["model"] if t.get("weight", 1) == 1 else f"{t['model']}={t['weight']}"
        for t in value
        if isinstance(t, dict)
    )


COLUMNS = [
    Column("NAME", ID),
    Column("STRATEGY", "strategy"),
    Column("TARGETS", "targets", _targets),
    Column("RETRIES", "retries"),
    Column("SOURCE", "source"),
]
SHOWS = {"targets": _targets}


def _price(value: object) -> str:
    if not isinstance(value, dict):
        return "-"
    return f"{value['input_price_per_million']} / {value['output_price_per_million']}"


def _seconds(value: object) -> str:
    return "-" if value is None else f"{value}s"


EXPLAIN_COLUMNS = [
    Column("ORDER", "order", lambda v: "-" if v is None else str(v)),
    Column("TARGET", "model"),
    Column("WEIGHT", "weight"),
    Column("SHARE", "share", lambda v: "-" if v is None else f"{float(str(v)) * 100:g}%"),
    Column("PRICE IN/OUT /1M", "price", _price),
    Column("COOLDOWN", "cooldown_remaining", _seconds),
    Column("STATUS", "status"),
    Column("WHY", "reason", lambda v: "" if v is None else str(v)),
]

Name = Annotated[
    str,
    typer.Argument(
        help="The route's name (what clients send as model).", autocompletion=route_names
    ),
]


def target(text: str) -> dict[str, Any]:
    """`provider:model` or `provider:model=WEIGHT` as a target."""
    model, sep, weight = text.rpartition("=")
    if sep and weight.isdigit() and model:
        return {"model": model, "weight": int(weight)}
    return {"model": text, "weight": 1}


@app.callback(invoke_without_command=True)
def routes(ctx: typer.Context) -> None:
    """Manage routes."""
    if ctx.invoked_subcommand is None:
        list_routes(ctx)


@app.command("list")
def list_routes(ctx: typer.Context) -> None:
    """List the routes (config-file routes show source 'config' and are read-only)."""
    rt = runtime(ctx)
    rt.output.items(rt.gateway.get("/v1/routes"), COLUMNS, ID)


@app.command("get")
def get_route(ctx: typer.Context, name: Name) -> None:
    """Show one route."""
    rt = runtime(ctx)
    rt.output.item(rt.gateway.get(path("v1", "routes", name)), ID, SHOWS)


@app.command("set")
def set_route(
    ctx: typer.Context,
    name: Name,
    targets: Annotated[
        list[str],
        typer.Option(
            "--target", "-t", help="provider:model, or provider:model=WEIGHT; repeat, in order."
        ),
    ],
    strategy: Annotated[
        str,
        typer.Option(
            "--strategy", help="fallback (in order) or loadbalance (weighted pick first)."
        ),
    ] = "fallback",
    retries: Annotated[int, typer.Option("--retries", help="Retries on the same target.")] = 0,
    backoff: Annotated[
        float | None,
        typer.Option(
            "--backoff", help="First retry's longest wait in seconds (doubles, jittered)."
        ),
    ] = None,
    retry_after_cap: Annotated[
        float | None,
        typer.Option(
            "--retry-after-cap", help="Longest single wait in seconds, Retry-After included."
        ),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Deadline in seconds across every attempt.")
    ] = None,
    context_window_fallbacks: Annotated[
        bool,
        typer.Option(
            "--context-window-fallbacks",
            help="Move on when a target refuses the input as too long for its context.",
        ),
    ] = False,
    cooldown_failures: Annotated[
        int | None,
        typer.Option(
            "--cooldown-failures", help="Failures within the window that start a cooldown."
        ),
    ] = None,
    cooldown_window: Annotated[
        float | None,
        typer.Option("--cooldown-window", help="Window in seconds in which failures add up."),
    ] = None,
    cooldown_seconds: Annotated[
        float | None,
        typer.Option("--cooldown-seconds", help="How long a failing target is skipped."),
    ] = None,
) -> None:
    """Create or replace a route (settings not given take their defaults)."""
    rt = runtime(ctx)
    body: dict[str, Any] = {
        "strategy": strategy,
        "targets": [target(t) for t in targets],
        "retries": retries,
        "context_window_fallbacks": context_window_fallbacks,
    }
    optional = {
        "backoff": backoff,
        "retry_after_cap": retry_after_cap,
        "timeout": timeout,
        "cooldown_failures": cooldown_failures,
        "cooldown_window": cooldown_window,
        "cooldown_seconds": cooldown_seconds,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    rt.output.item(rt.gateway.put(path("v1", "routes", name), body), ID, SHOWS)


@app.command("delete")
def delete_route(ctx: typer.Context, name: Name, yes: params.Yes = False) -> None:
    """Delete a route (asks first on a terminal)."""
    rt = runtime(ctx)
    rt.confirm(f"Delete route {name}", yes)
    rt.gateway.delete(path("v1", "routes", name))
    rt.output.items(
        [{ID: name, "status": "deleted"}], [Column("NAME", ID), Column("STATUS", "status")], ID
    )


@app.command("explain")
def explain_route(ctx: typer.Context, name: Name) -> None:
    """The targets in the order they would be tried now, with price, cooldown and why any
    is skipped (nothing is sent to a provider)."""
    rt = runtime(ctx)
    shown = rt.gateway.get(path("v1", "routes", name, "explain"))
    if rt.output.format is Format.JSON:
        rt.output.item(shown, "route")
        return
    rt.output.items(shown["targets"], EXPLAIN_COLUMNS, "model")
    if shown.get("strategy") == "loadbalance":
        rt.output.message(
            "loadbalance: the first target is a weighted pick by SHARE; the others follow in ORDER"
        )

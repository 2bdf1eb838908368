"""`otari init`: a config file with a fresh master key, ready for `otari start`."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated

import typer

from otari_cli.config import DEFAULT_HOST, DEFAULT_PORT, local_url, write_private
from otari_cli.errors import UsageError
from otari_cli.runtime import runtime

app = typer.Typer()


def new_master_key() -> str:
    """A fresh random master key."""
    return "sk-otari-" + secrets.token_urlsafe(32)


@app.command("init")
def init(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="Where to write [default: $OTARI_CONFIG or the platform config dir]."
        ),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = DEFAULT_HOST,
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = DEFAULT_PORT,
    database_url: Annotated[
        str | None, typer.Option("--database-url", help="Database URL [default: SQLite].")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a config file with a new master key (mode 0600); never overwrites without --force."""
    import tomli_w

    rt = runtime(ctx)
    env_path = rt.env.get("OTARI_CONFIG")
    target = config or (Path(env_path) if env_path else rt.dirs.config_file)
    if target.exists() and not force:
        raise UsageError(f"{target} exists: pass --force to overwrite it (and its master key)")
    settings: dict[str, object] = {"host": host, "port": port, "auto_migrate": True}
    if database_url:
        settings["database_url"] = database_url
    # One master key: a key `otari serve` already generated stays the key, so clients and
    # scripts that use it keep working after `otari init`.
    generated = rt.dirs.master_key_file
    existing = generated.read_text(encoding="utf-8").strip() if generated.exists() else ""
    settings["master_key"] = existing or new_master_key()
    write_private(target, tomli_w.dumps(settings))
    rt.output.item({"config": str(target), "url": local_url(host, port)}, id_field="config")
    steps = [
        (
            "otari start" + ("" if config is None else f" --config {target}"),
            "run it in the background",
        ),
        ("otari status", "check it"),
        ("otari keys create", "make an API key for a client"),
    ]
    width = max(len(command) for command, _ in steps)
    lines = "".join(f"\n  {command.ljust(width)}  # {why}" for command, why in steps)
    origin = f"the master key generated earlier in {generated}" if existing else "a new master key"
    rt.output.message(f"Wrote {target} (mode 0600, with {origin}).\nNext:{lines}")

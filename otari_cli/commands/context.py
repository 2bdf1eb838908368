"""`otari context`: named gateways, so one CLI can administer several."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from otari_cli.completion import ContextName
from otari_cli.config import LOCAL, Context, check_url, load_contexts, save_contexts
from otari_cli.errors import UsageError
from otari_cli.output import Column
from otari_cli.runtime import runtime

app = typer.Typer(help="Named gateways (list is the default).")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

COLUMNS = [
    Column("CURRENT", "current", lambda v: "*" if v else ""),
    Column("NAME", "name"),
    Column("URL", "url"),
    Column("MASTER KEY", "master_key"),
]


@app.callback(invoke_without_command=True)
def contexts(ctx: typer.Context) -> None:
    """Manage contexts."""
    if ctx.invoked_subcommand is None:
        list_contexts(ctx)


@app.command("list")
def list_contexts(ctx: typer.Context) -> None:
    """List contexts; `local` is the daemon on this machine."""
    rt = runtime(ctx)
    known = load_contexts(rt.dirs.contexts_file)
    current = known.current or LOCAL
    rows = [
        {
            "name": LOCAL,
            "url": rt.local().url,
            "master_key": "local discovery",
            "current": current == LOCAL,
        }
    ]
    rows += [
        {"name": c.name, "url": c.url, "master_key": c.key_source(), "current": current == c.name}
        for c in known.entries.values()
    ]
    rt.output.items(rows, COLUMNS, "name")


@app.command("add")
def add_context(
    ctx: typer.Context,
    name: str,
    url: Annotated[str, typer.Option("--url", help="The gateway's base URL.")],
    key_env: Annotated[
        str | None,
        typer.Option("--key-env", metavar="VAR", help="Read the master key from this env var."),
    ] = None,
    key_stdin: Annotated[
        bool,
        typer.Option("--key-stdin", help="Read the master key from stdin; stored at mode 0600."),
    ] = False,
    use: Annotated[bool, typer.Option("--use", help="Make it the current context.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing context.")] = False,
) -> None:
    """Add a context: its URL and where its master key comes from."""
    rt = runtime(ctx)
    if not NAME.fullmatch(name) or name == LOCAL:
        raise UsageError(f"invalid context name {name!r} (letters, digits, _ . -; not 'local')")
    if key_env and key_stdin:
        raise UsageError("give --key-env or --key-stdin, not both")
    key = rt.output.stdin.readline().strip() if key_stdin else None
    if key_stdin and not key:
        raise UsageError("--key-stdin: no key on standard input")
    known = load_contexts(rt.dirs.contexts_file)
    if name in known.entries and not force:
        raise UsageError(f"context {name!r} exists: pass --force to replace it")
    known.entries[name] = Context(name, check_url(url), key_env, key)
    if use:
        known.current = name
    save_contexts(rt.dirs.contexts_file, known)
    rt.output.message(f"Added context {name!r}" + (" (now current)" if use else ""))


@app.command("use")
def use_context(ctx: typer.Context, name: ContextName) -> None:
    """Make a context current (`local` for the daemon on this machine)."""
    rt = runtime(ctx)
    known = load_contexts(rt.dirs.contexts_file)
    if name != LOCAL:
        known.get(name)
    known.current = None if name == LOCAL else name
    save_contexts(rt.dirs.contexts_file, known)
    rt.output.message(f"Current context: {name}")


@app.command("remove")
def remove_context(ctx: typer.Context, name: ContextName) -> None:
    """Forget a context (and its stored master key)."""
    rt = runtime(ctx)
    known = load_contexts(rt.dirs.contexts_file)
    known.get(name)
    del known.entries[name]
    if known.current == name:
        known.current = None
    save_contexts(rt.dirs.contexts_file, known)
    rt.output.message(f"Removed context {name!r}")


@app.command("show")
def show_context(ctx: typer.Context) -> None:
    """Which gateway a command would use now, and where each setting came from."""
    rt = runtime(ctx)
    target = rt.target()
    rt.output.item(
        {
            "context": target.context or LOCAL,
            "url": target.url,
            "url_source": target.url_source,
            "master_key": "set" if target.master_key else "none",
            "master_key_source": target.key_source,
        },
        id_field="context",
    )

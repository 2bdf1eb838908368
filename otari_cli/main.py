"""The root `otari` app: global options, one add_typer per resource, and main()."""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer._click.core import Command, Context
from typer._click.exceptions import ClickException
from typer.core import TyperGroup

from otari_cli.client import DEFAULT_TIMEOUT
from otari_cli.commands import (
    alerts,
    budgets,
    context,
    db,
    health,
    init,
    keys,
    lifecycle,
    models,
    pricing,
    providers,
    routes,
    usage,
    users,
)
from otari_cli.completion import context_names
from otari_cli.errors import CliError, ExitCode, StartFailed
from otari_cli.output import Format, Output
from otari_cli.runtime import Options, Runtime

EXIT_CODES = """\b
Exit codes:
  0  ok
  1  the API refused the request (4xx; its message is shown), or another error
  2  bad usage (wrong options, bad configuration, confirmation needed: pass --yes)
  3  gateway unreachable or timed out (also: `otari status` when not running)
  4  authentication failed (401/403: missing, unknown or non-master key)
  5  server error (5xx)
"""

# Global options that may appear anywhere on the line (`otari keys list -o json --context
# prod`), moved in front of the subcommand before parsing. Name -> whether it takes a value.
ANYWHERE = {
    "-o": True,
    "--output": True,
    "-q": False,
    "--quiet": False,
    "--debug": False,
    "--url": True,
    "--master-key": True,
    "--context": True,
    "--timeout": True,
}


def hoist(args: Sequence[str], own: frozenset[str] = frozenset()) -> list[str]:
    """Move the global options found after the subcommand to the front (stop at `--`).

    `own` names options the subcommand defines itself (`otari context add --url`): those stay.
    """
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        name = arg.split("=", 1)[0]
        if name in ANYWHERE and name not in own:
            takes_value = ANYWHERE[name] and "=" not in arg
            front.extend(args[i : i + 2] if takes_value else [arg])
            i += 2 if takes_value else 1
            continue
        rest.append(arg)
        i += 1
    return front + rest


def own_options(group: TyperGroup, ctx: Context, args: Sequence[str]) -> frozenset[str]:
    """The option names the subcommand named in `args` defines itself."""
    command: Command = group
    for arg in args:
        if arg == "--":
            break
        if isinstance(command, TyperGroup) and not arg.startswith("-"):
            sub = command.get_command(ctx, arg)
            if sub is not None:
                command = sub
    if command is group:
        return frozenset()
    return frozenset(opt for param in command.params for opt in getattr(param, "opts", ()))


class OtariGroup(TyperGroup):
    """The root group: hoists output options and turns CliErrors into exit codes."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist(args, own_options(self, ctx, args)))

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, ClickException, BrokenPipeError):
            raise
        except CliError as exc:
            _report(ctx, exc)
            raise typer.Exit(exc.exit_code) from None
        except Exception as exc:  # the one place an unexpected error is rendered
            _report(ctx, exc)
            raise typer.Exit(ExitCode.REFUSED) from None


def _report(ctx: Any, exc: Exception) -> None:
    rt = ctx.find_object(Runtime)
    out = rt.output if rt else Output(Format.JSON)
    if rt and rt.options.debug:
        out.detail("".join(traceback.format_exception(exc)))
    if isinstance(exc, CliError):
        out.error(exc.message)
    else:
        out.error(f"unexpected {type(exc).__name__}: {exc} (run with --debug for details)")
    if isinstance(exc, StartFailed) and exc.log_tail:
        out.detail("last log lines:\n" + "".join(f"  {line}\n" for line in exc.log_tail))


app = typer.Typer(
    cls=OtariGroup,
    name="otari",
    help="Run and administer an otari LLM gateway.",
    epilog=EXIT_CODES,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"otari {version('otari-gateway')}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def root(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option("--url", envvar="OTARI_URL", help="Gateway URL (overrides contexts)."),
    ] = None,
    master_key: Annotated[
        str | None,
        typer.Option(
            "--master-key",
            envvar="OTARI_MASTER_KEY",
            show_envvar=True,
            help="Master key (overrides contexts and local discovery).",
        ),
    ] = None,
    context_name: Annotated[
        str | None,
        typer.Option(
            "--context",
            envvar="OTARI_CONTEXT",
            help="Use this context for one call.",
            autocompletion=context_names,
        ),
    ] = None,
    output: Annotated[
        Format | None,
        typer.Option(
            "--output", "-o", help="Output format [default: table on a terminal, else json]."
        ),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only ids (for xargs).")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    timeout: Annotated[
        float,
        typer.Option("--timeout", envvar="OTARI_TIMEOUT", min=0.1, help="Seconds per request."),
    ] = DEFAULT_TIMEOUT,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Run and administer an otari LLM gateway."""
    if ctx.invoked_subcommand is None:  # bare `otari`: the help, not an error
        typer.echo(ctx.get_help())
        raise typer.Exit()
    rt = Runtime(Options(url, master_key, context_name, output, quiet, debug, timeout))
    ctx.obj = rt
    ctx.call_on_close(rt.close)


app.add_typer(lifecycle.app)
app.add_typer(init.app)
app.command("migrate")(db.migrate)  # `otari migrate`, the upgrade step's name in the docs
app.add_typer(db.app, name="db")
app.add_typer(context.app, name="context")
app.add_typer(keys.app, name="keys")
app.add_typer(users.app, name="users")
app.add_typer(budgets.app, name="budgets")
app.add_typer(pricing.app, name="pricing")
app.add_typer(routes.app, name="routes")
app.add_typer(usage.app, name="usage")
app.add_typer(models.app, name="models")
app.add_typer(providers.app, name="providers")
app.add_typer(health.app)
app.add_typer(alerts.app, name="alerts")


def main() -> None:
    """Console-script entry point."""
    app(prog_name="otari")

"""Shell completion of values: key, user and budget ids, route and context names (Typer
autocompletion).

Completion runs before the root callback, so the gateway is chosen here from the root
options typed so far (`--url`, `--context`, ...) exactly as a command would choose it. A
gateway that does not answer within two seconds completes nothing, silently.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from otari_cli.errors import CliError

_TIMEOUT = 2.0


def _ids(ctx: typer.Context, url_path: str, field: str, incomplete: str) -> list[str]:
    from otari_cli.runtime import Options, Runtime

    given: dict[str, Any] = ctx.find_root().params
    rt = Runtime(
        Options(
            given.get("url"), given.get("master_key"), given.get("context_name"), timeout=_TIMEOUT
        )
    )
    try:
        rows = rt.gateway.get(url_path, {"limit": 1000})
    except CliError:
        return []
    finally:
        rt.close()
    found = (
        [str(row.get(field)) for row in rows if isinstance(row, dict)]
        if isinstance(rows, list)
        else []
    )
    return [value for value in found if value.startswith(incomplete)]


def key_ids(ctx: typer.Context, incomplete: str) -> list[str]:
    """API key ids on the chosen gateway."""
    return _ids(ctx, "/v1/keys", "id", incomplete)


def user_ids(ctx: typer.Context, incomplete: str) -> list[str]:
    """User ids on the chosen gateway."""
    return _ids(ctx, "/v1/users", "user_id", incomplete)


def budget_ids(ctx: typer.Context, incomplete: str) -> list[str]:
    """Budget ids on the chosen gateway."""
    return _ids(ctx, "/v1/budgets", "budget_id", incomplete)


def route_names(ctx: typer.Context, incomplete: str) -> list[str]:
    """Route names on the chosen gateway."""
    return _ids(ctx, "/v1/routes", "name", incomplete)


def context_names(ctx: typer.Context, incomplete: str) -> list[str]:
    """Names of the saved contexts (and `local`)."""
    from otari_cli.config import LOCAL, Dirs, load_contexts

    try:
        names = [LOCAL, *sorted(load_contexts(Dirs.from_platform().contexts_file).entries)]
    except CliError:
        return []
    return [name for name in names if name.startswith(incomplete)]


KeyId = Annotated[str, typer.Argument(help="An API key id or name.", autocompletion=key_ids)]
KeyIds = Annotated[list[str], typer.Argument(help="API key ids or names.", autocompletion=key_ids)]
UserId = Annotated[str, typer.Argument(help="A user id or alias.", autocompletion=user_ids)]
UserIds = Annotated[list[str], typer.Argument(help="User ids or aliases.", autocompletion=user_ids)]
BudgetId = Annotated[str, typer.Argument(help="A budget id or name.", autocompletion=budget_ids)]
BudgetIds = Annotated[
    list[str], typer.Argument(help="Budget ids or names.", autocompletion=budget_ids)
]
ContextName = Annotated[str, typer.Argument(help="A context name.", autocompletion=context_names)]

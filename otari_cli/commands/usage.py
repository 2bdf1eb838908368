"""`otari usage`: the log, streamed; `usage summary` sums per group; `usage prune` rolls up."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from functools import partial
from typing import Annotated, Any

import typer

from otari_cli import params, refs
from otari_cli.client import path
from otari_cli.completion import key_ids as complete_key_ids
from otari_cli.completion import user_ids as complete_user_ids
from otari_cli.durations import is_duration
from otari_cli.errors import Refused, Unreachable, UsageError
from otari_cli.output import Column, Format, when
from otari_cli.runtime import Runtime, runtime

app = typer.Typer()

PAGE_MAX = 1000  # the gateway's largest page
KEY_LOOKUPS = 20  # distinct keys in a table looked up one by one; past that, list them all
PRUNE_TIMEOUT = 3600.0  # seconds: pruning a large table runs batch after batch


def _columns(zone: str, show_time: Callable[[object], str], key_field: str = "key") -> list[Column]:
    """The table's columns; times in `zone` (named in the header)."""
    return [
        Column(f"TIME ({zone})", "timestamp", show_time),
        Column("ID", "id", wide=True),
        Column("USER", "user_id"),
        Column("KEY", key_field),
        Column("MODEL", "model"),
        Column("ENDPOINT", "endpoint", wide=True),
        Column("IN", "prompt_tokens"),
        Column("OUT", "completion_tokens"),
        Column("COST", "cost"),
        Column("STATUS", "status"),
    ]


# Rows as the gateway lists them (key ids, UTC), for `otari users usage`.
COLUMNS = _columns("UTC", when, key_field="api_key_id")

LIST_LIMIT = 100  # `otari usage` without --limit or --all


def _local_time(value: object) -> str:
    """An ISO timestamp as `YYYY-MM-DD HH:MM:SS` in this machine's time zone."""
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return when(value)


Since = Annotated[
    str | None,
    typer.Option(
        "--since",
        parser=params.past,
        help="From this time: ISO date/datetime, or a duration ago (7d).",
    ),
]
Until = Annotated[
    str | None,
    typer.Option(
        "--until", parser=params.past, help="Until this time: ISO date/datetime or a duration ago."
    ),
]


@app.callback(invoke_without_command=True)
def usage(
    ctx: typer.Context,
    user: Annotated[
        str | None,
        typer.Option(
            "--user",
            help="Only this user's usage (a user id or alias).",
            autocompletion=complete_user_ids,
        ),
    ] = None,
    since: Since = None,
    until: Until = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="At most this many entries, newest first.")
    ] = LIST_LIMIT,
    every: Annotated[
        bool, typer.Option("--all", help="Every entry, written as it arrives (-o jsonl, csv).")
    ] = False,
    model: Annotated[str | None, typer.Option("--model", help="Only this model.")] = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            help="Only this API key (an id or a key name).",
            autocompletion=complete_key_ids,
        ),
    ] = None,
    local: Annotated[
        bool,
        typer.Option(
            "--local", help="Tables show times in this machine's time zone (default: UTC)."
        ),
    ] = False,
) -> None:
    """Show the usage log, newest first (table times in UTC unless --local)."""
    if ctx.invoked_subcommand is not None:
        return
    rt = runtime(ctx)
    if every and limit != LIST_LIMIT:
        raise UsageError("--all and --limit do not go together: --all lists every entry")
    user_id = _reference(rt, refs.USER, user) if user else None
    filters = {
        "user_id": user_id or user,
        "start_date": since,
        "end_date": until,
        "model": model,
        "api_key_id": (_reference(rt, refs.KEY, key) or key) if key else None,
    }
    cap = None if every else limit
    # One row past the limit tells whether the listing stopped early.
    walk = partial(
        rt.gateway.walk,
        "/v1/usage",
        filters,
        page_size=PAGE_MAX if every else min(limit + 1, PAGE_MAX),
        limit=None if every else limit + 1,
    )
    more: list[bool] = []
    if rt.output.format in (Format.JSON, Format.JSONL) and not rt.output.quiet:
        # Rows written through as the gateway sent them (JSON Lines): no parsing, no
        # re-encoding, which is most of an export's time.
        shown = rt.output.stream_lines(_first(walk(lines=True), cap, more))
    elif rt.output.tabular and not rt.output.quiet:
        rows = list(_first(walk(), cap, more))
        names = _key_names(rt, {r.get("api_key_id") for r in rows} - {None})
        for row in rows:
            key_id = row.get("api_key_id")
            row["key"] = names.get(key_id) or key_id
        zone = (datetime.now().astimezone().tzname() or "local") if local else "UTC"
        rt.output.items(rows, _columns(zone, _local_time if local else when))
        shown = len(rows)
    else:
        shown = rt.output.stream(_first(walk(), cap, more), [])
    if more:
        total = _total(rt, filters)
        rt.output.message(
            f"showing {shown} of {total} (use --all)"
            if total is not None
            else f"showing the newest {shown} rows; more match (use --all, or --limit N)"
        )
    if shown == 0 and user is not None and user_id is None:
        rt.output.warning(f"no user named {user!r}: the filter matches nothing")


def _first(rows: Iterator[Any], limit: int | None, more: list[bool]) -> Iterator[Any]:
    """The first `limit` rows; appends True to `more` when another one followed."""
    for count, row in enumerate(rows):
        if limit is not None and count == limit:
            more.append(True)
            return
        yield row


def _total(rt: Runtime, filters: dict[str, str | None]) -> int | None:
    """How many rows the filters match (X-Total-Count), or None from a gateway without it
    (or one that stopped answering since the listing)."""
    try:
        response = rt.gateway.send(
            "GET", "/v1/usage", params={**filters, "skip": 0, "limit": 1, "include_total": "true"}
        )
    except Unreachable:
        return None
    text = response.headers.get("X-Total-Count", "")
    return int(text) if response.status_code == 200 and text.isdigit() else None


def _key_names(rt: Runtime, key_ids: set[str]) -> dict[str, str | None]:
    """The names of these API keys (None for an unnamed or deleted one): one lookup each,
    or the whole key list when that is fewer requests."""
    if len(key_ids) > KEY_LOOKUPS:
        return {
            k["id"]: k.get("key_name")
            for k in rt.gateway.walk("/v1/keys", page_size=PAGE_MAX)
            if k.get("id") in key_ids
        }
    names: dict[str, str | None] = {}
    for key_id in sorted(key_ids):
        try:
            names[key_id] = rt.gateway.get(path("v1", "keys", key_id)).get("key_name")
        except Refused as exc:
            if exc.status != 404:
                raise
            names[key_id] = None
    return names


def _reference(rt: Runtime, kind: refs.Kind, ref: str) -> str | None:
    """The id `ref` stands for: itself when it is an id, else the id of the one item whose
    name (a key's name, a user's alias) it is; None when nothing has that id or name.
    Several items with that name exit 2 (refs.named)."""
    try:
        return refs.resolve(rt.gateway, kind, ref)
    except Refused as exc:
        if exc.status == 404:
            return None
        raise


@app.command("prune")
def prune(
    ctx: typer.Context,
    before: Annotated[
        str,
        typer.Option(
            "--before",
            parser=params.past,
            help="Roll up and delete rows before this day (midnight UTC): ISO date or 90d.",
        ),
    ],
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Only count the rows and cost that would be rolled up."),
    ] = False,
    yes: params.Yes = False,
) -> None:
    """Move old usage rows into daily roll-ups (summaries stay exact) and delete them."""
    rt = runtime(ctx)
    if not dry_run:
        rt.confirm(f"Roll up and delete every usage row before {before}", yes)
    result = rt.gateway.post(
        "/v1/usage/prune",
        {"before": before, "dry_run": dry_run},
        timeout=max(rt.options.timeout, PRUNE_TIMEOUT),
    )
    rt.output.item(result, id_field="rows")


class By(StrEnum):
    """What `otari usage summary` groups by."""

    USER = "user"
    KEY = "key"
    MODEL = "model"
    PROVIDER = "provider"
    DAY = "day"
    HOUR = "hour"


# The field each group is labelled with in the gateway's answer.
BY_FIELD = {
    By.USER: "user_id",
    By.KEY: "api_key_id",
    By.MODEL: "model",
    By.PROVIDER: "provider",
    By.DAY: "day",
    By.HOUR: "hour",
}
BAR_WIDTH = 30


def _bar(cost: object, largest: Decimal, width: int = BAR_WIDTH) -> str:
    """A bar proportional to cost (the largest group gets `width` blocks)."""
    if not isinstance(cost, Decimal | int) or largest <= 0:
        return ""
    return "█" * max(1 if cost else 0, round(Decimal(cost) / largest * width))


def _bar_width(stdout: Any, columns: list[Column], rows: list[dict[str, Any]]) -> int:
    """Blocks left for the bar once the other columns fit the console (at most BAR_WIDTH).

    Rich folds a cell that does not fit, which would break every bar over two lines.
    """
    from rich.console import Console

    used = sum(
        max(len(c.header), *(len(c.show(r.get(c.field))) for r in rows)) + 2 for c in columns
    )  # each column plus Rich's two-space gap before the bar
    return max(1, min(BAR_WIDTH, Console(file=stdout).width - used))


def _whole_days(since: str) -> str:
    """--since as a start instant: a duration ago starts at that day's midnight UTC."""
    start = params.past(since)
    if not is_duration(since):
        return start
    moment = datetime.fromisoformat(start).astimezone(UTC)
    return datetime(moment.year, moment.month, moment.day, tzinfo=UTC).isoformat()


@app.command("summary")
def summary(
    ctx: typer.Context,
    by: Annotated[By, typer.Option("--by", help="What to group by.")] = By.USER,
    since: Annotated[
        str,
        typer.Option(
            "--since",
            help="From this time: ISO date/datetime, or a duration ago (7d: from midnight UTC "
            "seven days ago, so whole days, pruned ones too, are counted).",
        ),
    ] = "7d",
    until: Until = None,
    user: Annotated[
        str | None, typer.Option("--user", help="Only this user.", autocompletion=complete_user_ids)
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Only this model.")] = None,
) -> None:
    """Requests, errors, tokens and cost per group, with a total (server-side sums)."""
    rt = runtime(ctx)
    result = rt.gateway.get(
        "/v1/usage/summary",
        {
            "group_by": by.value,
            "start_date": _whole_days(since),
            "end_date": until,
            "user_id": (_reference(rt, refs.USER, user) or user) if user else None,
            "model": model,
        },
    )
    field = BY_FIELD[by]
    if rt.output.format is Format.JSON and not rt.output.quiet:
        rt.output.item(result)  # the gateway's own shape: {"groups": [...], "total": {...}}
        return
    if not rt.output.tabular or rt.output.quiet:
        # A line or row per group; CSV ends with the total, marked in its own column (a
        # group may be called "TOTAL"); JSON Lines and ids carry the groups only.
        groups = result["groups"]
        if rt.output.format is Format.CSV:
            groups = [{**g, "total": False} for g in groups]
            groups.append({field: None, **result["total"], "total": True})
        rt.output.items(groups, [], id_field=field)
        return
    total = {field: "TOTAL", **result["total"]}
    rows = [*result["groups"], total]
    largest = max((Decimal(g["cost"]) for g in result["groups"]), default=Decimal(0))
    columns = [
        Column(by.value.upper(), field),
        Column("REQUESTS", "requests"),
        Column("ERRORS", "errors"),
        Column("IN", "prompt_tokens"),
        Column("OUT", "completion_tokens"),
        Column("COST", "cost"),
    ]
    if by is By.DAY:
        width = _bar_width(rt.output.stdout, columns, rows)
        rows = [{**g, "bar": _bar(g["cost"], largest, width)} for g in result["groups"]]
        rows.append({**total, "bar": ""})
        columns.append(Column("", "bar"))
    rt.output.items(rows, columns, id_field=field)

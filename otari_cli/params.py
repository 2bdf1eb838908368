"""Command-line values shared by the commands: money, durations, times, metadata, --yes."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated

import typer

from otari_cli.durations import parse_duration, parse_instant
from otari_cli.errors import UsageError

MONEY_PLACES = 10


def money(text: str) -> Decimal:
    """An exact non-negative amount: `25.00` stays 25.00 (never a float)."""
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise typer.BadParameter(f"{text!r} is not a number") from None
    if not amount.is_finite() or amount < 0:
        raise typer.BadParameter(f"{text!r} must be a finite amount of at least 0")
    exponent = amount.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MONEY_PLACES:
        # The gateway keeps ten decimal places; it would refuse the amount anyway.
        raise typer.BadParameter(f"{text!r} has more than {MONEY_PLACES} decimal places")
    return amount


def duration(text: str) -> int:
    """Seconds from a human duration (`30d`, `12h`, `1w`, `90m`, `3600s`)."""
    try:
        return parse_duration(text)
    except UsageError as exc:
        raise typer.BadParameter(exc.message) from None


def _instant(text: str, *, ago: bool) -> str:
    try:
        return parse_instant(text, datetime.now(UTC), ago=ago).isoformat()
    except UsageError as exc:
        raise typer.BadParameter(exc.message) from None


def future(text: str) -> str:
    """ISO 8601 UTC time from a date/datetime or a duration from now (`30d`)."""
    return _instant(text, ago=False)


def past(text: str) -> str:
    """ISO 8601 UTC time from a date/datetime or a duration ago (`7d`)."""
    return _instant(text, ago=True)


def metadata(pairs: list[str] | None) -> dict[str, str]:
    """`k=v` pairs as a dict (later pairs win)."""
    result: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"invalid --metadata {pair!r}: expected key=value")
        result[key] = value
    return result


def changes(clear: Iterable[str] = (), **fields: object) -> dict[str, object]:
    """A PATCH body: the fields the user gave, plus `clear` fields set to null (to remove them).

    Giving nothing at all is a usage error.
    """
    body = {k: v for k, v in fields.items() if v is not None}
    body.update(dict.fromkeys(clear))
    if not body:
        raise UsageError("nothing to update: give at least one option (see --help)")
    return body


Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
RpmLimit = Annotated[
    int | None, typer.Option("--rpm-limit", min=1, help="Requests per minute allowed (429 beyond).")
]
TpmLimit = Annotated[
    int | None, typer.Option("--tpm-limit", min=1, help="Tokens per minute allowed (429 beyond).")
]
NoLimits = Annotated[
    bool, typer.Option("--no-limits", help="Remove the requests- and tokens-per-minute limits.")
]
Metadata = Annotated[
    list[str] | None,
    typer.Option("--metadata", "-m", metavar="KEY=VALUE", help="Metadata pair (repeatable)."),
]
Limit = Annotated[
    int | None, typer.Option("--limit", min=1, help="At most this many items (default: all).")
]

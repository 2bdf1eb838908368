"""JSON text for the CLI: orjson, with Decimal money written in plain decimal notation."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson


def plain(value: Decimal) -> str:
    """A Decimal as written digits, never with an exponent: 0.0000000375, 1.50, 25."""
    return format(value, "f")


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise TypeError(f"{value} is not a JSON number")
        return orjson.Fragment(plain(value))
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def dumps(value: Any, *, pretty: bool = False, sort_keys: bool = False) -> str:
    """JSON text of `value`; Decimals as exact plain numbers. Raises TypeError on other types."""
    option = orjson.OPT_NON_STR_KEYS
    if pretty:
        option |= orjson.OPT_INDENT_2
    if sort_keys:
        option |= orjson.OPT_SORT_KEYS
    return orjson.dumps(value, default=_default, option=option).decode("utf-8")

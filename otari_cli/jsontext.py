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


# Characters JSON may carry raw that a terminal acts on or that hide what text says: the C1
# controls (U+009B is a CSI), the line and paragraph separators, the bidirectional
# overrides and isolates, and invisible ones. Written as \u escapes: the same JSON value.
_HIDDEN = (*range(0x80, 0xA0), 0x200B, 0x200E, 0x200F, *range(0x2028, 0x202F), 0x2060)
_ESCAPES = {code: f"\\u{code:04x}" for code in (*_HIDDEN, *range(0x2066, 0x206A), 0xFEFF)}


def escaped(text: str) -> str:
    """JSON text with the characters above written as escapes (`\\u202e`)."""
    return text if text.isascii() else text.translate(_ESCAPES)


def dumps(value: Any, *, pretty: bool = False, sort_keys: bool = False) -> str:
    """JSON text of `value`; Decimals as exact plain numbers; characters a terminal acts on
    escaped (see `escaped`). Raises TypeError on other types."""
    option = orjson.OPT_NON_STR_KEYS
    if pretty:
        option |= orjson.OPT_INDENT_2
    if sort_keys:
        option |= orjson.OPT_SORT_KEYS
    return escaped(orjson.dumps(value, default=_default, option=option).decode("utf-8"))

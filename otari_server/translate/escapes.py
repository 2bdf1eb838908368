"""Unpaired UTF-16 surrogate escapes in JSON text that streams in pieces.

A tool call's arguments stream as JSON text inside a JSON string (OpenAI's
`delta.tool_calls[].function.arguments`, Anthropic's `input_json_delta.partial_json`). JSON's
grammar (RFC 8259, section 7) lets that text hold `\\ud83d` without its low half (half an
emoji); a client that parses the arguments gets a string no UTF-8 encoder takes, and some
parsers (the anthropic SDK's) refuse it. `jsonio.parse` replaces such a surrogate with U+FFFD
in whole answers; `SurrogateMender` does the same to text that arrives piece by piece, where
an escape may be cut anywhere.
"""

from __future__ import annotations

_HEX = frozenset("0123456789abcdefABCDEF")
_REPLACEMENT = "\\ufffd"
# What each character of a low-surrogate escape (\uDC00 to \uDFFF) may be.
_LOW_ESCAPE = ("\\", "u", "dD", "cdefCDEF", _HEX, _HEX)


class SurrogateMender:
    """Rewrites escapes of unpaired UTF-16 surrogates as `\\ufffd` in JSON text fed piece
    by piece, keeping back the end of a piece while the next one may complete an escape
    (at most 11 characters: a high surrogate's escape and part of a low one's).

    `feed(piece)` gives the text that is settled; `flush()`, at the end, the rest.
    """

    def __init__(self) -> None:
        self._held = ""

    def feed(self, piece: str) -> str:
        """The settled part of what was held plus `piece`, mended."""
        text = self._held + piece
        if "\\" not in text:
            self._held = ""
            return text
        settled, self._held = _mend(text, final=False)
        return settled

    def flush(self) -> str:
        """What is still held, mended as the end of the text."""
        rest, self._held = self._held, ""
        return _mend(rest, final=True)[0] if rest else ""


def mended(text: str) -> str:
    """Whole JSON text with every unpaired surrogate escape rewritten as `\\ufffd`."""
    return _mend(text, final=True)[0] if "\\" in text else text


def _mend(text: str, final: bool) -> tuple[str, str]:
    """(the mended text up to where the next piece could change it, the rest held back)."""
    parts: list[str] = []
    start = at = 0
    size = len(text)
    while (slash := text.find("\\", at)) >= 0:
        if slash + 1 >= size or (text[slash + 1] == "u" and slash + 6 > size):
            if final:
                break  # an escape cut off at the very end: invalid JSON, left as it is
            parts.append(text[start:slash])
            return "".join(parts), text[slash:]
        if text[slash + 1] != "u":
            at = slash + 2  # \\ \" \n ...: the second character is never an escape's start
            continue
        digits = text[slash + 2 : slash + 6]
        at = slash + 6
        if not set(digits) <= _HEX:
            continue
        value = int(digits, 16)
        if 0xD800 <= value <= 0xDBFF:
            after = text[at : at + 6]
            if _low_escape(after):
                at += 6  # a pair: one character, as it should be
                continue
            if not final and len(after) < 6 and _may_become_low(after):
                parts.append(text[start:slash])
                return "".join(parts), text[slash:]
        elif not 0xDC00 <= value <= 0xDFFF:
            continue
        parts += (text[start:slash], _REPLACEMENT)
        start = at
    parts.append(text[start:])
    return "".join(parts), ""


def _low_escape(text: str) -> bool:
    """Whether `text` is exactly the escape of a low surrogate."""
    return len(text) == 6 and _may_become_low(text)


def _may_become_low(text: str) -> bool:
    """Whether `text` (at most 6 characters) is the start of a low surrogate's escape."""
    return all(c in allowed for c, allowed in zip(text, _LOW_ESCAPE[: len(text)], strict=True))

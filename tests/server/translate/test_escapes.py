"""SurrogateMender: unpaired surrogate escapes in JSON text streamed in pieces cut anywhere."""

from __future__ import annotations

import json

import pytest

from otari_server.translate.escapes import SurrogateMender, mended

CASES = {
    r'{"q": "x\ud83d"}': r'{"q": "x\ufffd"}',  # a high half alone
    r'{"q": "\udc00!"}': r'{"q": "\ufffd!"}',  # a low half alone
    r'{"q": "x\ud83d\ude00y"}': r'{"q": "x\ud83d\ude00y"}',  # a pair is one character
    r'{"q": "x\uD83D\uDE00"}': r'{"q": "x\uD83D\uDE00"}',  # in capitals too
    r'{"q": "\ud83d\u0041"}': r'{"q": "\ufffd\u0041"}',  # followed by another escape
    r'{"q": "\ud83d\ud83d\ude00"}': r'{"q": "\ufffd\ud83d\ude00"}',
    r'{"\udbff": 1}': r'{"\ufffd": 1}',  # in a key
    r'{"q": "a\\ud83d"}': r'{"q": "a\\ud83d"}',  # an escaped backslash, then plain text
    r'{"q": "\\\ud83d"}': r'{"q": "\\\ufffd"}',  # an escaped backslash, then an escape
    r'{"q": "plain \u00e9 text"}': r'{"q": "plain \u00e9 text"}',
}


@pytest.mark.parametrize(("text", "expected"), CASES.items())
def test_every_way_of_cutting_the_text_gives_the_whole_texts_mending(
    text: str, expected: str
) -> None:
    assert mended(text) == expected
    value = json.loads(expected)
    json.dumps(value, ensure_ascii=False).encode()  # every string is valid UTF-8 now
    for first in range(len(text) + 1):
        for second in range(first, len(text) + 1):
            mender = SurrogateMender()
            pieces = (text[:first], text[first:second], text[second:])
            out = "".join(mender.feed(piece) for piece in pieces) + mender.flush()
            assert out == expected, pieces


def test_only_an_escape_that_may_still_be_completed_is_held_back() -> None:
    mender = SurrogateMender()
    assert mender.feed('{"q": "ab\\ud8') == '{"q": "ab'  # the escape may go on
    assert mender.feed("3d\\u") == ""  # a high half: a low one may follow
    assert mender.feed('0041"}') == '\\ufffd\\u0041"}'  # it did not
    assert mender.flush() == ""
    held = SurrogateMender()
    assert held.feed('"\\ud83d') == '"' and held.flush() == "\\ufffd"  # the end settles it

"""Output: the format follows the destination; markup in data is never interpreted."""

from __future__ import annotations

import csv
import io
import json
import re
from decimal import Decimal
from typing import Any

import pytest

from otari_cli.errors import UsageError
from otari_cli.output import Column, Format, Output, when

ROWS: list[dict[str, Any]] = [
    {"id": "k1", "key_name": "[bold red]boom[/]", "spend": Decimal("0.10"), "meta": {"a": "1"}},
    {"id": "k2", "key_name": None, "spend": Decimal("12.345678901234567890"), "meta": {}},
]
COLUMNS = [Column("ID", "id"), Column("NAME", "key_name"), Column("SPEND", "spend")]


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def make(fmt: Format | None = None, quiet: bool = False, tty: bool = False) -> Output:
    stdout = Tty() if tty else io.StringIO()
    return Output(fmt, quiet=quiet, stdout=stdout, stderr=io.StringIO(), stdin=io.StringIO())


def stdout(out: Output) -> str:
    assert isinstance(out.stdout, io.StringIO)
    return out.stdout.getvalue()


def stderr(out: Output) -> str:
    assert isinstance(out.stderr, io.StringIO)
    return out.stderr.getvalue()


def test_format_defaults_to_table_on_a_terminal_and_json_otherwise() -> None:
    assert make(tty=True).format is Format.TABLE
    assert make(tty=False).format is Format.JSON


def test_json_keeps_api_field_names_and_exact_money() -> None:
    out = make(Format.JSON)
    out.items(ROWS, COLUMNS)
    text = stdout(out)
    assert "12.345678901234567890" in text  # no float rounding
    parsed = json.loads(text, parse_float=Decimal)
    assert parsed[0]["key_name"] == "[bold red]boom[/]"
    assert parsed[1]["spend"] == Decimal("12.345678901234567890")
    assert stderr(out) == ""


def test_table_shows_markup_literally() -> None:
    out = make(Format.TABLE)
    out.items(ROWS, COLUMNS)
    text = stdout(out)
    assert "[bold red]boom[/]" in text
    assert "SPEND" in text and "0.10" in text
    assert "\x1b[" not in text  # not a terminal: no escape codes


def test_table_on_a_terminal_still_shows_markup_literally() -> None:
    out = make(tty=True)
    out.item({"id": "x", "note": "[link=http://evil]click[/link] [red]x"})
    text = stdout(out)
    assert "[link=http://evil]click[/link]" in text
    assert "[red]x" in text


def test_csv_has_every_field_with_a_header() -> None:
    out = make(Format.CSV)
    out.items(ROWS, COLUMNS)
    rows = list(csv.reader(io.StringIO(stdout(out))))
    assert rows[0] == ["id", "key_name", "spend", "meta"]
    assert rows[1] == ["k1", "[bold red]boom[/]", "0.10", '{"a":"1"}']
    assert rows[2][1] == ""


def test_quiet_prints_only_ids() -> None:
    out = make(Format.JSON, quiet=True)
    out.items(ROWS, COLUMNS)
    out.message("chatter")
    assert stdout(out) == "k1\nk2\n"
    assert stderr(out) == ""


def test_quiet_item_uses_the_id_field() -> None:
    out = make(quiet=True)
    out.item({"user_id": "alice", "alias": "A"}, id_field="user_id")
    assert stdout(out) == "alice\n"


def test_empty_list_is_an_empty_json_array() -> None:
    out = make(Format.JSON)
    out.items([], COLUMNS)
    assert json.loads(stdout(out)) == []


def test_messages_go_to_stderr() -> None:
    out = make(Format.JSON)
    out.message("hello")
    out.error("[b]bad[/b]")
    assert stdout(out) == ""
    assert stderr(out) == "hello\nerror: [b]bad[/b]\n"


def test_confirm_without_a_terminal_refuses() -> None:
    with pytest.raises(UsageError, match="--yes"):
        make().confirm("Delete it?")


def test_confirm_shows_the_question_escaped() -> None:
    # The question quotes what the server sent (a price source's version, a name).
    out = Output(Format.JSON, stdout=io.StringIO(), stderr=io.StringIO(), stdin=Tty("n\n"))
    assert out.confirm(f"Write prices from {HOSTILE}?") is False
    assert not CONTROL.search(stderr(out)) and ESCAPED in stderr(out)


@pytest.mark.parametrize(
    ("answer", "expected"), [("y\n", True), ("yes\n", True), ("\n", False), ("n\n", False)]
)
def test_confirm_on_a_terminal_reads_the_answer(answer: str, expected: bool) -> None:
    out = Output(Format.JSON, stdout=io.StringIO(), stderr=io.StringIO(), stdin=Tty(answer))
    assert out.confirm("Delete it?") is expected
    assert "Delete it? [y/N]" in stderr(out)


def test_when_formats_iso_timestamps_in_utc() -> None:
    assert when("2025-01-02T03:04:05.678+02:00") == "2025-01-02 01:04:05"
    assert when(None) == "-"
    assert when("not a time") == "not a time"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


USAGE_HEADERS = ["TIME", "ID", "USER", "MODEL", "ENDPOINT", "IN", "OUT", "COST", "STATUS"]
LONG_MODEL = "openrouter:meta-llama/llama-3.3-70b-instruct-with-a-very-long-suffix"


def _usage_rows() -> list[list[str]]:
    return [
        [
            "2026-12-01 03:00:00",
            f"req-{i:032x}",
            "alice-the-very-long-user-name",
            LONG_MODEL,
            "/v1/chat/completions",
            "1200",
            "350",
            "0.0000000376",
            "success",
        ]
        for i in range(3)
    ]


def test_tables_fit_80_columns_without_breaking_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    terminal = _Terminal()
    Output(Format.TABLE, stdout=terminal)._table(USAGE_HEADERS, _usage_rows(), "(none)")
    # What the terminal shows: the header is bold (ANSI codes take no columns).
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in terminal.getvalue().splitlines()]
    assert len(lines) == 4  # a header and three rows: nothing folded onto a second line
    assert all(len(line) <= 80 for line in lines), lines
    assert lines[0].split() == USAGE_HEADERS  # every column, no header broken
    assert "…" in lines[1] and LONG_MODEL not in lines[1]
    assert lines[1].startswith("2026-12-01")  # the first column keeps a readable prefix
    assert "0.0000000376" in lines[1] and " 1200 " in lines[1]  # nor are numbers


@pytest.mark.parametrize("fmt", [Format.WIDE, Format.TABLE])
def test_wide_and_tables_off_a_terminal_show_values_whole(
    monkeypatch: pytest.MonkeyPatch, fmt: Format
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    out: io.StringIO = _Terminal() if fmt is Format.WIDE else io.StringIO()
    Output(fmt, stdout=out)._table(USAGE_HEADERS, _usage_rows(), "(none)")
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and LONG_MODEL in lines[1] and "…" not in out.getvalue()


def test_an_id_gives_way_and_a_cost_column_with_empty_cells_is_still_never_cut(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `otari keys list` at 80 columns: a UUID first, eight columns in all. The id shrinks to
    # a prefix so that no column is dropped; a money column with "-" cells stays whole.
    monkeypatch.setenv("COLUMNS", "80")
    headers = ["ID", "NAME", "PREFIX", "USER", "ACTIVE", "LAST USED", "CREATED", "COST"]
    rows = [
        [
            "8f7c1a2e-0c3b-4d5e-9f60-1a2b3c4d5e6f",
            "alice-laptop",
            "gw-abc",
            "alice",
            "true",
            "2026-12-01 05:25",
            "2026-11-30 09:00",
            "0.0000000376",
        ],
        [
            "0a1b2c3d-0c3b-4d5e-9f60-1a2b3c4d5e6f",
            "bob-ci",
            "gw-def",
            "bob",
            "false",
            "-",
            "2026-11-30 09:01",
            "-",
        ],
    ]
    terminal = _Terminal()
    Output(Format.TABLE, stdout=terminal)._table(headers, rows, "(none)")
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in terminal.getvalue().splitlines()]
    assert len(lines) == 3 and all(len(line) <= 80 for line in lines), lines
    assert lines[0].split() == [
        "ID",
        "NAME",
        "PREFIX",
        "USER",
        "ACTIVE",
        "LAST",
        "USED",
        "CREATED",
        "COST",
    ]  # every header whole ("LAST USED" is one)
    assert lines[1].startswith("8f7c1a2e-") and rows[0][0] not in lines[1]
    assert lines[1].rstrip().endswith("0.0000000376")


WIDE_ROWS = [["u1", "東京チームの予算担当者", "1.25"], ["u2", "bob 🚀", "0.5"]]


def test_wide_characters_count_as_two_cells_off_and_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rich.cells import cell_len

    piped = io.StringIO()
    Output(Format.TABLE, stdout=piped)._table(["ID", "ALIAS", "SPEND"], WIDE_ROWS, "(none)")
    assert "東京チームの予算担当者" in piped.getvalue() and "…" not in piped.getvalue()
    lines = piped.getvalue().splitlines()
    starts = [
        cell_len(line[: line.index(word)])
        for line, word in zip(lines, ("SPEND", "1.25", "0.5"), strict=True)
    ]
    assert starts[0] == starts[1] == starts[2]  # the columns line up, counted in cells
    monkeypatch.setenv("COLUMNS", "24")
    terminal = _Terminal()
    Output(Format.TABLE, stdout=terminal)._table(["ID", "ALIAS", "SPEND"], WIDE_ROWS, "(none)")
    shown = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in terminal.getvalue().splitlines()]
    assert all(cell_len(line) <= 24 for line in shown), shown
    assert "…" in shown[1] and shown[1].rstrip().endswith("1.25")  # text cut, never the amount


# A model name as a client may send it: clear the screen, ring, rewrite the line, fake a row.
HOSTILE = "gpt-4o\x1b[2J\x07\rspend 0\nk9\u2028\x9b31m\u202eevil\u2066\u200b"
ESCAPED = "gpt-4o\\x1b[2J\\x07\\rspend 0\\nk9\\u2028\\x9b31m\\u202eevil\\u2066\\u200b"
# What must never reach the terminal raw: controls, separators, bidi overrides and isolates.
CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\u200b]")


def without_our_styles(text: str) -> str:
    """`text` without the colours and bold the renderer itself writes on a terminal."""
    return re.sub("\x1b\\[[0-9;]*m", "", text)


@pytest.mark.parametrize("fmt", [Format.TABLE, Format.WIDE])
@pytest.mark.parametrize("tty", [True, False])
def test_tables_show_control_characters_as_escapes(fmt: Format, tty: bool) -> None:
    out = make(fmt, tty=tty)
    out.items([{"id": "k1", "key_name": HOSTILE, "spend": Decimal("1")}], COLUMNS)
    out.item({"id": "k1", "model": HOSTILE})
    out.item({"id": "k1", "model": HOSTILE}, fields=[Column("MODEL", "model")])
    text = without_our_styles(stdout(out))
    assert not CONTROL.search(text)
    assert text.count(ESCAPED) == 3
    assert len(text.splitlines()) == 2 + 3 + 2  # no row was split by the newline


def test_messages_show_control_characters_as_escapes_but_keep_lines() -> None:
    for tty in (True, False):
        out = make(Format.TABLE, tty=tty)
        out.stderr = Tty() if tty else io.StringIO()
        out.error(f"unknown model {HOSTILE}\nsee otari models list")
        out.warning(HOSTILE)
        out.message(HOSTILE)
        text = without_our_styles(stderr(out))
        assert not CONTROL.search(text)
        assert text.count("gpt-4o\\x1b[2J\\x07\\rspend 0") == 3
        assert "\nsee otari models list" in text  # a message's own line break stays


def test_quiet_ids_are_one_per_line_whatever_they_hold() -> None:
    out = make(quiet=True)
    out.items([{"id": "a\nb"}, {"id": "c"}], COLUMNS)
    out.item({"id": "d\x1b[2J"})
    assert stdout(out).splitlines() == ["a\\nb", "c", "d\\x1b[2J"]


def test_json_and_csv_keep_the_exact_value() -> None:
    # JSON writes what a terminal would act on as \u escapes: the same value when parsed.
    out = make(Format.JSON)
    out.items([{"id": "k1", "key_name": HOSTILE}], COLUMNS)
    assert not CONTROL.search(stdout(out).replace("\n", ""))
    assert json.loads(stdout(out))[0]["key_name"] == HOSTILE
    lines = make(Format.JSONL)
    lines.items([{"id": "k1", "key_name": HOSTILE}], COLUMNS)
    lines.stream_lines([json.dumps({"key_name": HOSTILE}, ensure_ascii=False).encode()])
    assert not CONTROL.search(stdout(lines).replace("\n", ""))
    assert [json.loads(line)["key_name"] for line in stdout(lines).splitlines()] == [HOSTILE] * 2
    out = make(Format.CSV)
    out.items([{"id": "k1", "key_name": HOSTILE}], COLUMNS)
    assert list(csv.reader(io.StringIO(stdout(out))))[1][1] == HOSTILE

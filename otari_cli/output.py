"""Output: the one renderer. Tables on a terminal, JSON when piped or asked, CSV, bare ids."""

from __future__ import annotations

import csv
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, TextIO

from otari_cli import jsontext
from otari_cli.errors import UsageError


class Format(StrEnum):
    """How data is written to stdout."""

    TABLE = "table"
    WIDE = "wide"  # a table with every value in full (it may be wider than the terminal)
    JSON = "json"
    JSONL = "jsonl"
    CSV = "csv"


def cell(value: object) -> str:
    """A value as table text: None is '-', money keeps its exact digits."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={cell(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(cell(v) for v in value) or "-"
    if isinstance(value, Decimal):
        return jsontext.plain(value)  # str() would write 3.75E-8
    return str(value)


# C0 and C1 control characters, DEL, the Unicode line and paragraph separators, and the
# characters that reorder or hide text (bidirectional overrides and isolates, zero-width
# space, word joiner, byte order mark): a name must read as what it is.
_HIDING = "\u200b\u200e\u200f\u2028-\u202e\u2060\u2066-\u2069\ufeff"
_CONTROL = re.compile(f"[\x00-\x1f\x7f-\x9f{_HIDING}]")
_CONTROL_BUT_NEWLINE = re.compile(f"[\x00-\x09\x0b-\x1f\x7f-\x9f{_HIDING}]")


def shown(text: str, lines: bool = False) -> str:
    """`text` safe for a terminal: each control character written as its escape (`\\x1b`,
    `\\r`, `\\u2028`), newlines kept only with `lines`. A model or key name is whatever a
    client sent; shown raw, ESC sequences in it would drive the operator's terminal."""
    if text.isprintable():  # nearly every value: no regex pass
        return text
    pattern = _CONTROL_BUT_NEWLINE if lines else _CONTROL
    return pattern.sub(lambda found: found[0].encode("unicode_escape").decode("ascii"), text)


def limit(value: object) -> str:
    """A limit in a detail view: None is `unlimited` (a list's `-` would read as unknown)."""
    return "unlimited" if value is None else cell(value)


def when(value: object) -> str:
    """An ISO timestamp as `YYYY-MM-DD HH:MM:SS` UTC (other text unchanged)."""
    if not isinstance(value, str):
        return cell(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True)
class Column:
    """One table column (or one row of a detail view): a header, the API field it shows,
    and how to show it.

    `of` reads the value from the whole object when it is not one field (a budget's period
    is its duration or its calendar alignment); `optional` leaves the row out of a detail
    view when the value is empty (a price per image on a token-priced model).
    """

    header: str
    field: str
    show: Callable[[object], str] = cell
    of: Callable[[Mapping[str, Any]], object] | None = None
    optional: bool = False
    # Shown in tables only with -o wide (kubectl's rule): what an 80-column table can spare.
    wide: bool = False

    def value(self, data: Mapping[str, Any]) -> object:
        """The value this column shows for `data`."""
        return self.of(data) if self.of is not None else data.get(self.field)


def _csv_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping | list):
        return jsontext.dumps(value, sort_keys=True)
    if isinstance(value, Decimal):
        return jsontext.plain(value)
    return str(value)


class Output:
    """Writes data to stdout in the chosen format and messages to stderr."""

    def __init__(
        self,
        fmt: Format | None = None,
        *,
        quiet: bool = False,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        stdin: TextIO | None = None,
    ) -> None:
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.stdin = stdin or sys.stdin
        self.quiet = quiet
        self.format = fmt or (Format.TABLE if _isatty(self.stdout) else Format.JSON)

    @property
    def tabular(self) -> bool:
        """Whether data is drawn as a table for a person (table or wide)."""
        return self.format in (Format.TABLE, Format.WIDE)

    # data -------------------------------------------------------------------------------------

    def items(
        self, rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], id_field: str = "id"
    ) -> None:
        """A list: a table of `columns`, a JSON array, CSV of every field, or ids."""
        if self.quiet:
            self._write("".join(_id_line(row.get(id_field)) for row in rows))
        elif self.format is Format.JSON:
            self._json(list(rows))
        elif self.format is Format.JSONL:
            self._write("".join(_json_line(row) for row in rows))
        elif self.format is Format.CSV:
            self._csv(rows)
        else:
            columns = [c for c in columns if not c.wide or self.format is Format.WIDE]
            self._table(
                [c.header for c in columns],
                [[c.show(c.value(row)) for c in columns] for row in rows],
                empty="(none)",
            )

    def item(
        self,
        data: Mapping[str, Any],
        id_field: str = "id",
        shows: Mapping[str, Callable[[object], str]] | None = None,
        fields: Sequence[Column] | None = None,
    ) -> None:
        """One object: a field/value table, a JSON object, one CSV row, or its id.

        With `fields`, a table shows those rows in that order (what an operator reads first)
        and nothing else: internal counters and ids stay in JSON and CSV. Without, it shows
        every field as the API names it.
        """
        if self.quiet:
            self._write(_id_line(data.get(id_field)))
        elif self.format is Format.JSON:
            self._json(data)
        elif self.format is Format.JSONL:
            self._write(_json_line(data))
        elif self.format is Format.CSV:
            self._csv([data])
        elif fields is not None:
            rows = []
            for column in fields:
                value = column.value(data)
                if not (column.optional and value in (None, [], {})):
                    rows.append([column.header, column.show(value)])
            self._table(["field", "value"], rows, empty="(empty)")
        else:
            shows = shows or {}
            rows = [
                [k, shows.get(k, when if k.endswith("_at") else cell)(v)] for k, v in data.items()
            ]
            self._table(["field", "value"], rows, empty="(empty)")

    def stream(
        self, rows: Iterable[Mapping[str, Any]], columns: Sequence[Column], id_field: str = "id"
    ) -> int:
        """Like `items`, but each row is written as it arrives: memory stays one page.

        JSON is still one array, CSV takes its header from the first row. A table needs every
        row to size its columns, so it is collected. With a terminal on stderr a progress
        line (rows so far, rate) is shown there; stdout only ever gets the data. Returns the
        number of rows written.
        """
        if self.tabular and not self.quiet:
            collected = list(self._progress(rows))
            self.items(collected, columns, id_field)
            return len(collected)
        count = 0
        writer: Any = None
        for row in self._progress(rows):
            if self.quiet:
                self.stdout.write(_id_line(row.get(id_field)))
            elif self.format is Format.JSONL:
                self.stdout.write(_json_line(row))
            elif self.format is Format.CSV:
                if writer is None:
                    writer = csv.writer(self.stdout, lineterminator="\n")
                    fields = list(row)
                    writer.writerow(fields)
                writer.writerow([_csv_value(row.get(f)) for f in fields])
            else:
                # One compact object per line: still one JSON array, written as each row
                # arrives (indenting 1M rows costs minutes for nothing a script reads).
                self.stdout.write(("[\n" if count == 0 else ",\n") + _json_line(row)[:-1])
            count += 1
        if self.format is Format.JSON and not self.quiet:
            self.stdout.write("\n]\n" if count else "[]\n")
        self.stdout.flush()
        return count

    def stream_lines(self, lines: Iterable[bytes]) -> int:
        """Write items given as their compact JSON text (Gateway.walk(lines=True)) in the
        JSON or JSON Lines format, exactly as `stream` writes the decoded items, without
        decoding them. Returns the number written."""
        count = 0
        write = self.stdout.write
        jsonl = self.format is Format.JSONL
        for line in self._progress(lines):
            text = jsontext.escaped(line.decode("utf-8"))
            if jsonl:
                write(text + "\n")
            else:
                write(("[\n" if count == 0 else ",\n") + text)
            count += 1
        if not jsonl:
            write("\n]\n" if count else "[]\n")
        self.stdout.flush()
        return count

    def _progress(self, rows: Iterable[Any]) -> Iterator[Any]:
        if self.quiet or not _isatty(self.stderr):
            yield from rows
            return
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        console = Console(file=self.stderr, markup=False, highlight=False, emoji=False)
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.completed:,} rows"),
            _rate_column(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task("rows", total=None)
            for row in rows:
                yield row
                progress.advance(task)

    def text(self, lines: Iterable[str]) -> None:
        """Raw text lines to stdout, as they are (log lines)."""
        for line in lines:
            self._write(line if line.endswith("\n") else line + "\n")

    # messages ---------------------------------------------------------------------------------

    def message(self, text: str) -> None:
        """Information for a person, on stderr; silenced by --quiet."""
        if not self.quiet:
            self._err(text, style=None)

    def warning(self, text: str) -> None:
        """A warning on stderr."""
        self._err(f"warning: {text}", style="yellow")

    def error(self, text: str) -> None:
        """An error on stderr."""
        self._err(f"error: {text}", style="bold red")

    def detail(self, text: str) -> None:
        """Supporting text for an error (a traceback, log lines) on stderr, as it is."""
        self.stderr.write(text if text.endswith("\n") else text + "\n")
        self.stderr.flush()

    def confirm(self, question: str) -> bool:
        """Ask on a terminal; without one, refuse (exit 2) so scripts must pass --yes."""
        if not _isatty(self.stdin):
            raise UsageError("refusing to proceed without confirmation: pass --yes")
        self.stderr.write(f"{shown(question)} [y/N]: ")  # one line, whatever it quotes
        self.stderr.flush()
        answer = self.stdin.readline().strip().lower()
        return answer in ("y", "yes")

    # writers ----------------------------------------------------------------------------------

    def _write(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    def _json(self, data: object) -> None:
        text = jsontext.dumps(data, pretty=True)
        self._write(text + "\n")

    def _csv(self, rows: Sequence[Mapping[str, Any]]) -> None:
        fields: dict[str, None] = {}
        for row in rows:
            fields.update(dict.fromkeys(row))
        writer = csv.writer(self.stdout, lineterminator="\n")
        writer.writerow(fields)
        writer.writerows([_csv_value(row.get(f)) for f in fields] for row in rows)
        self.stdout.flush()

    def _table(self, headers: Sequence[str], rows: Sequence[Sequence[str]], empty: str) -> None:
        """Rows under headers. On a terminal the table fits its width: a header is never
        broken and a long value ends in an ellipsis (-o wide, JSON and CSV show it whole); off
        a terminal, or with -o wide, nothing is cut or wrapped."""
        # Rich is imported only here: JSON output and scripts never pay for it.
        from rich.cells import cell_len
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        if not rows:
            self.message(empty)
            return
        # Values come from the server, and from whoever named a model or a key: a control
        # character (ESC, CR, BEL) would drive the operator's terminal, so it is shown as an
        # escape such as \x1b, before the widths are measured.
        rows = [[shown(value) for value in row] for row in rows]
        fit = self.format is Format.TABLE and _isatty(self.stdout)
        # Widths in terminal cells, not characters: 東 or an emoji takes two.
        widths = [
            max(cell_len(header), *(cell_len(row[i]) for row in rows))
            for i, header in enumerate(headers)
        ]
        console = Console(
            file=self.stdout,
            markup=False,
            highlight=False,
            emoji=False,
            width=None if fit else sum(widths) + 2 * len(widths),
        )
        if fit:
            # Numbers (tokens, money) are never cut: a truncated amount would mislead. A
            # column of numbers may have empty cells ("-", a refused request has no cost).
            floors = [
                width
                if all(_NUMBER.fullmatch(row[i]) or row[i] in _EMPTY for row in rows)
                else cell_len(header)
                for i, (header, width) in enumerate(zip(headers, widths, strict=True))
            ]
            # The id gives way too (down to a recognisable prefix): names before UUIDs.
            floors[0] = min(widths[0], max(floors[0], _ID_FLOOR))
            widths = _fitted(widths, floors, console.width)
        table = Table(box=None, pad_edge=False, header_style="bold")
        for header, width in zip(headers, widths, strict=True):
            table.add_column(
                header,
                no_wrap=True,
                min_width=min(cell_len(header), width),
                max_width=width,
                overflow="ellipsis",
            )
        for row in rows:
            # Text(): server-supplied strings are never parsed as Rich markup.
            table.add_row(*(Text(value) for value in row))
        console.print(table)

    def _err(self, text: str, style: str | None) -> None:
        text = shown(text, lines=True)  # messages quote names from the server (see _table)
        if style and _isatty(self.stderr):
            from rich.console import Console
            from rich.text import Text

            Console(file=self.stderr, markup=False, highlight=False, emoji=False).print(
                Text(text, style=style)
            )
        else:
            self.stderr.write(text + "\n")
            self.stderr.flush()


def _id_line(value: object) -> str:
    """An id on its own line (--quiet): a newline in it cannot make a second id."""
    return shown(str(value)) + "\n"


def _json_line(data: object) -> str:
    return jsontext.dumps(data) + "\n"


def _rate_column() -> Any:
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Rows per second so far."""

        def render(self, task: Any) -> Text:
            return Text(f"{task.speed or 0:,.0f} rows/s")

    return RateColumn()


_NUMBER = re.compile(r"-?[0-9][0-9,]*(\.[0-9]+)?")
_EMPTY = frozenset({"", "-"})
_ID_FLOOR = 11  # characters of an id kept in a fitted table (-o wide shows it whole)


def _fitted(widths: list[int], floors: list[int], space: int) -> list[int]:
    """Column widths that fit `space` (two columns of gap each): the widest columns give
    way first, none below its floor (`floors`: its header, a number's full width)."""
    widths = list(widths)
    while sum(widths) + 2 * (len(widths) - 1) > space:
        shrinkable = [i for i in range(len(widths)) if widths[i] > floors[i]]
        if not shrinkable:
            break  # a terminal narrower than the headers: Rich crops what is left
        widest = max(shrinkable, key=lambda i: widths[i])
        widths[widest] -= 1
    return widths


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False

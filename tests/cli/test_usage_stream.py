"""`otari usage --all` streams rows by cursor; `otari usage prune`; the Output.stream writer."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from otari_cli.main import app
from otari_cli.output import Format, Output
from otari_server.storage.db import migrate
from tests.support.servers import MASTER_KEY, make_settings, running
from tests.support.usage_rows import insert, row

runner = CliRunner()
T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _rows_checking(out: io.StringIO, count: int) -> Iterator[dict[str, Any]]:
    """Rows that check, before giving the next, that the previous one is already written."""
    for i in range(count):
        if i:
            assert f"r{i - 1}" in out.getvalue(), f"row r{i - 1} was held back"
        yield {"id": f"r{i}", "cost": Decimal("0.25") * i, "user_id": None}


def test_stream_writes_each_row_as_it_arrives() -> None:
    for fmt in (Format.JSON, Format.JSONL, Format.CSV):
        out = io.StringIO()
        assert Output(fmt, stdout=out, stderr=io.StringIO()).stream(_rows_checking(out, 3), []) == 3
        text = out.getvalue()
        if fmt is Format.JSON:
            assert json.loads(text, parse_float=Decimal) == [
                {"id": "r0", "cost": 0, "user_id": None},
                {"id": "r1", "cost": Decimal("0.25"), "user_id": None},
                {"id": "r2", "cost": Decimal("0.50"), "user_id": None},
            ]
        elif fmt is Format.JSONL:
            assert text.splitlines() == [
                '{"id":"r0","cost":0.00,"user_id":null}',
                '{"id":"r1","cost":0.25,"user_id":null}',
                '{"id":"r2","cost":0.50,"user_id":null}',
            ]
        else:
            assert list(csv.reader(io.StringIO(text))) == [
                ["id", "cost", "user_id"],
                ["r0", "0.00", ""],
                ["r1", "0.25", ""],
                ["r2", "0.50", ""],
            ]
    empty = io.StringIO()
    Output(Format.JSON, stdout=empty).stream(iter([]), [])
    assert json.loads(empty.getvalue()) == []


def _otari(url: str, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--url", url, "--master-key", MASTER_KEY, *args])
    return result.exit_code, result.stdout, result.stderr


def test_usage_all_walks_the_cursor_in_every_format(database_url: str) -> None:
    migrate(database_url)
    # 2,500 rows, some sharing a timestamp: three pages of 1,000 by cursor.
    insert(
        database_url,
        [
            row(
                f"r{i:05d}",
                T0 + timedelta(seconds=i // 3),
                cost="0.25",
                user_id="alice" if i % 2 else "bob",
            )
            for i in range(2500)
        ],
    )
    newest_first = [f"r{i:05d}" for i in reversed(range(2500))]
    with running(make_settings(database_url)) as url:
        code, out, err = _otari(url, "usage", "--all", "-o", "jsonl")
        assert code == 0, err
        lines = [json.loads(line, parse_float=Decimal) for line in out.splitlines()]
        assert [r["id"] for r in lines] == newest_first
        assert sum(r["cost"] for r in lines) == Decimal("625")
        assert err == ""  # no terminal on stderr: no progress line
        code, out, _ = _otari(url, "usage", "--all", "-o", "json", "--user", "alice")
        assert [r["id"] for r in json.loads(out)] == [i for i in newest_first if int(i[1:]) % 2]
        code, out, _ = _otari(url, "usage", "--all", "-o", "csv")
        table = list(csv.DictReader(io.StringIO(out)))
        assert [r["id"] for r in table] == newest_first and table[0]["cost"] == "0.25"
        code, out, _ = _otari(url, "usage", "--limit", "1500", "-q")
        assert out.split() == newest_first[:1500]
        code, out, _ = _otari(url, "usage", "--limit", "3", "-o", "json")
        assert [r["id"] for r in json.loads(out)] == newest_first[:3]


def test_usage_prune_dry_run_then_prune(database_url: str) -> None:
    migrate(database_url)
    insert(database_url, [row("old", T0, cost="1.5"), row("new", T0 + timedelta(days=2))])
    with running(make_settings(database_url)) as url:
        code, out, err = _otari(
            url, "usage", "prune", "--before", "2026-03-02", "--dry-run", "-o", "json"
        )
        assert code == 0, err
        assert json.loads(out, parse_float=Decimal) == {
            "before": "2026-03-02T00:00:00+00:00",
            "rows": 1,
            "cost": Decimal("1.5"),
            "dry_run": True,
        }
        code, out, err = _otari(url, "usage", "prune", "--before", "2026-03-02", "-o", "json")
        assert code == 2 and "--yes" in err and out == ""  # a script must say so: it deletes
        code, out, _ = _otari(
            url, "usage", "prune", "--before", "2026-03-02", "--yes", "-o", "json"
        )
        assert json.loads(out)["rows"] == 1 and json.loads(out)["dry_run"] is False
        code, out, _ = _otari(url, "usage", "--all", "-q")
        assert out.split() == ["new"]
        code, _, err = _otari(url, "usage", "prune", "--before", "someday")
        assert code == 2 and "someday" in err


def test_usage_summary_table_json_and_csv(database_url: str) -> None:
    migrate(database_url)
    now = datetime.now(UTC).replace(microsecond=0)
    day1, day2 = now - timedelta(days=2), now - timedelta(days=1)
    insert(
        database_url,
        [
            row("a1", day1, cost="0.0375", prompt=100, completion=10),
            row("a2", day2, cost="1.5", status="error", prompt=7, completion=0),
            row("b1", day2, user_id="bob", model="claude:sonnet", cost="0.25"),
            row("old", now - timedelta(days=30), cost="100"),  # before the default --since 7d
        ],
    )
    with running(make_settings(database_url)) as url:
        code, out, err = _otari(url, "usage", "summary", "-o", "json")
        assert code == 0, err
        summary = json.loads(out, parse_float=Decimal)  # the gateway's shape, total apart
        assert summary["groups"] == [
            {
                "user_id": "alice",
                "requests": 2,
                "errors": 1,
                "prompt_tokens": 107,
                "completion_tokens": 10,
                "cost": Decimal("1.5375"),
            },
            {
                "user_id": "bob",
                "requests": 1,
                "errors": 0,
                "prompt_tokens": 10,
                "completion_tokens": 5,
                "cost": Decimal("0.25"),
            },
        ]
        assert summary["total"] == {
            "requests": 3,
            "errors": 1,
            "prompt_tokens": 117,
            "completion_tokens": 15,
            "cost": Decimal("1.7875"),
        }
        code, out, _ = _otari(url, "usage", "summary", "-o", "jsonl")
        assert [json.loads(line)["user_id"] for line in out.splitlines()] == ["alice", "bob"]
        code, out, _ = _otari(
            url, "usage", "summary", "--by", "model", "--user", "alice", "-o", "csv"
        )
        assert list(csv.reader(io.StringIO(out))) == [
            ["model", "requests", "errors", "prompt_tokens", "completion_tokens", "cost", "total"],
            ["openai:gpt-4o", "2", "1", "107", "10", "1.5375", "false"],
            ["", "2", "1", "107", "10", "1.5375", "true"],
        ]
        code, out, _ = _otari(url, "usage", "summary", "--by", "day", "-o", "table")
        lines = out.splitlines()
        assert lines[0].split() == ["DAY", "REQUESTS", "ERRORS", "IN", "OUT", "COST"]
        assert lines[1].split()[:6] == [day1.strftime("%Y-%m-%d"), "1", "0", "100", "10", "0.0375"]
        # The costliest day gets the full bar; the others a proportional one.
        assert lines[2].split()[6] == "█" * 30 and lines[1].split()[6] == "█"
        assert lines[3].split() == ["TOTAL", "3", "1", "117", "15", "1.7875"]
        code, out, _ = _otari(
            url, "usage", "summary", "--since", "60d", "--model", "openai:gpt-4o", "-o", "json"
        )
        assert json.loads(out, parse_float=Decimal)["total"]["cost"] == Decimal("101.5375")
        code, _, err = _otari(url, "usage", "summary", "--by", "team")
        assert code == 2 and "team" in err


def test_usage_summary_by_day_bars_fit_80_columns(database_url: str) -> None:
    # The bar was always 30 blocks: with long costs it wrapped onto a second line at 80.
    migrate(database_url)
    now = datetime.now(UTC).replace(microsecond=0)
    insert(
        database_url,
        [
            row("a1", now - timedelta(days=2), cost="119.17500025", prompt=14982, completion=7497),
            row("a2", now - timedelta(days=1), cost="13.0000000001", prompt=260, completion=130),
        ],
    )
    with running(make_settings(database_url)) as url:
        result = runner.invoke(
            app,
            [
                "--url",
                url,
                "--master-key",
                MASTER_KEY,
                "usage",
                "summary",
                "--by",
                "day",
                "-o",
                "table",
            ],
            env={"COLUMNS": "80"},
        )
        assert result.exit_code == 0, result.stderr
        lines = result.stdout.splitlines()
        assert len(lines) == 4, result.stdout  # header, two days, total: nothing wrapped
        assert all(len(line.rstrip()) <= 80 for line in lines)
        first, second = lines[1].split(), lines[2].split()
        assert first[:6] == [
            (now - timedelta(days=2)).strftime("%Y-%m-%d"),
            "1",
            "0",
            "14982",
            "7497",
            "119.17500025",
        ]
        bar = len(first[6])  # the costliest day gets the whole width left
        assert 0 < bar <= 30 and len(lines[1].rstrip()) == 80
        assert len(second[6]) == round(Decimal("13.0000000001") / Decimal("119.17500025") * bar)


def test_usage_table_names_keys_labels_utc_and_says_how_many_match(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate(database_url)
    with running(make_settings(database_url)) as url:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {MASTER_KEY}"}) as api:
            named = api.post("/v1/keys", json={"key_name": "ci-runner"}).json()["id"]
            unnamed = api.post("/v1/keys", json={}).json()["id"]
        insert(
            database_url,
            [
                row(f"r{i}", T0 + timedelta(minutes=i), api_key_id=named if i % 2 else unnamed)
                for i in range(5)
            ],
        )
        code, out, err = _otari(url, "usage", "--limit", "2", "-o", "wide")
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0].split()[:4] == ["TIME", "(UTC)", "ID", "USER"]
        assert lines[0].split()[4] == "KEY"
        # Newest first: r4 (the unnamed key shows its id), r3 (the named key, by name).
        assert lines[1].split()[:5] == ["2026-03-01", "12:04:00", "r4", "alice", unnamed]
        assert lines[2].split()[:5] == ["2026-03-01", "12:03:00", "r3", "alice", "ci-runner"]
        assert len(lines) == 3
        assert err.strip() == "showing 2 of 5 (use --all)"
        code, out, err = _otari(url, "usage", "--limit", "2", "--key", named, "-o", "json")
        assert [r["id"] for r in json.loads(out)] == ["r3", "r1"] and err == ""
        code, out, err = _otari(url, "usage", "--limit", "1", "--key", unnamed, "-o", "jsonl")
        assert [json.loads(line)["id"] for line in out.splitlines()] == ["r4"]
        assert err.strip() == "showing 1 of 3 (use --all)"
        # --local: this machine's zone, named in the header (+05:30 has no DST to trip on).
        monkeypatch.setenv("TZ", "Asia/Kolkata")
        time.tzset()
        try:
            code, out, err = _otari(url, "usage", "--limit", "1", "--local", "-o", "wide")
        finally:
            monkeypatch.undo()
            time.tzset()
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0].split()[:2] == ["TIME", "(IST)"]
        assert lines[1].split()[:3] == ["2026-03-01", "17:34:00", "r4"]


def test_usage_json_export_is_the_gateways_rows_exactly(database_url: str) -> None:
    migrate(database_url)
    insert(
        database_url,
        [
            {
                **row(f"r{i}", T0 + timedelta(seconds=i), cost="0.0000000375", user_id=None),
                "error_message": 'a "quoted"\nline é \u2028',
            }
            for i in range(1203)
        ],
    )
    with running(make_settings(database_url)) as url:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {MASTER_KEY}"}) as api:
            served = []
            page = api.get("/v1/usage", params={"limit": 1000})
            served += json.loads(page.text, parse_float=Decimal)
            page = api.get(page.links["next"]["url"])
            served += json.loads(page.text, parse_float=Decimal)
        code, out, err = _otari(url, "usage", "--all", "-o", "json")
        assert code == 0, err
        assert json.loads(out, parse_float=Decimal) == served and len(served) == 1203
        assert served[0]["cost"] == Decimal("0.0000000375")
        assert out.startswith("[\n{") and out.endswith("}\n]\n")
        code, out, _ = _otari(url, "usage", "--all", "-o", "jsonl")
        # Split on newlines only (str.splitlines would also split at the U+2028 inside).
        assert [json.loads(line, parse_float=Decimal) for line in out.split("\n")[:-1]] == served

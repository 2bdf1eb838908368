"""GET /v1/usage and /v1/users/{id}/usage: cursor pages with Link rel="next", new filters."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta

import httpx
from starlette.testclient import TestClient

from otari_server.jsonio import loads
from tests.support.factories import MASTER, make_user
from tests.support.usage_rows import insert, row

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _next(response: httpx.Response) -> str | None:
    link = response.headers.get("link")
    if link is None:
        return None
    match = re.fullmatch(r'<([^>]+)>; rel="next"', link)
    assert match, link
    return match.group(1)


def _walk(client: TestClient, url: str) -> tuple[list[str], int]:
    ids: list[str] = []
    pages = 0
    next_url: str | None = url
    while next_url is not None:
        response = client.get(next_url, headers=MASTER)
        assert response.status_code == 200, response.text
        ids += [r["id"] for r in response.json()]
        pages += 1
        next_url = _next(response)
    return ids, pages


def _seed(database_url: str) -> None:
    # Three rows share one timestamp: the cursor must order them by id, never skip or repeat.
    insert(
        database_url,
        [
            row("r1", T0),
            row("r2", T0 + timedelta(minutes=1), user_id="bob", api_key_id="key-b"),
            row("r3", T0 + timedelta(minutes=2), model="claude:sonnet", status="error"),
            row("r4a", T0 + timedelta(minutes=2), user_id="bob", api_key_id="key-b"),
            row("r4b", T0 + timedelta(minutes=2)),
            row("r5", T0 + timedelta(minutes=3), model="claude:sonnet"),
            row("r6", T0 + timedelta(minutes=4), status="client_disconnected"),
        ],
    )


def test_cursor_pages_walk_every_row_once_in_order(client: TestClient, database_url: str) -> None:
    _seed(database_url)
    everything = [r["id"] for r in client.get("/v1/usage", headers=MASTER).json()]
    assert everything == ["r6", "r5", "r4b", "r4a", "r3", "r2", "r1"]
    ids, pages = _walk(client, "/v1/usage?limit=2")
    assert ids == everything and pages == 4  # 2 + 2 + 2 + 1: the short page has no Link
    # A full last page links to an empty one.
    ids, pages = _walk(client, "/v1/usage?limit=7")
    assert ids == everything and pages == 2
    # skip keeps working, and its full pages link onwards by cursor (filters kept).
    first = client.get("/v1/usage?skip=1&limit=3&user_id=alice", headers=MASTER)
    assert [r["id"] for r in first.json()] == ["r5", "r4b", "r3"]
    rest, _ = _walk(client, str(_next(first)))
    assert rest == ["r1"]
    assert "skip=" not in str(_next(first)) and "user_id=alice" in str(_next(first))


def test_new_filters_key_model_status(client: TestClient, database_url: str) -> None:
    _seed(database_url)

    def ids(query: str) -> list[str]:
        response = client.get(f"/v1/usage?{query}", headers=MASTER)
        assert response.status_code == 200, response.text
        return [r["id"] for r in response.json()]

    assert ids("api_key_id=key-b") == ["r4a", "r2"]
    assert ids("model=claude:sonnet") == ["r5", "r3"]
    assert ids("status=error&status=client_disconnected") == ["r6", "r3"]
    assert ids("model=openai:gpt-4o&api_key_id=key-a&status=success") == ["r4b", "r1"]
    assert ids("api_key_id=key-b&limit=1") == ["r4a"]
    walked, _ = _walk(client, "/v1/usage?api_key_id=key-a&limit=1")
    assert walked == ["r6", "r5", "r4b", "r3", "r1"]


def test_bad_cursors_are_400_and_write_nothing(client: TestClient, database_url: str) -> None:
    _seed(database_url)
    for bad in ("nonsense", "W10", "WyJ4IiwxXQ"):  # garbage, [], ["x", 1]
        response = client.get(f"/v1/usage?after={bad}", headers=MASTER)
        assert response.status_code == 400, (bad, response.text)
        assert "after" in response.text
    link = _next(client.get("/v1/usage?limit=1", headers=MASTER))
    both = client.get(f"{link}&skip=2", headers=MASTER)
    assert both.status_code == 400 and "not both" in both.text


def test_hostile_cursors_are_400_not_500(client: TestClient, database_url: str) -> None:
    _seed(database_url)
    nested = base64.urlsafe_b64encode(b"[" * 3000).decode()  # past json's recursion limit
    nul_id = base64.urlsafe_b64encode(
        json.dumps(["2026-03-01T12:00:00+00:00", "r\u0000"]).encode()
    ).decode()
    for bad in (nested, nul_id):
        response = client.get(f"/v1/usage?after={bad}", headers=MASTER)
        assert response.status_code == 400, response.text
        assert "after" in response.text
        response = client.get(f"/v1/users/alice/usage?after={bad}", headers=MASTER)
        assert response.status_code in (400, 404), response.text


def test_user_usage_pages_by_cursor(client: TestClient, database_url: str) -> None:
    make_user(client, "alice")
    _seed(database_url)
    ids, pages = _walk(client, "/v1/users/alice/usage?limit=2")
    assert ids == ["r6", "r5", "r4b", "r3", "r1"] and pages == 3
    skipped = client.get("/v1/users/alice/usage?skip=4", headers=MASTER).json()
    assert [r["id"] for r in skipped] == ["r1"]
    assert client.get("/v1/users/ghost/usage?after=W10", headers=MASTER).status_code == 400
    assert client.get("/v1/users/ghost/usage", headers=MASTER).status_code == 404


def test_json_lines_pages_hold_the_same_rows_and_links(
    client: TestClient, database_url: str
) -> None:
    insert(
        database_url,
        [
            row(
                f"r{i}",
                T0 + timedelta(minutes=i),
                cost="0.0000000375",
                user_id=None if i == 1 else "alice",
            )
            for i in range(3)
        ]
        + [
            {
                **row("odd", T0 + timedelta(minutes=9), status="error"),
                "error_message": 'line\nbreak "quoted" \u2028 é',
            }
        ],
    )
    as_json = client.get("/v1/usage?limit=2", headers=MASTER)
    as_lines = client.get("/v1/usage?limit=2", headers={**MASTER, "Accept": "application/x-ndjson"})
    assert as_lines.status_code == 200
    assert as_lines.headers["content-type"] == "application/x-ndjson"
    lines = as_lines.content.split(b"\n")
    assert lines[-1] == b"" and len(lines) == 3  # one row per line, each line ended
    assert [loads(line) for line in lines[:-1]] == loads(as_json.text)
    assert loads(lines[0])["error_message"] == 'line\nbreak "quoted" \u2028 é'
    # The same bytes per row as the JSON array's elements, and the same next link.
    assert as_json.content == b"[" + b",".join(lines[:-1]) + b"]"
    assert _next(as_lines) == _next(as_json) is not None


def test_include_total_counts_every_matching_row(client: TestClient, database_url: str) -> None:
    insert(
        database_url,
        [
            row(f"r{i}", T0 + timedelta(minutes=i), user_id="alice" if i % 3 else "bob")
            for i in range(7)
        ],
    )
    plain_page = client.get("/v1/usage?limit=2", headers=MASTER)
    assert "x-total-count" not in plain_page.headers
    counted = client.get("/v1/usage?limit=2&include_total=true", headers=MASTER)
    assert counted.headers["x-total-count"] == "7" and len(counted.json()) == 2
    alice = client.get("/v1/usage?limit=1&include_total=true&user_id=alice", headers=MASTER)
    assert alice.headers["x-total-count"] == "4"
    late = client.get(
        f"/v1/usage?limit=1&include_total=true&start_date="
        f"{(T0 + timedelta(minutes=5)).isoformat().replace('+', '%2B')}",
        headers=MASTER,
    )
    assert late.headers["x-total-count"] == "2"

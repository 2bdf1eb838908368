"""The access log: one line per request, as JSON for log shippers, with the client's address
taken from X-Forwarded-For only from trusted proxies (forwarded_allow_ips)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from tests.support.fakes import FakeOpenAI
from tests.support.procs import admin, budgeted_key, fake_provider, served, wait_until

UPSTREAM_KEY = "sk-upstream-access-log-0123456789"
MODEL = "fake:gpt-4o-mini"


def access_lines(log: str) -> list[dict[str, Any]]:
    lines = [
        json.loads(line, parse_float=Decimal) for line in log.splitlines() if line.startswith("{")
    ]
    return [line for line in lines if line.get("logger") == "otari.access"]


def test_every_request_has_one_json_access_line(tmp_path: Path, sqlite_url: str) -> None:
    with (
        FakeOpenAI(api_key=UPSTREAM_KEY) as fake,
        served(
            tmp_path,
            sqlite_url,
            providers=fake_provider(fake.base_url, UPSTREAM_KEY),
            log_format="json",
            log_level="info",
            forwarded_allow_ips="127.0.0.1",
        ) as gateway,
        admin(gateway.url) as client,
    ):
        key = budgeted_key(client, "alice", "1", MODEL, "2000")
        answer = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            timeout=30,
            headers={"Authorization": f"Bearer {key}", "X-Forwarded-For": "203.0.113.7"},
            json={
                "model": MODEL,
                "max_tokens": 10,
                "messages": [{"role": "user", "content": "hi"}],
            },
        )
        assert answer.status_code == 200
        request_id = answer.headers["x-request-id"]
        refused = httpx.get(f"{gateway.url}/v1/keys", timeout=30)
        assert refused.status_code == 401
        # Wait for the two lines asserted below: a count of lines can be reached by the
        # start-up's readiness probes before the refused request's line is written.
        wait_until(
            lambda: (
                {(line["method"], line["path"]) for line in access_lines(gateway.log())}
                >= {("POST", "/v1/chat/completions"), ("GET", "/v1/keys")}
            ),
            10,
            "the access lines",
        )
        lines = access_lines(gateway.log())
    [chat] = [line for line in lines if line["request_id"] == request_id]
    assert (chat["method"], chat["path"], chat["status"]) == ("POST", "/v1/chat/completions", 200)
    assert chat["client"] == "203.0.113.7"  # from a trusted proxy (loopback)
    assert (chat["model"], chat["user"], chat["outcome"]) == (MODEL, "alice", "success")
    assert chat["cost"] == Decimal(fake.last.usage["completion_tokens"]) * Decimal("0.002")
    assert chat["latency_ms"] > 0 and chat["key"]
    assert [
        line["status"] for line in lines if line["path"] == "/v1/keys" and line["method"] == "GET"
    ] == [401]
    assert UPSTREAM_KEY not in gateway.log() and key not in gateway.log()


def test_forwarded_for_is_ignored_from_an_untrusted_peer(tmp_path: Path, sqlite_url: str) -> None:
    with served(
        tmp_path, sqlite_url, log_format="json", log_level="info", forwarded_allow_ips="192.0.2.1"
    ) as gateway:
        httpx.get(f"{gateway.url}/health", headers={"X-Forwarded-For": "203.0.113.7"}, timeout=30)
        wait_until(
            lambda: any(line["path"] == "/health" for line in access_lines(gateway.log())),
            10,
            "the line",
        )
        [line] = [line for line in access_lines(gateway.log()) if line["path"] == "/health"]
    assert line["client"] == "127.0.0.1"


def test_what_a_client_puts_in_a_url_cannot_forge_or_break_a_text_log_line(
    tmp_path: Path, sqlite_url: str
) -> None:
    forged = "2026-12-02 16:00:00,000 WARNING otari: FAKE LINE"
    with served(tmp_path, sqlite_url, log_level="info") as gateway:
        for path in (
            "/v1/models%0a" + forged.replace(" ", "%20") + "%1b%5b31m",  # newline and ESC
            "/v1/chat/completions%00",  # NUL, refused at the edge
        ):
            httpx.get(f"{gateway.url}{path}", timeout=30)
        wait_until(lambda: gateway.log().count("/v1/") >= 2, 10, "both access lines")
        raw = gateway.log_path.read_bytes()
    assert b"\x00" not in raw and b"\x1b" not in raw
    assert not any(line.startswith(forged) for line in raw.decode().splitlines())
    assert "GET /v1/models\\n" + forged + "\\x1b[31m 404" in raw.decode()
    assert "GET /v1/chat/completions\\x00 400" in raw.decode()

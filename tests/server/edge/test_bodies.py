"""Body limits on every route, chunked or not; management writes check the master key first
(issue 11 item 8)."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.servers import MASTER_KEY, make_settings, running

LIMIT = 1000


@pytest.fixture
def url(sqlite_url: str) -> Iterator[str]:
    with running(make_settings(sqlite_url, max_body_bytes=LIMIT)) as served:
        yield served


def chunks(total: int, size: int = 100) -> Iterator[bytes]:
    """A body of `total` bytes sent chunked (no Content-Length)."""
    yield b'{"filler": "'
    for _ in range((total - 14) // size):
        yield b"x" * size
    yield b'"}'


@pytest.mark.parametrize(
    "method,path",
    [
        ("POST", "/v1/keys"),
        ("POST", "/api/v1/users"),
        ("PATCH", "/v1/budgets/b1"),
        ("POST", "/v1/pricing"),
        ("POST", "/v1/batches"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/messages"),
        ("POST", "/v1/messages/count_tokens"),
        ("POST", "/v1/embeddings"),
    ],
)
def test_a_chunked_body_over_the_limit_is_refused_on_every_route(
    url: str, method: str, path: str
) -> None:
    reply = httpx.request(
        method,
        url + path,
        content=chunks(6 * LIMIT),
        headers={"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"},
    )
    assert reply.status_code == 413, reply.text
    message = f"Request body is over the {LIMIT}-byte limit"
    body = reply.json()
    if path.endswith("/messages") or "count_tokens" in path:
        assert body == {"type": "error", "error": {"type": "request_too_large", "message": message}}
    elif path.startswith(("/v1/keys", "/api/v1/users", "/v1/budgets", "/v1/pricing")):
        assert body == {"detail": message}
    else:
        assert body["error"]["message"] == message
        assert body["error"]["code"] == "request_too_large"


def test_a_chunked_body_under_the_limit_still_works(url: str) -> None:
    reply = httpx.post(
        url + "/v1/budgets",
        content=iter([b'{"max_budget":', b" 2.5}"]),
        headers={"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"},
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["max_budget"] == 2.5


def open_request(url: str, method: str, path: str, headers: dict[str, str]) -> socket.socket:
    """A raw connection that sent the request head and one chunk, and never ends the body."""
    parts = urlsplit(url)
    conn = socket.create_connection((parts.hostname, parts.port), timeout=20)
    head = [
        f"{method} {path} HTTP/1.1",
        f"Host: {parts.netloc}",
        "Transfer-Encoding: chunked",
        "Content-Type: application/json",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + b"10\r\n" + b"{" * 16 + b"\r\n")
    return conn


def read_answer(conn: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        piece = conn.recv(65536)
        assert piece, "connection closed without an answer"
        data += piece
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest


@pytest.mark.parametrize(
    "headers,status",
    [
        ({}, 401),
        ({"Authorization": "Bearer not-a-key"}, 401),
        ({"x-api-key": "wrong"}, 401),
    ],
)
@pytest.mark.parametrize(
    "method,path",
    [
        ("POST", "/v1/keys"),
        ("POST", "/v1/users"),
        ("PATCH", "/v1/users/u1"),
        ("POST", "/api/v1/budgets"),
        ("POST", "/v1/pricing"),
        ("DELETE", "/v1/pricing/a:b"),
    ],
)
def test_a_management_write_without_the_master_key_is_refused_before_its_body(
    url: str, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    # The body never ends: an answer proves the gateway did not wait to read it.
    with open_request(url, method, path, headers) as conn:
        code, rest = read_answer(conn)
    assert code == status
    assert b'"detail":' in rest


def test_an_api_key_may_not_write_management_routes_either(url: str) -> None:
    key = httpx.post(url + "/v1/keys", json={}, headers={"Authorization": f"Bearer {MASTER_KEY}"})
    secret = key.json()["key"]
    with open_request(url, "POST", "/v1/users", {"Authorization": f"Bearer {secret}"}) as conn:
        code, rest = read_answer(conn)
    assert code == 403 and b"This endpoint requires the master key" in rest


def test_the_master_key_reaches_the_route(url: str) -> None:
    reply = httpx.post(
        url + "/v1/users", json={"user_id": "u1"}, headers={"Authorization": f"Bearer {MASTER_KEY}"}
    )
    assert reply.status_code == 200 and reply.json()["user_id"] == "u1"


@pytest.mark.parametrize(
    "path,status",
    [
        ("/v1/chat/completions", 499),
        ("/v1/messages", 499),
        ("/v1/embeddings", 499),
        ("/api/v1/responses", 499),
        ("/v1/users", 499),  # FastAPI reads the body itself (its 400, "error parsing the body")
        ("/v1/pricing", 499),
    ],
)
def test_a_client_that_hangs_up_before_its_body_ends_is_no_server_error(
    url: str, path: str, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    # Every load tool that stops, every client timeout: no "unhandled error" with a
    # traceback at ERROR level, but the access line (499: the client closed the request).
    caplog.set_level(logging.INFO, logger="otari")
    key = httpx.post(url + "/v1/keys", json={}, headers={"Authorization": f"Bearer {MASTER_KEY}"})
    management = path in ("/v1/users", "/v1/pricing")
    secret = MASTER_KEY if management else key.json()["key"]
    conn = open_request(url, "POST", path, {"Authorization": f"Bearer {secret}"})
    conn.close()
    line = f"POST {path} "
    for _ in range(1000):
        if any(r.getMessage().startswith(line) for r in caplog.records):
            break
        time.sleep(0.01)
    access = [r.getMessage() for r in caplog.records if r.getMessage().startswith(line)]
    assert len(access) == 1 and access[0].startswith(f"{line}{status} "), access
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    usage = httpx.get(url + "/v1/usage", headers={"Authorization": f"Bearer {MASTER_KEY}"})
    assert usage.status_code == 200 and usage.json() == []  # nothing written

"""A scripted HTTP server on loopback, to test the client's edges without the real gateway."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Seen:
    """One request the fake received."""

    method: str
    path: str  # raw, still percent-encoded
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: str


@dataclass
class Script:
    """Canned answers by (method, path); unknown routes answer 404."""

    routes: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    dynamic: dict[tuple[str, str], Callable[[dict[str, list[str]]], object]] = field(
        default_factory=dict
    )
    seen: list[Seen] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    hang: set[str] = field(default_factory=set)  # paths that never answer (until release)

    def answer(self, method: str, path: str, status: int, body: object) -> None:
        """Answer `method path` with `status` and `body` (JSON-encoded unless a str)."""
        text = body if isinstance(body, str) else json.dumps(body)
        self.routes[(method, path)] = (status, text)

    def answer_with(
        self, method: str, path: str, make: Callable[[dict[str, list[str]]], object]
    ) -> None:
        """Answer `method path` with 200 and make(query) as JSON."""
        self.dynamic[(method, path)] = make


def _handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            script.seen.append(
                Seen(self.command, parts.path, parse_qs(parts.query), dict(self.headers), body)
            )
            if parts.path in script.hang:
                script.release.wait(10)
            make = script.dynamic.get((self.command, parts.path))
            if make is not None:
                status, text = 200, json.dumps(make(parse_qs(parts.query)))
            else:
                status, text = script.routes.get(
                    (self.command, parts.path), (404, '{"detail": "Not Found"}')
                )
            data = text.encode()
            self.send_response(status)
            if status != 204:
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if status != 204:
                self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_DELETE = _serve

    return Handler


@contextmanager
def fake_gateway() -> Iterator[tuple[str, Script]]:
    """Run a scripted server on a free loopback port; yields its URL and script."""
    script = Script()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", script
    finally:
        script.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)

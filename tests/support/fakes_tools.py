"""Tool servers on loopback for the gateway's tool loop: a real MCP server, SearXNG, a sandbox.

- `McpFake`: an MCP server built with the official SDK (`MCPServer`, FastMCP's successor in
  mcp 2), served over streamable HTTP by uvicorn in a thread. Tools: `add(a, b)`,
  `lookup(key)`, `fail()` (raises), `hang()` (never answers until the server stops) and
  `big(size)` (size characters of "x x x ..."). With `token` set, every request must
  carry `Authorization: Bearer <token>`. `calls` records (tool, arguments) and
  `authorizations` the Authorization headers seen.
- `FakeSearx`: `GET /search?format=json&q=...` answering `results` (SearXNG's JSON shape).
- `FakeSandbox`: the sandbox protocol of docs/tools.md. It runs nothing: each execution
  answers `stdout` "[<n>] <code>" (n counts the session's executions, to show state
  carries over), and exit code 1 with a traceback when the code contains "raise";
  `created`, `executed` and `deleted` record the sessions' lives.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any, Self

import uvicorn
from aiohttp import web
from mcp.server.mcpserver import MCPServer
from starlette.types import Receive, Scope, Send

from tests.support.fakes import Behaviour, Failure, FakeServer, Handler, Received
from tests.support.servers import free_port

SANDBOX_TOKEN = "sk-sandbox-secret-321"

SEARCH_RESULTS: tuple[dict[str, Any], ...] = (
    {
        "url": "https://docs.example.com/otari",
        "title": "otari docs",
        "content": "otari is a self-hosted gateway",
        "engine": "fake",
        "score": 3.0,
    },
    {
        "url": "https://spam.test/otari-deal",
        "title": "cheap otari",
        "content": "buy now",
        "engine": "fake",
        "score": 2.5,
    },
    {
        "url": "https://blog.example.org/gateways",
        "title": "LLM gateways compared",
        "content": "otari, and others",
        "engine": "fake",
        "score": 2.0,
    },
    {
        "url": "https://news.example.net/otari",
        "title": "otari released",
        "content": "version 0.1",
        "engine": "fake",
        "score": 1.0,
    },
)


class McpFake:
    """A real MCP server (streamable HTTP) on a loopback port, in a background thread."""

    def __init__(self, *, token: str | None = None, name: str = "calc") -> None:
        self.token = token
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.authorizations: list[str | None] = []
        self.url = ""
        self._release = threading.Event()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.mcp = self._build(name)

    def _build(self, name: str) -> MCPServer[Any]:
        server: MCPServer[Any] = MCPServer(name, log_level="WARNING")
        calls, release = self.calls, self._release

        @server.tool()
        def add(a: int, b: int) -> int:
            """Add two integers."""
            calls.append(("add", {"a": a, "b": b}))
            return a + b

        @server.tool()
        def lookup(key: str) -> str:
            """Look a key up in the fake's table."""
            calls.append(("lookup", {"key": key}))
            return f"value of {key}"

        @server.tool()
        def fail() -> str:
            """Always fails."""
            calls.append(("fail", {}))
            raise ValueError("the lookup backend is down")

        @server.tool()
        async def hang() -> str:
            """Never answers (until the server stops)."""
            calls.append(("hang", {}))
            while not release.is_set():
                await asyncio.sleep(0.05)
            return "released"

        @server.tool()
        def big(size: int) -> str:
            """Answers `size` characters: "x x x ...", a token per two characters."""
            calls.append(("big", {"size": size}))
            return ("x " * size)[:size]

        return server

    def start(self) -> Self:
        """Serve; `url` (the /mcp endpoint) is set when this returns."""
        app = self.mcp.streamable_http_app()

        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                headers = dict(scope["headers"])
                raw = headers.get(b"authorization")
                self.authorizations.append(raw.decode() if raw is not None else None)
                if self.token is not None and raw != f"Bearer {self.token}".encode():
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 401,
                            "headers": [(b"content-type", b"application/json")],
                        }
                    )
                    await send(
                        {"type": "http.response.body", "body": b'{"error": "invalid token"}'}
                    )
                    return
            await app(scope, receive, send)

        port = free_port()
        config = uvicorn.Config(
            guarded,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the MCP fake did not start")
            self._release.wait(0.01)
        self.url = f"http://127.0.0.1:{port}/mcp"
        return self

    def close(self) -> None:
        """Release hung tools and stop serving."""
        self._release.set()
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def called(self) -> list[str]:
        """The names of the tools called so far, in order."""
        return [name for name, _ in self.calls]


class FakeSearx(FakeServer):
    """A SearXNG-compatible search API: GET /search?format=json&q=..."""

    name = "fake-searx"

    def __init__(self) -> None:
        super().__init__()
        self.results: list[dict[str, Any]] = [dict(item) for item in SEARCH_RESULTS]

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [("GET", "/search", self.search)]

    def error_body(self, failure: Failure) -> dict[str, Any]:
        return {"error": failure.message}

    async def search(
        self, request: web.Request, call: Received, behaviour: Behaviour
    ) -> web.StreamResponse:
        if call.query.get("format") != "json":
            return web.Response(status=403, text="format not allowed")
        query = call.query.get("q", "")
        payload = {
            "query": query,
            "number_of_results": len(self.results),
            "results": self.results,
            "answers": [],
            "suggestions": [],
        }
        return await self.send_json(request, payload, behaviour)

    @property
    def queries(self) -> list[str]:
        """Every query received, in order."""
        return [call.query.get("q", "") for call in self.requests]


class FakeSandbox(FakeServer):
    """The sandbox protocol: create a session, execute code in it, delete it."""

    name = "fake-sandbox"

    def __init__(self, *, api_key: str | None = SANDBOX_TOKEN) -> None:
        super().__init__(api_key=api_key)
        self.sessions: dict[str, list[str]] = {}  # open sessions: the code each ran
        self.created: list[str] = []
        self.deleted: list[str] = []
        self.executed: list[tuple[str, str]] = []  # (session, code), in order

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("POST", "/sessions", self.create),
            ("POST", "/sessions/{id}/execute", self.execute),
            ("DELETE", "/sessions/{id}", self.delete),
        ]

    def error_body(self, failure: Failure) -> dict[str, Any]:
        return {"error": {"message": failure.message}}

    def check(self, request: web.Request, call: Received) -> web.Response | None:
        if (
            self.api_key is not None
            and call.headers.get("authorization") != f"Bearer {self.api_key}"
        ):
            return self.error_response(Failure(401, "invalid sandbox token"))
        return None

    async def create(
        self, request: web.Request, call: Received, behaviour: Behaviour
    ) -> web.StreamResponse:
        if not isinstance(call.body, dict) or not isinstance(call.body.get("language"), str):
            return self.error_response(Failure(400, "language is required"))
        session = uuid.uuid4().hex
        self.sessions[session] = []
        self.created.append(session)
        return web.json_response({"id": session, "language": call.body["language"]}, status=201)

    async def execute(
        self, request: web.Request, call: Received, behaviour: Behaviour
    ) -> web.StreamResponse:
        history = self.sessions.get(request.match_info["id"])
        if history is None:
            return self.error_response(Failure(404, "no such session"))
        code = call.body.get("code") if isinstance(call.body, dict) else None
        if not isinstance(code, str):
            return self.error_response(Failure(400, "code is required"))
        history.append(code)
        self.executed.append((request.match_info["id"], code))
        failed = "raise" in code
        payload = {
            "stdout": f"[{len(history)}] {code}",
            "stderr": "Traceback (most recent call last): boom" if failed else "",
            "exit_code": 1 if failed else 0,
        }
        return await self.send_json(request, payload, behaviour)

    async def delete(
        self, request: web.Request, call: Received, behaviour: Behaviour
    ) -> web.StreamResponse:
        session = request.match_info["id"]
        if self.sessions.pop(session, None) is None:
            return self.error_response(Failure(404, "no such session"))
        self.deleted.append(session)
        return web.Response(status=204)

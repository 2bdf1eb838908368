"""A request's MCP servers: connect with the official SDK, list their tools, call them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import httpx2
import mcp_types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from otari_server import __version__
from otari_server.errors import BadGateway
from otari_server.tools import urls
from otari_server.tools.config import ToolsConfig
from otari_server.tools.plan import McpServer
from otari_server.tools.results import ToolFailure, describe

log = logging.getLogger("otari.tools")

_MAX_PAGES = 20
_CLOSE_TIMEOUT = 5.0
_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


class McpUnavailable(BadGateway):
    """An MCP server of the request could not be reached or listed."""

    code = "mcp_server_unavailable"


@dataclass(frozen=True, slots=True)
class McpTool:
    """One tool of one server, as listed."""

    server: McpServer
    name: str
    description: str
    schema: Mapping[str, Any]


class McpConnection:
    """One MCP server, connected for the length of one request.

    The SDK's client lives in a task of its own: its task group fails when the transport
    does, and that must end this connection only, never cancel the request using it.
    """

    def __init__(self, server: McpServer, config: ToolsConfig) -> None:
        self.server = server
        self._config = config
        self._client: Client | None = None
        self._ready: asyncio.Future[list[McpTool]] = asyncio.get_running_loop().create_future()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> list[McpTool]:
        """Connect and list the tools the request allows; McpUnavailable when it cannot."""
        where = f"MCP server '{self.server.name}'"
        # Every failure gets the same answer: telling "connection refused" from "not an MCP
        # server" or a timeout would let clients probe which ports are open. The reason is
        # logged for the operator.
        unavailable = McpUnavailable(f"{where} is unreachable or is not an MCP server")
        try:
            await urls.resolve(
                self.server.url, self._config, where=where, token=self.server.token is not None
            )
        except OSError as exc:
            log.info("%s: cannot resolve its host (%s)", where, exc.strerror or exc)
            raise unavailable from None
        self._task = asyncio.create_task(self._own(), name=f"mcp:{self.server.name}")
        try:
            async with asyncio.timeout(self._config.call_timeout):
                return await asyncio.shield(self._ready)
        except TimeoutError:
            self._task.cancel()
            log.info("%s did not answer within %gs", where, self._config.call_timeout)
            raise unavailable from None
        except Exception as exc:  # whatever the SDK raised: the server is not usable
            log.info("%s is unreachable: %s", where, describe(exc))
            raise unavailable from None

    async def call(self, name: str, arguments: dict[str, Any]) -> str:
        """Call a tool; its text, or ToolFailure when the tool reports an error."""
        if self._client is None or self._task is None or self._task.done():
            raise ToolFailure(f"the connection to MCP server '{self.server.name}' is closed")
        result = await self._client.call_tool(
            name, arguments, read_timeout_seconds=self._config.call_timeout
        )
        text = _text(result)
        if result.is_error:
            raise ToolFailure(text or "the tool reported an error")
        return text

    async def close(self) -> None:
        """End the session (the SDK tells the server) and the task holding it."""
        self._closing.set()
        if self._task is None:
            return
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await asyncio.shield(self._task)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _own(self) -> None:
        try:
            async with AsyncExitStack() as stack:
                self._client = await stack.enter_async_context(self._connect(stack))
                self._ready.set_result(await self._tools(self._client))
                await self._closing.wait()
        except Exception as exc:
            # A transport failure ends the SDK's task group; report it to whoever waits,
            # never let it escape into the event loop.
            if not self._ready.done():
                self._ready.set_exception(exc)
            else:
                log.info("MCP server '%s' connection ended: %s", self.server.name, describe(exc))

    def _connect(self, stack: AsyncExitStack) -> Client:
        limit = self._config.max_response_bytes
        headers = {"User-Agent": f"otari/{__version__}"}
        if self.server.token:
            headers["Authorization"] = f"Bearer {self.server.token}"
        # No read timeout: a server may keep its event stream open and quiet between calls;
        # each call is bounded by call_timeout instead.
        http = httpx2.AsyncClient(
            headers=headers,
            timeout=httpx2.Timeout(self._config.call_timeout, read=None),
            trust_env=False,
            transport=_CappedTransport(httpx2.AsyncHTTPTransport(), limit),
        )
        stack.push_async_callback(http.aclose)
        transport = streamable_http_client(
            self.server.url, http_client=http, max_sse_event_size=limit
        )
        return Client(
            transport,
            read_timeout_seconds=self._config.call_timeout,
            cache=None,
            client_info=mcp_types.Implementation(name="otari", version=__version__),
        )

    async def _tools(self, client: Client) -> list[McpTool]:
        listed: list[mcp_types.Tool] = []
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            page = await client.list_tools(cursor=cursor)
            listed.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        allowed = self.server.allowed_tools
        return [
            McpTool(
                self.server,
                tool.name,
                tool.description or tool.title or "",
                tool.input_schema or _EMPTY_SCHEMA,
            )
            for tool in listed
            if allowed is None or tool.name in allowed
        ]


async def connect(
    servers: tuple[McpServer, ...], config: ToolsConfig, stack: AsyncExitStack
) -> list[tuple[McpConnection, list[McpTool]]]:
    """Connect to every server at once (closed with `stack`), each with its allowed tools."""
    connections = [McpConnection(server, config) for server in servers]
    for connection in connections:
        stack.push_async_callback(connection.close)
    listed = await asyncio.gather(
        *(connection.open() for connection in connections), return_exceptions=True
    )
    for outcome in listed:
        if isinstance(outcome, BaseException):
            raise outcome
    return [
        (connection, tools)
        for connection, tools in zip(connections, listed, strict=True)
        if isinstance(tools, list)
    ]


def _text(result: mcp_types.CallToolResult) -> str:
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, mcp_types.TextContent):
            parts.append(block.text)
        elif isinstance(block, mcp_types.EmbeddedResource):
            text = getattr(block.resource, "text", None)
            parts.append(
                text if isinstance(text, str) else f"[binary resource {block.resource.uri} omitted]"
            )
        elif isinstance(block, mcp_types.ResourceLink):
            parts.append(f"[resource: {block.uri}]")
        else:
            parts.append(f"[{block.type} content omitted]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts)


class _CappedStream(httpx2.AsyncByteStream):
    def __init__(self, stream: httpx2.AsyncByteStream, limit: int) -> None:
        self._stream = stream
        self._limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._stream:
            seen += len(chunk)
            if seen > self._limit:
                raise httpx2.StreamError(
                    f"the server's answer is over the {self._limit}-byte limit"
                )
            yield chunk

    async def aclose(self) -> None:
        await self._stream.aclose()


class _CappedTransport(httpx2.AsyncBaseTransport):
    """Fails a response as soon as it passes the size limit (JSON answers included)."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, limit: int) -> None:
        self._inner = inner
        self._limit = limit

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        return httpx2.Response(
            response.status_code,
            headers=response.headers,
            stream=_CappedStream(response.stream, self._limit),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()

"""The gateway-run functions of one request: what the model is offered, and running its calls."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from otari_server import jsonio
from otari_server.tools import sandbox, search
from otari_server.tools.config import ToolsConfig
from otari_server.tools.plan import Plan
from otari_server.tools.results import ToolFailure, describe, truncate

if TYPE_CHECKING:
    from otari_server.tools.mcp_servers import McpConnection, McpTool

log = logging.getLogger("otari.tools")

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_-]")

Runner = Callable[[dict[str, Any]], Awaitable[str]]


class Toolbox:
    """Function definitions to offer the model, and the runner behind each name."""

    def __init__(self, config: ToolsConfig, taken: set[str]) -> None:
        self._config = config
        self._runners: dict[str, Runner] = {}
        self._taken = taken  # the client's own function names
        self.functions: list[dict[str, Any]] = []
        # MCP server name -> the function names its tools are offered under.
        self.offered: dict[str, list[str]] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._runners

    def add(self, definition: dict[str, Any], runner: Runner) -> None:
        """Offer a function (plan.parse made sure the client's tools use other names)."""
        self.functions.append(definition)
        self._runners[definition["function"]["name"]] = runner

    def add_mcp(self, connection: McpConnection, tool: McpTool) -> None:
        """Offer an MCP tool as `<server>__<tool>`."""
        name = function_name(tool.server.name, tool.name, self._taken | self._runners.keys())

        async def run(arguments: dict[str, Any]) -> str:
            return await connection.call(tool.name, arguments)

        description = tool.description or f"Tool '{tool.name}'"
        self.add(
            {
                "type": "function",
                "function": {
                    "name": name,
                    "description": f"{description} (MCP server '{tool.server.name}')",
                    "parameters": dict(tool.schema),
                },
            },
            run,
        )
        self.offered.setdefault(tool.server.name, []).append(name)

    async def run(self, call: Mapping[str, Any]) -> dict[str, Any]:
        """Run one of the model's tool calls; its tool message (an error is a message too)."""
        function = call.get("function") or {}
        name = function.get("name")
        try:
            runner = self._runners[str(name)]
            arguments = _arguments(function.get("arguments"))
            async with asyncio.timeout(self._config.call_timeout):
                text = await runner(arguments)
            content = truncate(text, self._config.max_result_bytes)
        except TimeoutError:
            content = f"Error: the tool did not finish within {self._config.call_timeout:g}s"
        except ToolFailure as exc:
            content = truncate(f"Error: {exc}", self._config.max_result_bytes)
        except Exception as exc:
            # Tool servers are third parties: whatever they (or their SDK) raise must reach
            # the model as the tool's error, never fail the request.
            log.info("tool %s failed: %s", name, describe(exc))
            content = truncate(f"Error: {describe(exc)}", self._config.max_result_bytes)
        return {"role": "tool", "tool_call_id": call.get("id"), "content": content}

    async def run_all(self, calls: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Run calls concurrently; their tool messages in the calls' order."""
        return list(await asyncio.gather(*(self.run(call) for call in calls)))


def function_name(server: str, tool: str, taken: set[str]) -> str:
    """`<server>__<tool>`, made a valid and unused function name (at most 64 characters)."""
    name = _UNSAFE_NAME.sub("_", f"{server}__{tool}")
    if len(name) > 64 or name in taken:
        digest = hashlib.sha256(f"{server}\0{tool}".encode()).hexdigest()[:8]
        name = f"{name[:55]}_{digest}"
    return name


def _arguments(raw: object) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        parsed = jsonio.parse(raw or "{}") if isinstance(raw, str | bytes) else None
    except orjson.JSONDecodeError:
        raise ToolFailure("the arguments are not valid JSON") from None
    if not isinstance(parsed, dict):
        raise ToolFailure("the arguments must be a JSON object")
    return parsed


@asynccontextmanager
async def open_toolbox(plan: Plan, config: ToolsConfig) -> AsyncIterator[Toolbox]:
    """Connect what the plan needs; everything is closed (sessions deleted) on exit."""
    taken = {
        tool["function"]["name"]
        for tool in plan.client_tools
        if isinstance(tool.get("function"), Mapping)
        and isinstance(tool["function"].get("name"), str)
    }
    toolbox = Toolbox(config, taken)
    async with AsyncExitStack() as stack:
        if plan.web_search is not None or plan.code_execution is not None:
            http = await stack.enter_async_context(
                aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=config.call_timeout), trust_env=False
                )
            )
            if plan.web_search is not None:
                searcher = search.WebSearcher(http, config, plan.web_search)
                toolbox.add(search.FUNCTION, searcher.search)
            if plan.code_execution is not None:
                box = sandbox.Sandbox(http, config, plan.code_execution)
                stack.push_async_callback(box.close)
                toolbox.add(sandbox.function(plan.code_execution), box.execute)
        if plan.servers:
            await _connect_servers(toolbox, plan, config, stack)
        yield toolbox


async def _connect_servers(
    toolbox: Toolbox, plan: Plan, config: ToolsConfig, stack: AsyncExitStack
) -> None:
    # The MCP SDK takes about a second to import: only requests that name MCP servers pay
    # for it, not every gateway start.
    from otari_server.tools import mcp_servers

    for connection, tools in await mcp_servers.connect(plan.servers, config, stack):
        toolbox.offered.setdefault(connection.server.name, [])
        for tool in tools:
            toolbox.add_mcp(connection, tool)

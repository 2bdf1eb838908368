"""What a chat request asks the gateway to run, checked before anything is spent (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from otari_server.errors import InvalidRequest, Unprocessable
from otari_server.tools import urls
from otari_server.tools.config import ToolsConfig

DEFAULT_ITERATIONS, MAX_ITERATIONS = 10, 25
MAX_SERVERS = 20
DEFAULT_SEARCH_RESULTS, MAX_SEARCH_RESULTS = 5, 20
WEB_SEARCH, CODE_EXECUTION = "web_search", "code_execution"
# Request fields only the gateway reads: never sent to a provider.
GATEWAY_FIELDS = ("mcp_servers", "mcp_server_ids", "max_tool_iterations", "tools_header")
DEFAULT_HEADER = (
    "Besides any tools of your own, you can call tools that run on remote "
    "servers. What each server is for:"
)


@dataclass(frozen=True, slots=True)
class McpServer:
    """One MCP server of the request (McpServerConfig in the contract)."""

    name: str
    url: str
    token: str | None = None
    allowed_tools: frozenset[str] | None = None
    purpose_hint: str | None = None


@dataclass(frozen=True, slots=True)
class WebSearch:
    """A `web_search` tool and its per-tool options."""

    max_results: int = DEFAULT_SEARCH_RESULTS
    allowed_domains: tuple[str, ...] = ()
    blocked_domains: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CodeExecution:
    """A `code_execution` (or `code_interpreter`) tool."""

    language: str = "python"


@dataclass(frozen=True, slots=True)
class Plan:
    """The checked tool fields of one chat request."""

    body: Mapping[str, Any]
    servers: tuple[McpServer, ...] = ()
    web_search: WebSearch | None = None
    code_execution: CodeExecution | None = None
    client_tools: tuple[Mapping[str, Any], ...] = ()
    max_iterations: int = DEFAULT_ITERATIONS
    header: str | None = None

    @property
    def streaming(self) -> bool:
        """Whether the client asked for a stream."""
        return self.body.get("stream") is True

    @property
    def include_usage(self) -> bool:
        """Whether a streaming client asked for the usage chunk."""
        options = self.body.get("stream_options")
        return isinstance(options, Mapping) and bool(options.get("include_usage"))


def wanted(body: Mapping[str, Any]) -> bool:
    """Whether the request asks the gateway to run tools (or names a gateway-only field)."""
    if any(body.get(name) is not None for name in GATEWAY_FIELDS):
        return True
    tools = body.get("tools")
    return isinstance(tools, list) and any(
        isinstance(tool, Mapping) and gateway_kind(tool) for tool in tools
    )


def gateway_kind(tool: Mapping[str, Any]) -> str | None:
    """WEB_SEARCH or CODE_EXECUTION for a tool the gateway runs; None for the client's own."""
    kind = tool.get("type")
    if not isinstance(kind, str):
        return None
    if kind == WEB_SEARCH or kind.startswith("web_search_"):
        return WEB_SEARCH
    if kind in (CODE_EXECUTION, "code_interpreter"):
        return CODE_EXECUTION
    return None


def parse(body: Mapping[str, Any], config: ToolsConfig) -> Plan:
    """Check the tool fields of a chat request; 400 (or 422) before anything is spent."""
    if body.get("mcp_server_ids") is not None:
        raise InvalidRequest(
            "'mcp_server_ids' needs connected mode, where the platform resolves the ids; "
            "this gateway runs standalone: pass 'mcp_servers' with each server's url instead",
            param="mcp_server_ids",
            code="unsupported_parameter",
        )
    if body.get("n") not in (None, 1):
        raise InvalidRequest(
            "gateway-run tools need a single choice: 'n' must be 1",
            param="n",
            code="unsupported_parameter",
        )
    web_search, code_execution, client_tools = _tools(body.get("tools"), config)
    servers = _servers(body.get("mcp_servers"), config)
    header = body.get("tools_header")
    if header is not None and (not isinstance(header, str) or len(header) > 4000):
        raise InvalidRequest(
            "'tools_header' must be a string of at most 4000 characters", param="tools_header"
        )
    return Plan(
        body=body,
        servers=servers,
        web_search=web_search,
        code_execution=code_execution,
        client_tools=client_tools,
        max_iterations=_iterations(body.get("max_tool_iterations")),
        header=header or config.header,
    )


def _iterations(value: object) -> int:
    if value is None:
        return DEFAULT_ITERATIONS
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ITERATIONS:
        raise Unprocessable(
            f"'max_tool_iterations' must be an integer from 1 to {MAX_ITERATIONS}, got {value!r}",
            param="max_tool_iterations",
            code="invalid_max_tool_iterations",
        )
    return value


def _tools(
    tools: object, config: ToolsConfig
) -> tuple[WebSearch | None, CodeExecution | None, tuple[Mapping[str, Any], ...]]:
    if tools is None:
        return None, None, ()
    if not isinstance(tools, list) or not all(isinstance(tool, Mapping) for tool in tools):
        raise InvalidRequest("'tools' must be an array of objects", param="tools")
    web_search, code_execution, client = None, None, []
    for i, tool in enumerate(tools):
        kind = gateway_kind(tool)
        if kind is None:
            client.append(tool)
        elif kind == WEB_SEARCH:
            if web_search is not None:
                raise InvalidRequest("only one web_search tool per request", param="tools")
            web_search = _web_search(tool, f"tools[{i}]", config)
        else:
            if code_execution is not None:
                raise InvalidRequest("only one code_execution tool per request", param="tools")
            code_execution = _code_execution(tool, f"tools[{i}]", config)
    names = _names(client)
    for name, gateway_tool in ((WEB_SEARCH, web_search), (CODE_EXECUTION, code_execution)):
        if gateway_tool is not None and name in names:
            raise InvalidRequest(
                f"a function of the client is named '{name}', like the gateway-run tool: rename it",
                param="tools",
            )
    return web_search, code_execution, tuple(client)


def _web_search(tool: Mapping[str, Any], where: str, config: ToolsConfig) -> WebSearch:
    if config.web_search_url is None:
        raise InvalidRequest(
            f"{where}: web search is not set up on this gateway (the operator "
            "sets tools.web_search_url)",
            param="tools",
            code="tool_not_configured",
        )
    limit = tool.get("max_results", DEFAULT_SEARCH_RESULTS)
    if (
        isinstance(limit, bool)
        or not isinstance(limit, int)
        or not (1 <= limit <= MAX_SEARCH_RESULTS)
    ):
        raise InvalidRequest(
            f"{where}.max_results: an integer from 1 to {MAX_SEARCH_RESULTS}", param="tools"
        )
    return WebSearch(
        max_results=limit,
        allowed_domains=_domains(tool.get("allowed_domains"), where, "allowed"),
        blocked_domains=_domains(tool.get("blocked_domains"), where, "blocked"),
    )


def _domains(value: object, where: str, which: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise InvalidRequest(f"{where}.{which}_domains: an array of domain names", param="tools")
    return tuple(domain(item) for item in value)


def domain(text: str) -> str:
    """A domain as a filter compares it: lower case, no scheme, path or leading '*.'."""
    host = urlsplit(text).hostname if "://" in text else text.split("/", 1)[0]
    return (host or text).lower().removeprefix("*.").strip(".")


def _code_execution(tool: Mapping[str, Any], where: str, config: ToolsConfig) -> CodeExecution:
    if config.sandbox_url is None:
        raise InvalidRequest(
            f"{where}: code execution is not set up on this gateway (the "
            "operator sets tools.sandbox_url)",
            param="tools",
            code="tool_not_configured",
        )
    language = tool.get("language", "python")
    if not isinstance(language, str) or not language:
        raise InvalidRequest(f"{where}.language: a language name such as 'python'", param="tools")
    return CodeExecution(language=language)


def _names(tools: Sequence[Mapping[str, Any]]) -> set[str]:
    names = set()
    for tool in tools:
        function = tool.get("function")
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            names.add(function["name"])
    return names


def _servers(value: object, config: ToolsConfig) -> tuple[McpServer, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
        raise InvalidRequest("'mcp_servers' must be an array of objects", param="mcp_servers")
    if len(value) > MAX_SERVERS:
        raise InvalidRequest(f"at most {MAX_SERVERS} mcp_servers per request", param="mcp_servers")
    servers: list[McpServer] = []
    for i, item in enumerate(value):
        server = _server(item, f"mcp_servers[{i}]")
        if any(other.name == server.name for other in servers):
            raise InvalidRequest(
                f"mcp_servers[{i}].name: '{server.name}' is used twice", param="mcp_servers"
            )
        urls.check(
            server.url, config, where=f"mcp_servers[{i}].url", token=server.token is not None
        )
        servers.append(server)
    return tuple(servers)


def _server(item: Mapping[str, Any], where: str) -> McpServer:
    name, url = item.get("name"), item.get("url")
    if not isinstance(name, str) or not 1 <= len(name) <= 128:
        raise InvalidRequest(f"{where}.name: a string of 1 to 128 characters", param="mcp_servers")
    if not isinstance(url, str) or not url:
        raise InvalidRequest(f"{where}.url: a URL is required", param="mcp_servers")
    token, hint, allowed = (
        item.get("authorization_token"),
        item.get("purpose_hint"),
        item.get("allowed_tools"),
    )
    if token is not None and not isinstance(token, str):
        raise InvalidRequest(f"{where}.authorization_token: a string", param="mcp_servers")
    if hint is not None and (not isinstance(hint, str) or len(hint) > 2000):
        raise InvalidRequest(
            f"{where}.purpose_hint: a string of at most 2000 characters", param="mcp_servers"
        )
    if allowed is not None and (
        not isinstance(allowed, list) or not all(isinstance(tool, str) for tool in allowed)
    ):
        raise InvalidRequest(f"{where}.allowed_tools: an array of tool names", param="mcp_servers")
    return McpServer(
        name=name,
        url=url,
        token=token or None,
        allowed_tools=None if allowed is None else frozenset(allowed),
        purpose_hint=hint or None,
    )


def hints(plan: Plan, offered: Mapping[str, Sequence[str]]) -> dict[str, Any] | None:
    """The system message naming what each MCP server is for, or None when nobody said."""
    lines = [
        f"- {server.name}: {server.purpose_hint} (tools: "
        f"{', '.join(offered.get(server.name, ())) or 'none'})"
        for server in plan.servers
        if server.purpose_hint
    ]
    if not lines and plan.header is None:
        return None
    return {"role": "system", "content": "\n".join([plan.header or DEFAULT_HEADER, *lines])}


def model_request(
    plan: Plan, messages: list[dict[str, Any]], functions: Sequence[Mapping[str, Any]], first: bool
) -> dict[str, Any]:
    """The body of one model call of the loop (OpenAI chat shape, never streamed)."""
    body = {
        key: value
        for key, value in plan.body.items()
        if key not in (*GATEWAY_FIELDS, "stream", "stream_options", "tools")
    }
    body["messages"] = messages
    tools = [*plan.client_tools, *functions]
    if tools:
        body["tools"] = tools
    else:
        body.pop("tool_choice", None)
        body.pop("parallel_tool_calls", None)
    # A forced choice ("required", one named function) would never let the model answer:
    # it holds for the first call only.
    if not first and body.get("tool_choice") not in (None, "auto", "none"):
        del body["tool_choice"]
    return body

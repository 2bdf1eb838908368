"""The `web_search` tool: a SearXNG-compatible backend, filtered by the tool's domains."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from otari_server import jsonio
from otari_server.tools.config import ToolsConfig
from otari_server.tools.plan import WEB_SEARCH, WebSearch
from otari_server.tools.results import ToolFailure, read_capped

FUNCTION: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": WEB_SEARCH,
        "description": "Search the web. Returns the top results as JSON: each with its title, "
        "URL and a snippet. Cite the URLs you use.",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string", "description": "What to search for"}},
            "required": ["query"],
        },
    },
}


class WebSearcher:
    """Runs the model's searches for one request."""

    def __init__(self, http: aiohttp.ClientSession, config: ToolsConfig, spec: WebSearch):
        self._http = http
        self._config = config
        self._spec = spec

    async def search(self, arguments: dict[str, Any]) -> str:
        """GET {web_search_url}/search?format=json&q=...; the kept results as JSON text."""
        query = arguments.get("query")
        if not isinstance(query, str) or not query.strip():
            raise ToolFailure("'query' must be a non-empty string")
        assert self._config.web_search_url is not None
        async with self._http.get(
            f"{self._config.web_search_url}/search", params={"q": query, "format": "json"}
        ) as response:
            data = await read_capped(response, self._config.max_response_bytes)
            if response.status >= 400:
                raise ToolFailure(f"the search backend answered HTTP {response.status}")
        try:
            answer = jsonio.parse(data)
        except orjson.JSONDecodeError:
            raise ToolFailure("the search backend did not answer JSON") from None
        found = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(found, list):
            raise ToolFailure("the search backend's answer has no 'results' list")
        results: list[dict[str, str]] = []
        for item in found:
            if len(results) == self._spec.max_results:
                break
            if isinstance(item, dict) and (result := self._result(item)) is not None:
                results.append(result)
        return json.dumps({"query": query, "results": results}, ensure_ascii=False)

    def _result(self, item: dict[str, Any]) -> dict[str, str] | None:
        url = item.get("url")
        if not isinstance(url, str) or not kept(url, self._spec):
            return None
        title, snippet = item.get("title"), item.get("content")
        return {
            "title": title if isinstance(title, str) else "",
            "url": url,
            "snippet": snippet if isinstance(snippet, str) else "",
        }


def kept(url: str, spec: WebSearch) -> bool:
    """Whether a result's URL passes the tool's allowed and blocked domains (pure)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        return False
    if spec.allowed_domains and not any(_within(host, d) for d in spec.allowed_domains):
        return False
    return not any(_within(host, d) for d in spec.blocked_domains)


def _within(host: str, domain: str) -> bool:
    return host == domain or host.endswith("." + domain)

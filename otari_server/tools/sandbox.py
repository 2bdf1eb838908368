"""The `code_execution` tool: a sandbox backend runs the code; the gateway never does.

The protocol (docs/tools.md): POST {sandbox_url}/sessions {"language"} -> {"id"};
POST {sandbox_url}/sessions/{id}/execute {"code", "timeout"} -> {"stdout", "stderr",
"exit_code"}; DELETE {sandbox_url}/sessions/{id}. One session per request, made on the
first call, so state carries from one call to the next, and deleted when the request ends.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from otari_server import jsonio
from otari_server.tools.config import ToolsConfig
from otari_server.tools.plan import CODE_EXECUTION, CodeExecution
from otari_server.tools.results import ToolFailure, read_capped

log = logging.getLogger("otari.tools")

_DELETE_TIMEOUT = 5.0


def function(spec: CodeExecution) -> dict[str, Any]:
    """The function definition the model is offered."""
    return {
        "type": "function",
        "function": {
            "name": CODE_EXECUTION,
            "description": f"Run {spec.language} code in an isolated sandbox. Returns stdout, "
            "stderr and the exit code as JSON. Variables and files persist "
            "from one call to the next within this request.",
            "parameters": {
                "type": "object",
                "properties": {
                    "code": {"type": "string", "description": f"The {spec.language} code to run"}
                },
                "required": ["code"],
            },
        },
    }


class Sandbox:
    """One request's sandbox session, made on first use."""

    def __init__(self, http: aiohttp.ClientSession, config: ToolsConfig, spec: CodeExecution):
        assert config.sandbox_url is not None
        self._http = http
        self._config = config
        self._spec = spec
        self._base = config.sandbox_url
        self._headers = (
            {"Authorization": f"Bearer {config.sandbox_token}"} if config.sandbox_token else {}
        )
        self._session: str | None = None
        # Calls run one at a time: they share the session's state.
        self._lock = asyncio.Lock()

    async def execute(self, arguments: dict[str, Any]) -> str:
        """Run the model's code; stdout, stderr and exit code as JSON text."""
        code = arguments.get("code")
        if not isinstance(code, str) or not code.strip():
            raise ToolFailure("'code' must be a non-empty string")
        async with self._lock:
            if self._session is None:
                made = await self._send("POST", "/sessions", {"language": self._spec.language})
                if not isinstance(made.get("id"), str) or not made["id"]:
                    raise ToolFailure("the sandbox did not return a session id")
                self._session = made["id"]
            ran = await self._send(
                "POST",
                f"/sessions/{quote(self._session, safe='')}/execute",
                {"code": code, "timeout": self._config.call_timeout},
            )
        if isinstance(ran.get("error"), str) and ran["error"]:
            raise ToolFailure(f"the sandbox failed: {ran['error']}")
        return json.dumps(
            {key: ran.get(key) for key in ("stdout", "stderr", "exit_code")}, ensure_ascii=False
        )

    async def close(self) -> None:
        """Delete the session, if one was made (a failure is logged, not raised)."""
        if self._session is None:
            return
        try:
            async with asyncio.timeout(_DELETE_TIMEOUT):
                await self._send("DELETE", f"/sessions/{quote(self._session, safe='')}")
        except (ToolFailure, TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning("could not delete sandbox session %s: %s", self._session, exc)

    async def _send(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        async with self._http.request(
            method, self._base + path, json=body, headers=self._headers
        ) as response:
            data = await read_capped(response, self._config.max_response_bytes)
            status = response.status
        if status == 404 and method == "DELETE":
            return {}
        if status >= 400:
            raise ToolFailure(f"the sandbox answered HTTP {status}: {_message(data)}")
        if not data.strip():
            return {}
        try:
            answer = jsonio.parse(data)
        except orjson.JSONDecodeError:
            raise ToolFailure("the sandbox did not answer JSON") from None
        if not isinstance(answer, dict):
            raise ToolFailure("the sandbox did not answer a JSON object")
        return answer


def _message(data: bytes) -> str:
    try:
        answer = jsonio.parse(data)
    except orjson.JSONDecodeError:
        return data[:300].decode("utf-8", errors="replace")
    if isinstance(answer, dict):
        error = answer.get("error")
        if isinstance(error, dict):
            error = error.get("message")
        detail = error or answer.get("detail") or answer.get("message")
        if isinstance(detail, str):
            return detail[:300]
    return str(answer)[:300]

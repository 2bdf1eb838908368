"""Usage reports to the platform: one per attempt, sent in the background with retries."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from otari_server.connected.platform import TRANSPORT_ERRORS, Platform

log = logging.getLogger("otari.platform")

MAX_BACKOFF = 10.0


def usage_numbers(usage: Mapping[str, Any] | None, chunks: int = 0) -> dict[str, int]:
    """The token counts the platform bills by; a stream cut before its usage counts chunks."""
    usage = usage or {}
    prompt = _count(usage.get("prompt_tokens"))
    completion = (_count(usage.get("completion_tokens")) if "completion_tokens" in usage
                  else max(chunks - 1, 0))  # about a token per chunk, less the role chunk
    total = _count(usage.get("total_tokens")) or prompt + completion
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class Reporter:
    """Fire-and-forget delivery: the client's response never waits for a report."""

    def __init__(self, platform: Platform) -> None:
        self._platform = platform
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        """Reports not yet delivered or given up on."""
        return len(self._tasks)

    def success(self, attempt_id: str, usage: dict[str, int], *,
                estimated: bool = False) -> None:
        """Report an attempt that served the request; `estimated` when the provider reported
        no usage and the numbers are the gateway's estimate (`usage_estimated: true`)."""
        body: dict[str, Any] = {"correlation_id": attempt_id, "status": "success",
                                "usage": usage}
        if estimated:
            body["usage_estimated"] = True
        self._send(body)

    def error(self, attempt_id: str, error_class: str, *, usage: dict[str, int] | None = None,
              estimated: bool = False) -> None:
        """Report an attempt that failed; a stream cut after it started carries the `usage`
        consumed (`usage_estimated: true` when those are the gateway's estimate)."""
        body: dict[str, Any] = {"correlation_id": attempt_id, "status": "error",
                                "error_class": error_class}
        if usage is not None:
            body["usage"] = usage
            if estimated:
                body["usage_estimated"] = True
        self._send(body)

    def _send(self, body: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(body))
        self._tasks.add(task)  # a strong reference, or the loop may collect the task midway
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, body: dict[str, Any]) -> None:
        config = self._platform.config
        delay = config.usage_backoff
        for tried in range(1, config.usage_max_tries + 1):
            try:
                status = await self._platform.post_usage(body)
            except TRANSPORT_ERRORS as exc:
                outcome, retry = type(exc).__name__, True
            else:
                if 200 <= status < 300:
                    return
                outcome, retry = f"HTTP {status}", status >= 500
            if not retry or tried == config.usage_max_tries:
                log.warning("usage report for %s not delivered after %d tr%s (%s)",
                            body["correlation_id"], tried, "y" if tried == 1 else "ies", outcome)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)

    async def drain(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for pending reports, then abandon the rest."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        if pending:
            log.warning("abandoned %d usage report(s) still pending at shutdown", len(pending))
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

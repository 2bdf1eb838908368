"""Connected mode under SIGTERM: a stream cut at `shutdown_timeout` is still billed.

A real `otari serve` process, connected to the fake platform, relays a stream the provider
holds past `shutdown_timeout`. Shutdown cuts it, and its usage report carries what was
consumed: the provider's usage when it was seen, else the gateway's estimate (prompt from
the request body, output from the chunks relayed), marked `usage_estimated`. The report is
delivered while shutting down, or, when the platform is down, kept in the queue file and
delivered after the next start.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from otari_server.connected.queue import UsageQueue
from tests.support.fakes import DEFAULT_TEXT, FakeOpenAI, count_tokens
from tests.support.platform_fake import USER_TOKEN, FakePlatform, Reply, connected_config
from tests.support.procs import ServeProcess, served

PROMPT = "Say hello"
BODY = json.dumps(
    {
        "model": "openai:gpt-4o-mini",
        "stream": True,
        "messages": [{"role": "user", "content": PROMPT}],
    }
)
ESTIMATED_PROMPT = -(-len(BODY) // 4)  # a token per four bytes of the client's body
SHUTDOWN_TIMEOUT = 1  # uvicorn counts whole seconds


def gateway_config(directory: Path, platform: FakePlatform, **keys: Any) -> Path:
    """An `otari serve` config connected to `platform`, its queue file in `directory`."""
    return connected_config(
        directory,
        platform,
        {"shutdown_timeout": SHUTDOWN_TIMEOUT},
        usage_queue=str(directory / "reports.sqlite3"),
        usage_backoff_max=0.1,
        **keys,
    )


def cut_by_shutdown(gateway: ServeProcess, events: int) -> list[str]:
    """Stream a chat, read `events` data events, SIGTERM the gateway while the provider holds
    the rest, and read on until shutdown cuts the stream; every data line received."""
    lines: list[str] = []
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        content=BODY,
        timeout=60,
        headers={"Authorization": f"Bearer {USER_TOKEN}", "content-type": "application/json"},
    ) as response:
        assert response.status_code == 200
        received = (line for line in response.iter_lines() if line.startswith("data: "))
        # What was relayed before the signal is known exactly: the estimate cannot vary.
        lines.extend(next(received) for _ in range(events))
        gateway.signal(signal.SIGTERM)
        with pytest.raises(httpx.RemoteProtocolError):
            lines.extend(received)
    assert gateway.wait(SHUTDOWN_TIMEOUT + 20) == 0, gateway.log()
    return lines


def test_a_stream_cut_by_shutdown_reports_the_estimate_of_what_was_relayed(
    tmp_path: Path, platform: FakePlatform, provider: FakeOpenAI
) -> None:
    gate = provider.gate()
    provider.push(hold_after=2, gate=gate)  # the role chunk and one content chunk, then held
    config = gateway_config(tmp_path, platform)
    with served(tmp_path, "", config=config) as gateway:
        lines = cut_by_shutdown(gateway, 2)
        # Delivered while shutting down (usage_drain_timeout), before the process exited.
        [report] = platform.usage
    gate.release()
    assert len(lines) == 2 and '"content":"Hello"' in lines[1].replace(" ", "")
    assert report == {
        "correlation_id": "att-1",
        "status": "error",
        "error_class": "client_disconnected",
        "usage": {
            "prompt_tokens": ESTIMATED_PROMPT,
            "completion_tokens": 1,
            "total_tokens": ESTIMATED_PROMPT + 1,
        },
        "usage_estimated": True,
    }


def test_a_stream_cut_by_shutdown_after_the_provider_usage_reports_that_usage(
    tmp_path: Path, platform: FakePlatform, provider: FakeOpenAI
) -> None:
    words = count_tokens(DEFAULT_TEXT)
    # Held before [DONE]: the role chunk, a chunk per word, the finish chunk and the usage
    # chunk (asked for by the gateway, hidden from this client) were sent.
    gate = provider.gate()
    provider.push(hold_after=words + 3, gate=gate)
    with served(tmp_path, "", config=gateway_config(tmp_path, platform)) as gateway:
        lines = cut_by_shutdown(gateway, words + 2)
        [report] = platform.usage
    gate.release()
    assert all('"usage"' not in line for line in lines)
    prompt = count_tokens(PROMPT)
    assert report == {
        "correlation_id": "att-1",
        "status": "error",
        "error_class": "client_disconnected",
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": words,
            "total_tokens": prompt + words,
        },
    }


def test_a_cut_stream_report_the_platform_did_not_take_is_delivered_after_restart(
    tmp_path: Path, platform: FakePlatform, provider: FakeOpenAI
) -> None:
    gate = provider.gate()
    provider.push(hold_after=2, gate=gate)
    config = gateway_config(tmp_path, platform, usage_drain_timeout=0.5)
    platform.outage = Reply(503, {"detail": "down"})
    with served(tmp_path, "", config=config) as gateway:
        cut_by_shutdown(gateway, 2)
        port = gateway.port
    gate.release()
    assert platform.usage == [] and platform.usage_requests  # tried, refused, kept
    queue = UsageQueue(tmp_path / "reports.sqlite3", 1 << 20)
    queue.open()
    try:
        assert queue.stats().depth == 1
    finally:
        queue.close()
    tried = {seen.headers["idempotency-key"] for seen in platform.usage_requests}

    platform.outage = None
    with served(tmp_path, "", config=config, port=port):
        [report] = platform.wait_usage(1)
    assert report == {
        "correlation_id": "att-1",
        "status": "error",
        "error_class": "client_disconnected",
        "usage": {
            "prompt_tokens": ESTIMATED_PROMPT,
            "completion_tokens": 1,
            "total_tokens": ESTIMATED_PROMPT + 1,
        },
        "usage_estimated": True,
    }
    # The same report (one idempotency key on every try, before and after the restart).
    assert {seen.headers["idempotency-key"] for seen in platform.usage_requests} == tried
    assert len(tried) == 1

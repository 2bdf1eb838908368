"""Prometheus metrics (opt-in), request ids, and refusal of oversized requests."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import openai
import pytest
from starlette.testclient import TestClient

from otari_server.app import create_app
from tests.support.gateway import Gateway
from tests.support.servers import make_settings


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one metric sample in Prometheus text format."""
    label = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = (
        "^" + re.escape(name) + (r"\{" + re.escape(label) + r"\}" if label else "") + r" (\S+)$"
    )
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"{name} {labels} not in metrics"
    return float(match.group(1))


def test_metrics_count_requests_tokens_and_refusals(
    gateway_factory: Callable[..., Gateway],
) -> None:
    gateway = gateway_factory(metrics=True)
    gateway.price("fake:gpt-4o-mini", "1", "2")
    client = gateway.client(gateway.key())
    client.chat.completions.create(
        model="fake:gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    limited = gateway.client(gateway.key(rpm_limit=1))
    limited.chat.completions.create(
        model="fake:gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    with pytest.raises(openai.RateLimitError):
        limited.chat.completions.create(
            model="fake:gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    text = httpx.get(f"{gateway.url}/metrics").text
    assert sample(text, "otari_requests_total", endpoint="/v1/chat/completions", status="200") == 2
    assert sample(text, "otari_requests_total", endpoint="/v1/chat/completions", status="429") == 1
    assert sample(text, "otari_refusals_total", reason="rate_limit") == 1
    assert sample(text, "otari_tokens_total", kind="completion") == 10
    assert sample(text, "otari_upstream_duration_seconds_count", provider="fake") == 2
    assert (
        sample(text, "otari_request_duration_seconds_count", endpoint="/v1/chat/completions") == 3
    )
    assert sample(text, "otari_in_flight_requests") == 0
    assert sample(text, "otari_usage_queue_depth") >= 0


def test_metrics_are_off_by_default(sqlite_url: str) -> None:
    with TestClient(create_app(make_settings(sqlite_url))) as client:
        assert client.get("/metrics").status_code == 404


def test_every_response_has_a_request_id_that_the_usage_row_records(gateway: Gateway) -> None:
    client = gateway.client(gateway.key())
    raw = client.chat.completions.with_raw_response.create(
        model="fake:gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    request_id = raw.headers["x-request-id"]
    [row] = gateway.usage(1)
    assert row["request_id"] == request_id
    other = httpx.get(f"{gateway.url}/health")
    assert other.headers["x-request-id"] and other.headers["x-request-id"] != request_id


def test_oversized_bodies_and_headers_are_refused(sqlite_url: str) -> None:
    settings = make_settings(sqlite_url, max_body_bytes=1000, max_header_bytes=4096)
    with TestClient(create_app(settings)) as client:
        big = client.post(
            "/v1/chat/completions",
            content=b"x" * 2000,
            headers={"content-type": "application/json"},
        )
        assert big.status_code == 413 and "1000-byte" in big.json()["error"]["message"]
        assert client.post("/v1/keys", content=b"x" * 2000).status_code == 413
        headers = client.get("/health", headers={"x-filler": "a" * 5000})
        assert headers.status_code == 431
        filler = {"x-filler": "a" * 5000}
        assert client.post("/v1/chat/completions", headers=filler).json()["error"] == {
            "message": "Request headers are over the 4096-byte limit",
            "type": "invalid_request_error",
            "param": None,
            "code": "request_headers_too_large",
        }
        assert client.post("/v1/messages", headers=filler).json()["error"] == {
            "type": "invalid_request_error",
            "message": "Request headers are over the 4096-byte limit",
        }
        assert client.post("/v1/messages", content=b"x" * 2000).json()["error"] == {
            "type": "request_too_large",
            "message": "Request body is over the 1000-byte limit",
        }


def test_a_nul_in_the_url_is_an_invalid_request_in_each_shape(sqlite_url: str) -> None:
    with TestClient(create_app(make_settings(sqlite_url))) as client:
        chat = client.get("/v1/models%00")
        assert chat.status_code == 400 and chat.json()["error"] == {
            "message": "NUL characters are not allowed in URLs",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_url",
        }
        messages = client.post("/v1/messages?beta=%00", json={})
        assert messages.status_code == 400 and messages.json()["error"] == {
            "type": "invalid_request_error",
            "message": "NUL characters are not allowed in URLs",
        }

"""Connected mode's chat path: platform routing, fallback, streams and usage reports."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest

from tests.support.fakes import DEFAULT_TEXT, Failure, FakeAnthropic, FakeOpenAI, count_tokens
from tests.support.platform_fake import (
    GATEWAY_TOKEN,
    USER_TOKEN,
    FakePlatform,
    attempt,
    connected_settings,
)
from tests.support.platform_fake import PROVIDER_KEY as KEY
from tests.support.servers import free_port, running

BACKUP_KEY = "sk-platform-backup-key-987654321"
CLAUDE_KEY = "sk-ant-platform-key-555"
MESSAGES: Any = [{"role": "user", "content": "Say hello"}]


@dataclass
class World:
    """A fake platform, three fake providers, and gateways started in front of them."""

    stack: ExitStack
    platform: FakePlatform
    primary: FakeOpenAI
    backup: FakeOpenAI
    claude: FakeAnthropic
    url: str = ""
    clients: list[openai.OpenAI] = field(default_factory=list)

    def start(self, overrides: dict[str, Any] | None = None, **keys: Any) -> str:
        """Serve a connected gateway (its [platform] table takes `keys`)."""
        self.url = self.stack.enter_context(
            running(connected_settings(self.platform, overrides, **keys))
        )
        return self.url

    def client(self, token: str = USER_TOKEN) -> openai.OpenAI:
        client = openai.OpenAI(base_url=f"{self.url}/v1", api_key=token, max_retries=0)
        self.stack.callback(client.close)
        return client

    def ask(self, model: str = "openai:gpt-4o-mini", **kwargs: Any) -> Any:
        """A chat completion through the gateway; the raw response (headers and parse())."""
        return self.client().chat.completions.with_raw_response.create(
            model=model, messages=MESSAGES, **kwargs
        )

    def first(self) -> dict[str, Any]:
        return attempt(self.primary, "att-primary", api_key=KEY)

    def second(self) -> dict[str, Any]:
        return attempt(self.backup, "att-backup", model="gpt-4o", api_key=BACKUP_KEY)

    def anthropic(self) -> dict[str, Any]:
        return attempt(
            self.claude, "att-claude", name="anthropic", model="claude-fake", api_key=CLAUDE_KEY
        )


@pytest.fixture
def world() -> Iterator[World]:
    with ExitStack() as stack:
        world = World(
            stack,
            stack.enter_context(FakePlatform()),
            stack.enter_context(FakeOpenAI(api_key=KEY)),
            stack.enter_context(FakeOpenAI(api_key=BACKUP_KEY)),
            stack.enter_context(FakeAnthropic(api_key=CLAUDE_KEY)),
        )
        world.platform.route(world.first(), world.second())
        yield world


@pytest.fixture
def gw(world: World) -> World:
    world.start()
    return world


def usage_of(text: str = DEFAULT_TEXT) -> dict[str, int]:
    prompt, completion = count_tokens("Say hello"), count_tokens(text)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


# -- the happy path --------------------------------------------------------------------------------


def test_chat_completion_is_routed_by_the_platform(gw: World) -> None:
    raw = gw.ask(temperature=0.5, user="alice")
    completion = raw.parse()
    assert completion.choices[0].message.content == DEFAULT_TEXT
    resolve = gw.platform.last_resolve
    assert resolve.headers["x-gateway-token"] == GATEWAY_TOKEN
    assert resolve.headers["x-user-token"] == USER_TOKEN
    assert resolve.body == {"model": "gpt-4o-mini", "provider": "openai"}
    sent = gw.primary.last
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.body["model"] == "gpt-4o-mini"
    assert sent.body["temperature"] == 0.5 and sent.body["user"] == "alice"
    assert raw.headers["x-otari-request-id"] == "req-1"
    assert raw.headers["x-correlation-id"] == "att-primary"
    assert raw.headers["x-request-id"]
    assert gw.backup.requests == []
    assert gw.platform.wait_usage(1) == [
        {"correlation_id": "att-primary", "status": "success", "usage": usage_of()}
    ]
    [report] = gw.platform.usage_requests
    assert report.headers["x-gateway-token"] == GATEWAY_TOKEN


def test_a_model_without_provider_prefix_leaves_the_choice_to_the_platform(gw: World) -> None:
    gw.ask(model="gpt-4o-mini")
    assert gw.platform.last_resolve.body == {"model": "gpt-4o-mini"}


def test_the_older_flat_resolve_shape_is_one_attempt(gw: World) -> None:
    flat = {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "api_key": KEY,
        "api_base": gw.primary.base_url,
        "managed": False,
        "correlation_id": "corr-7",
    }
    gw.platform.push_resolve(body=flat)
    raw = gw.ask()
    assert raw.headers["x-otari-request-id"] == "corr-7"
    assert raw.headers["x-correlation-id"] == "corr-7"
    assert gw.platform.wait_usage(1)[0]["correlation_id"] == "corr-7"


def test_an_anthropic_attempt_is_translated(gw: World) -> None:
    gw.platform.route(gw.anthropic())
    raw = gw.ask(model="anthropic:claude-fake")
    assert raw.parse().choices[0].message.content == DEFAULT_TEXT
    assert gw.claude.last.headers["x-api-key"] == CLAUDE_KEY
    assert gw.claude.last.body["model"] == "claude-fake"
    [report] = gw.platform.wait_usage(1)
    assert report["status"] == "success" and report["usage"]["completion_tokens"] == 5


# -- fallback --------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403, 408, 429, 500, 503])
def test_a_retryable_provider_failure_falls_back(gw: World, status: int) -> None:
    gw.primary.fail(status, "primary is unhappy")
    raw = gw.ask()
    assert raw.parse().choices[0].message.content == DEFAULT_TEXT
    assert raw.headers["x-correlation-id"] == "att-backup"
    assert gw.backup.last.body["model"] == "gpt-4o"
    assert gw.backup.last.headers["authorization"] == f"Bearer {BACKUP_KEY}"
    reports = sorted(gw.platform.wait_usage(2), key=lambda r: r["correlation_id"])
    assert reports == [
        {"correlation_id": "att-backup", "status": "success", "usage": usage_of()},
        {"correlation_id": "att-primary", "status": "error", "error_class": f"http_{status}"},
    ]


def test_a_timeout_falls_back_to_another_provider_kind(world: World) -> None:
    world.platform.route(world.first(), world.anthropic())
    world.start({"request_timeout": 0.5})
    world.primary.push(delay=30)
    raw = world.ask()
    assert raw.headers["x-correlation-id"] == "att-claude"
    classes = {r["correlation_id"]: r.get("error_class") for r in world.platform.wait_usage(2)}
    assert classes == {"att-primary": "timeout", "att-claude": None}


def test_an_unreachable_provider_falls_back(gw: World) -> None:
    dead = attempt(None, "att-dead", api_base=f"http://127.0.0.1:{free_port()}/v1", api_key=KEY)
    gw.platform.route(dead, gw.second())
    assert gw.ask().headers["x-correlation-id"] == "att-backup"
    classes = {r["correlation_id"]: r.get("error_class") for r in gw.platform.wait_usage(2)}
    assert classes == {"att-dead": "conn_err", "att-backup": None}


def test_an_unknown_provider_without_api_base_is_skipped(gw: World) -> None:
    unknown = attempt(None, "att-unknown", name="nowhere-ai")
    gw.platform.route(unknown, gw.second())
    assert gw.ask().headers["x-correlation-id"] == "att-backup"


@pytest.mark.parametrize("status", [400, 404, 422])
def test_a_non_retryable_failure_stops_with_the_providers_answer(gw: World, status: int) -> None:
    gw.primary.fail(status, f"bad request for {KEY}")
    with pytest.raises(openai.APIStatusError) as info:
        gw.ask()
    assert info.value.status_code == status
    assert "bad request for" in info.value.message and KEY not in info.value.message
    assert info.value.response.headers["x-otari-request-id"] == "req-1"
    assert gw.backup.requests == []
    assert gw.platform.wait_usage(1) == [
        {"correlation_id": "att-primary", "status": "error", "error_class": f"http_{status}"}
    ]


def test_a_malformed_answer_stops_with_502(gw: World) -> None:
    gw.primary.push(malformed=True)
    with pytest.raises(openai.APIStatusError) as info:
        gw.ask()
    assert info.value.status_code == 502 and gw.backup.requests == []
    assert gw.platform.wait_usage(1)[0]["error_class"] == "malformed_response"


def test_all_attempts_failing_is_502(gw: World) -> None:
    gw.primary.fail(500, "down")
    gw.backup.fail(429, f"slow down {BACKUP_KEY}")
    with pytest.raises(openai.APIStatusError) as info:
        gw.ask()
    assert info.value.status_code == 502
    assert "All 2 provider attempts failed" in info.value.message
    assert BACKUP_KEY not in info.value.message
    assert info.value.response.headers["x-otari-request-id"] == "req-1"
    assert len(gw.platform.wait_usage(2)) == 2


def test_all_attempts_failing_is_504_when_the_last_timed_out(world: World) -> None:
    world.start({"request_timeout": 0.5})
    world.primary.fail(503, "down")
    world.backup.push(delay=30)
    with pytest.raises(openai.APIStatusError) as info:
        world.ask()
    assert info.value.status_code == 504
    errors = {r["correlation_id"]: r["error_class"] for r in world.platform.wait_usage(2)}
    assert errors == {"att-primary": "http_503", "att-backup": "timeout"}


# -- streaming -------------------------------------------------------------------------------------


def stream_text(world: World, **kwargs: Any) -> tuple[str, list[Any], Any]:
    raw: Any = world.client().chat.completions.with_raw_response.create(
        model="openai:gpt-4o-mini", messages=MESSAGES, stream=True, **kwargs
    )
    chunks: list[Any] = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks, raw


def test_a_stream_is_relayed_and_reported(gw: World) -> None:
    text, chunks, raw = stream_text(gw)
    assert text == DEFAULT_TEXT
    assert all(c.usage is None for c in chunks)  # usage was not asked for: hidden
    assert gw.primary.last.body["stream_options"] == {"include_usage": True}
    assert raw.headers["x-correlation-id"] == "att-primary"
    assert raw.headers["x-otari-request-id"] == "req-1"
    assert gw.platform.wait_usage(1) == [
        {"correlation_id": "att-primary", "status": "success", "usage": usage_of()}
    ]


# Provider usage that breaks the counting rules: past 64 bits, negative, a fraction, text, a
# boolean. Reported as 0 it would bill nothing; the platform gets the gateway's estimate.
BAD_COUNTS = [2**63 + 5, -5, 12.5, "12x", True]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("bad", BAD_COUNTS, ids=repr)
def test_refused_provider_counts_are_reported_as_the_estimate(
    world: World, provider: str, stream: bool, bad: object
) -> None:
    if provider == "anthropic":
        world.platform.route(world.anthropic())
        world.claude.push(usage={"input_tokens": bad})  # translated to the chat format
    else:
        world.primary.push(usage={"prompt_tokens": bad})
    world.start()
    body = json.dumps({"model": f"{provider}:m", "messages": MESSAGES, "stream": stream}).encode()
    reply = httpx.post(
        f"{world.url}/v1/chat/completions",
        content=body,
        headers={"Authorization": f"Bearer {USER_TOKEN}", "content-type": "application/json"},
        timeout=30,
    )
    assert reply.status_code == 200 and "Hello" in reply.text  # served anyway
    if stream:  # a token per event relayed: OpenAI's content chunks and the one that ends
        output = count_tokens(DEFAULT_TEXT) + (provider == "openai")
    else:
        output = -(-len(reply.content) // 4)  # a token per four bytes of the answer
    prompt = -(-len(body) // 4)
    [report] = world.platform.wait_usage(1)
    assert report["status"] == "success" and report["usage_estimated"] is True
    assert report["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
    }


ANSWERS: dict[str, dict[str, Any]] = {
    "openai": {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hi"}}
        ],
    },
    "anthropic": {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [{"type": "text", "text": "Hi"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
    },
}


@pytest.mark.parametrize("usage", ["lots", {}, {"prompt_tokens": None, "input_tokens": None}])
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_usage_that_reports_no_counts_is_reported_as_the_estimate(
    world: World, provider: str, usage: object
) -> None:
    # Not an object, empty, or without an input count: reported as such, the answer is free.
    if provider == "anthropic":
        world.platform.route(world.anthropic())
    fake = world.claude if provider == "anthropic" else world.primary
    fake.push(body={**ANSWERS[provider], "usage": usage})
    world.start()
    raw = world.ask(f"{provider}:m")
    assert raw.parse().choices[0].message.content == "Hi"  # served, translated or not
    [report] = world.platform.wait_usage(1)
    assert report["status"] == "success" and report["usage_estimated"] is True
    output = -(-len(raw.http_response.content) // 4)
    assert report["usage"]["completion_tokens"] == output > 0


def test_the_estimate_of_a_whole_answer_is_at_most_the_output_allowed(gw: World) -> None:
    # A token per four bytes of the answer's JSON (about 40 here), but max_tokens allows 5.
    gw.primary.push(usage={"prompt_tokens": -1})
    raw = gw.ask(max_tokens=5)
    assert len(raw.http_response.content) > 4 * 5
    [report] = gw.platform.wait_usage(1)
    assert report["usage_estimated"] is True and report["usage"]["completion_tokens"] == 5


def test_counts_the_rules_accept_are_reported_as_numbers(gw: World) -> None:
    # The same rules as standalone mode's: a numeric string and a whole float are counts.
    gw.primary.push(usage={"prompt_tokens": "7", "completion_tokens": 2.0, "total_tokens": True})
    gw.ask()
    assert gw.platform.wait_usage(1) == [
        {
            "correlation_id": "att-primary",
            "status": "success",
            "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
        }
    ]


def test_anthropic_usage_is_reported_from_the_providers_numbers(world: World) -> None:
    # Cache traffic counts as prompt: 3 + 20 + 100 tokens, as the translated answer says.
    world.platform.route(world.anthropic())
    cache = {"cache_creation_input_tokens": 20, "cache_read_input_tokens": 100}
    world.claude.push(usage={"input_tokens": 3, **cache})
    world.start()
    completion = world.ask("anthropic:m").parse()
    assert completion.usage.prompt_tokens == 123
    [report] = world.platform.wait_usage(1)
    output = count_tokens(DEFAULT_TEXT)
    assert report == {
        "correlation_id": "att-claude",
        "status": "success",
        "usage": {"prompt_tokens": 123, "completion_tokens": output, "total_tokens": 123 + output},
    }


def test_a_stream_keeps_the_usage_chunk_when_asked(gw: World) -> None:
    _, chunks, _ = stream_text(gw, stream_options={"include_usage": True})
    assert chunks[-1].usage.completion_tokens == count_tokens(DEFAULT_TEXT)


def test_a_stream_falls_back_before_its_first_chunk(gw: World) -> None:
    gw.primary.fail(500, "down")
    text, _, raw = stream_text(gw)
    assert text == DEFAULT_TEXT and raw.headers["x-correlation-id"] == "att-backup"


def test_a_silent_stream_is_abandoned_after_the_first_chunk_timeout(world: World) -> None:
    world.start(first_chunk_timeout=0.5)
    gate = world.primary.gate()
    world.primary.push(hold_after=0, gate=gate)
    text, _, raw = stream_text(world)
    assert text == DEFAULT_TEXT and raw.headers["x-correlation-id"] == "att-backup"
    errors = {r["correlation_id"]: r.get("error_class") for r in world.platform.wait_usage(2)}
    assert errors == {"att-primary": "timeout", "att-backup": None}
    gate.release()


def test_a_stream_whose_only_attempt_times_out_is_504(world: World) -> None:
    world.platform.route(world.first())
    world.start(first_chunk_timeout=0.5)
    world.primary.push(delay=30)
    with pytest.raises(openai.APIStatusError) as info:
        stream_text(world)
    assert info.value.status_code == 504


def test_a_stream_error_event_before_the_first_chunk_falls_back(world: World) -> None:
    world.platform.route(world.anthropic(), world.second())
    world.start()
    world.claude.push(error=Failure(529, "Overloaded"), error_after=0)
    text, _, raw = stream_text(world)
    assert text == DEFAULT_TEXT and raw.headers["x-correlation-id"] == "att-backup"


def test_errors_after_the_first_chunk_go_down_the_stream(gw: World) -> None:
    gw.primary.push(cut_after=3)
    with pytest.raises(openai.APIError) as info:
        stream_text(gw)
    assert "stream_interrupted" in str(info.value.body) or info.value.code == "stream_interrupted"
    assert gw.backup.requests == []
    # Cut streams still report what was consumed: the provider sent no usage, so the
    # gateway's estimate (a token per four bytes of the client's compact JSON body; two
    # content chunks relayed), marked as estimated.
    sent = json.dumps(
        {"messages": MESSAGES, "model": "openai:gpt-4o-mini", "stream": True}, separators=(",", ":")
    )
    prompt = -(-len(sent) // 4)
    assert gw.platform.wait_usage(1) == [
        {
            "correlation_id": "att-primary",
            "status": "error",
            "error_class": "conn_err",
            "usage": {"prompt_tokens": prompt, "completion_tokens": 2, "total_tokens": prompt + 2},
            "usage_estimated": True,
        }
    ]


def test_a_client_leaving_mid_stream_is_reported(gw: World) -> None:
    gate = gw.primary.gate()
    gw.primary.push(hold_after=2, gate=gate)
    body = json.dumps({"model": "openai:gpt-4o-mini", "messages": MESSAGES, "stream": True})
    with httpx.stream(
        "POST",
        f"{gw.url}/v1/chat/completions",
        content=body,
        headers={"Authorization": f"Bearer {USER_TOKEN}"},
    ) as response:
        assert response.status_code == 200
        # Read both events sent before the hold (the role chunk and one content chunk), so
        # what was relayed when the client leaves does not depend on timing.
        events = (line for line in response.iter_lines() if line.startswith("data: "))
        assert len([next(events), next(events)]) == 2
    # The client left: billed from the estimate (prompt from the body, the role chunk and
    # one content chunk relayed before the hold).
    prompt = -(-len(body) // 4)
    assert gw.platform.wait_usage(1) == [
        {
            "correlation_id": "att-primary",
            "status": "error",
            "error_class": "client_disconnected",
            "usage": {"prompt_tokens": prompt, "completion_tokens": 1, "total_tokens": prompt + 1},
            "usage_estimated": True,
        }
    ]
    gate.release()


def test_an_anthropic_stream_is_translated(gw: World) -> None:
    gw.platform.route(gw.anthropic())
    text, chunks, _ = stream_text(gw, stream_options={"include_usage": True})
    assert text == DEFAULT_TEXT
    assert chunks[-1].usage.completion_tokens == count_tokens(DEFAULT_TEXT)
    [report] = gw.platform.wait_usage(1)
    assert report["status"] == "success"
    assert report["usage"]["completion_tokens"] == count_tokens(DEFAULT_TEXT)


# -- authentication --------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "Basic abc", "Bearer", "Token abc", "Bearer a b"])
def test_chat_needs_a_bearer_user_token(gw: World, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    response = httpx.post(
        f"{gw.url}/v1/chat/completions",
        headers=headers,
        json={"model": "openai:gpt-4o-mini", "messages": MESSAGES},
    )
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert gw.platform.resolves == []


def test_a_malformed_request_is_refused_before_the_platform_is_asked(gw: World) -> None:
    response = httpx.post(
        f"{gw.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {USER_TOKEN}"},
        json={"model": "openai:gpt-4o-mini", "messages": []},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages"
    assert gw.platform.resolves == []


# -- the one relay: scrubbing, answers of the wrong kind -------------------------------------------


def test_platform_managed_keys_are_scrubbed_from_streamed_content(gw: World) -> None:
    gw.primary.push(text=f"the key is {KEY} ok")
    text, _, _ = stream_text(gw)
    assert text == "the key is [redacted] ok"


def test_platform_managed_keys_are_scrubbed_from_mid_stream_errors(world: World) -> None:
    world.platform.route(world.anthropic())
    world.start()
    world.claude.push(error=Failure(500, f"overloaded, key {CLAUDE_KEY}"), error_after=3)
    body = httpx.post(
        f"{world.url}/v1/chat/completions",
        timeout=30,
        headers={"Authorization": f"Bearer {USER_TOKEN}"},
        json={"model": "openai:gpt-4o-mini", "messages": MESSAGES, "stream": True},
    ).text
    assert "overloaded, key [redacted]" in body and CLAUDE_KEY not in body


def test_a_json_answer_to_a_stream_request_is_streamed_and_reported(gw: World) -> None:
    completion = {
        "id": "chatcmpl-9",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi there"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6},
    }
    gw.primary.push(body=completion)  # answers JSON although the request streams
    text, chunks, _ = stream_text(gw, stream_options={"include_usage": True})
    assert text == "Hi there" and chunks[-1].usage.total_tokens == 6
    assert gw.platform.wait_usage(1) == [
        {
            "correlation_id": "att-primary",
            "status": "success",
            "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6},
        }
    ]

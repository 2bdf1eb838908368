"""Gateway-run tools end to end: official openai SDK -> otari -> fake model, real tool servers.

The MCP server is a real one (the `mcp` SDK on loopback); web search and the code sandbox are
fakes speaking their protocols; the fake model asks for tool calls as each test scripts it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
)

from tests.support.fakes import Behaviour, Received, ToolCall, thinking_signature
from tests.support.fakes_tools import SANDBOX_TOKEN, FakeSandbox, FakeSearx, McpFake
from tests.support.gateway import Gateway, gateway_factory_fixture

MODEL = "fake:gpt-4o-mini"
QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "what is two plus three"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture
def mcp_server() -> Iterator[McpFake]:
    """A running MCP server without a token."""
    with McpFake() as server:
        yield server


@pytest.fixture
def searx() -> Iterator[FakeSearx]:
    """A running SearXNG fake."""
    with FakeSearx() as server:
        yield server


@pytest.fixture
def sandbox() -> Iterator[FakeSandbox]:
    """A running sandbox fake that wants SANDBOX_TOKEN."""
    with FakeSandbox() as server:
        yield server


@pytest.fixture
def lite_factory(sqlite_url: str) -> Iterator[Callable[..., Gateway]]:
    """Gateways on SQLite only, for behaviour that does not depend on the database."""
    yield from gateway_factory_fixture(sqlite_url)


def start(factory: Callable[..., Gateway], **tools: Any) -> Gateway:
    """A gateway with a [tools] table (short call timeout) and prices for both fakes."""
    gateway = factory(tools={"call_timeout": 2, "allow_loopback": True, **tools})
    gateway.price(MODEL, "1", "2")
    gateway.price("claude:claude-sonnet", "3", "15")
    return gateway


@pytest.fixture
def gateway(
    lite_factory: Callable[..., Gateway], searx: FakeSearx, sandbox: FakeSandbox
) -> Gateway:
    """A SQLite gateway with web search and a sandbox configured."""
    return start(
        lite_factory, web_search_url=searx.url, sandbox_url=sandbox.url, sandbox_token=SANDBOX_TOKEN
    )


def calc(server: McpFake, **fields: Any) -> dict[str, Any]:
    """The request's entry for the MCP fake, named "calc"."""
    return {"name": "calc", "url": server.url, **fields}


def ask(gateway: Gateway, key: str | None = None, **fields: Any) -> ChatCompletion:
    """A chat completion through the SDK; `mcp_servers` and friends go in extra_body."""
    extra = {
        name: fields.pop(name)
        for name in ("mcp_servers", "mcp_server_ids", "max_tool_iterations", "tools_header")
        if name in fields
    }
    client = gateway.client(key or gateway.key())
    fields.setdefault("messages", QUESTION)
    return client.chat.completions.create(
        model=fields.pop("model", MODEL), extra_body=extra or None, **fields
    )


def refused(gateway: Gateway, **fields: Any) -> openai.APIStatusError:
    """The error a request ends with."""
    with pytest.raises(openai.APIStatusError) as info:
        ask(gateway, **fields)
    return info.value


def tokens(requests: list[Received]) -> tuple[int, int]:
    """Prompt and completion tokens the fake model reported, summed over `requests`."""
    usages = [r.usage or {} for r in requests]
    prompt = sum(u.get("prompt_tokens", u.get("input_tokens", 0)) for u in usages)
    return prompt, sum(u.get("completion_tokens", u.get("output_tokens", 0)) for u in usages)


def cost(prompt: int, completion: int, input_price: int = 1, output_price: int = 2) -> Decimal:
    return (Decimal(prompt) * input_price + Decimal(completion) * output_price) / 1_000_000


def tool_messages(request: Received) -> list[dict[str, Any]]:
    return [m for m in request.body["messages"] if m.get("role") == "tool"]


def function_names(reply: ChatCompletion) -> list[str]:
    """The functions the reply asks the client to call."""
    calls = reply.choices[0].message.tool_calls or []
    return [c.function.name for c in calls if isinstance(c, ChatCompletionMessageFunctionToolCall)]


def offered(request: Received) -> list[str]:
    return [tool["function"]["name"] for tool in request.body.get("tools", [])]


# -- MCP: the loop ------------------------------------------------------------------------


def test_multi_step_mcp_loop_runs_each_call_and_bills_every_model_call_once(
    gateway_factory: Callable[..., Gateway], mcp_server: McpFake
) -> None:
    gateway = start(gateway_factory)
    gateway.user("alice", max_budget="10")
    fake = gateway.openai_fake
    fake.push(tool_calls=(ToolCall("calc__add", {"a": 2, "b": 3}),))
    fake.push(
        tool_calls=(
            ToolCall("calc__lookup", {"key": "five"}),
            ToolCall("calc__add", {"a": 5, "b": 1}),
        )
    )
    fake.push(text="Two plus three is five")
    reply = ask(gateway, gateway.key(user_id="alice"), mcp_servers=[calc(mcp_server)])

    assert reply.choices[0].message.content == "Two plus three is five"
    assert reply.choices[0].finish_reason == "stop"
    assert sorted(mcp_server.calls, key=str) == sorted(
        [("add", {"a": 2, "b": 3}), ("lookup", {"key": "five"}), ("add", {"a": 5, "b": 1})], key=str
    )
    first, second, third = fake.requests
    assert set(offered(first)) == {
        "calc__add",
        "calc__lookup",
        "calc__fail",
        "calc__hang",
        "calc__big",
    }
    for request in (first, second, third):
        assert request.body["model"] == "gpt-4o-mini"
        assert not {"mcp_servers", "stream", "max_tool_iterations"} & request.body.keys()
    [result] = tool_messages(second)
    assert result == {"role": "tool", "tool_call_id": "call_000001", "content": "5"}
    assert [m["content"] for m in tool_messages(third)] == ["5", "value of five", "6"]
    assert third.body["messages"][3]["tool_calls"][0]["function"]["name"] == "calc__lookup"

    prompt, completion = tokens(fake.requests)
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (prompt, completion)
    [row] = gateway.usage(1)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (prompt, completion)
    assert row["cost"] == cost(prompt, completion) and row["status"] == "success"
    assert row["user_id"] == "alice" and row["endpoint"] == "/v1/chat/completions"
    user = gateway.get_user("alice")
    assert user["spend"] == cost(prompt, completion) and user["reserved"] == 0


def test_allowed_tools_limits_what_the_model_is_offered_and_can_run(
    gateway: Gateway, mcp_server: McpFake
) -> None:
    gateway.openai_fake.push(tool_calls=(ToolCall("calc__lookup", {"key": "k"}),))
    reply = ask(
        gateway,
        tools=[WEATHER],
        mcp_servers=[calc(mcp_server, allowed_tools=["add", "no_such_tool"])],
    )
    assert offered(gateway.openai_fake.last) == ["get_weather", "calc__add"]
    # A name the gateway did not offer is not the gateway's to run: it goes to the client.
    assert function_names(reply) == ["calc__lookup"]
    assert mcp_server.calls == []


def test_client_tool_calls_end_the_loop_and_reach_the_client(
    gateway: Gateway, mcp_server: McpFake
) -> None:
    fake = gateway.openai_fake
    fake.push(tool_calls=(ToolCall("calc__add", {"a": 1, "b": 1}),))
    fake.push(
        tool_calls=(
            ToolCall("get_weather", {"city": "Paris"}),
            ToolCall("calc__add", {"a": 2, "b": 2}),
        )
    )
    reply = ask(gateway, tools=[WEATHER], tool_choice="required", mcp_servers=[calc(mcp_server)])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert function_names(reply) == ["get_weather"]
    # Only the first round ran on the gateway; the mixed round went back to the client.
    assert mcp_server.calls == [("add", {"a": 1, "b": 1})]
    first, second = fake.requests
    assert first.body["tool_choice"] == "required" and "tool_choice" not in second.body


def test_iteration_cap_answers_422_and_bills_what_was_spent(
    gateway_factory: Callable[..., Gateway], mcp_server: McpFake
) -> None:
    gateway = start(gateway_factory)
    gateway.user("bob", max_budget="10")
    gateway.openai_fake.default = Behaviour(tool_calls=(ToolCall("calc__add", {"a": 1, "b": 2}),))
    error = refused(
        gateway,
        key=gateway.key(user_id="bob"),
        max_tool_iterations=2,
        mcp_servers=[calc(mcp_server)],
    )
    assert error.status_code == 422
    assert isinstance(error.body, dict) and error.body["code"] == "tool_iterations_exceeded"
    assert "2 tool iteration" in error.body["message"]
    # Two rounds of tools, then a third model call that still wanted tools.
    assert len(gateway.openai_fake.requests) == 3 and mcp_server.called() == ["add", "add"]
    prompt, completion = tokens(gateway.openai_fake.requests)
    [row] = gateway.usage(1)
    assert row["status"] == "error" and "max_tool_iterations" in row["error_message"]
    assert (row["prompt_tokens"], row["completion_tokens"]) == (prompt, completion)
    user = gateway.get_user("bob")
    assert user["spend"] == cost(prompt, completion) and user["reserved"] == 0


@pytest.mark.parametrize("value", [0, 26, "3", True])
def test_max_tool_iterations_outside_1_to_25_is_422_before_any_call(
    gateway: Gateway, mcp_server: McpFake, value: object
) -> None:
    error = refused(gateway, max_tool_iterations=value, mcp_servers=[calc(mcp_server)])
    assert error.status_code == 422
    assert isinstance(error.body, dict) and error.body["param"] == "max_tool_iterations"
    assert gateway.openai_fake.requests == [] and mcp_server.authorizations == []


def test_default_cap_is_ten_iterations(gateway: Gateway, mcp_server: McpFake) -> None:
    gateway.openai_fake.default = Behaviour(tool_calls=(ToolCall("calc__add", {"a": 0, "b": 0}),))
    assert refused(gateway, mcp_servers=[calc(mcp_server)]).status_code == 422
    assert len(gateway.openai_fake.requests) == 11 and len(mcp_server.calls) == 10


def test_purpose_hints_and_tools_header_lead_the_conversation(
    gateway: Gateway, mcp_server: McpFake
) -> None:
    ask(
        gateway,
        tools_header="Prefer MCP tools.",
        mcp_servers=[calc(mcp_server, purpose_hint="arithmetic", allowed_tools=["add"])],
    )
    first = gateway.openai_fake.last.body["messages"][0]
    assert first == {
        "role": "system",
        "content": "Prefer MCP tools.\n- calc: arithmetic (tools: calc__add)",
    }
    assert gateway.openai_fake.last.body["messages"][1:] == QUESTION
    assert "tools_header" not in gateway.openai_fake.last.body


def test_tokens_are_sent_as_bearer_and_a_wrong_one_makes_the_server_unavailable(
    gateway: Gateway,
) -> None:
    with McpFake(token="mcp-secret") as server:
        gateway.openai_fake.push(tool_calls=(ToolCall("calc__add", {"a": 2, "b": 2}),))
        reply = ask(gateway, mcp_servers=[calc(server, authorization_token="mcp-secret")])
        assert reply.choices[0].message.content == "Hello from the fake provider"
        assert server.calls == [("add", {"a": 2, "b": 2})]
        assert set(server.authorizations) == {"Bearer mcp-secret"}
        before = len(gateway.openai_fake.requests)
        error = refused(gateway, mcp_servers=[calc(server, authorization_token="wrong")])
    assert error.status_code == 502
    assert isinstance(error.body, dict) and error.body["code"] == "mcp_server_unavailable"
    assert "calc" in error.body["message"]
    assert len(gateway.openai_fake.requests) == before


def test_unreachable_mcp_server_is_502_before_any_model_call(gateway: Gateway) -> None:
    with McpFake() as server:
        url = server.url
    error = refused(gateway, mcp_servers=[{"name": "gone", "url": url}])
    assert error.status_code == 502
    assert isinstance(error.body, dict) and error.body["code"] == "mcp_server_unavailable"
    assert gateway.openai_fake.requests == []
    [row] = gateway.usage(1)
    assert row["status"] == "error" and row["prompt_tokens"] is None


def test_a_failed_server_url_says_the_same_whether_its_port_is_open_or_closed(
    gateway: Gateway,
) -> None:
    with McpFake() as server:
        closed = server.url  # nothing listens here once the fake has stopped
    not_mcp = gateway.openai_fake.base_url  # an open port that speaks no MCP
    messages = set()
    for url in (closed, not_mcp):
        error = refused(gateway, mcp_servers=[{"name": "probe", "url": url}])
        assert error.status_code == 502
        assert isinstance(error.body, dict) and error.body["code"] == "mcp_server_unavailable"
        messages.add(error.body["message"])
    assert messages == {"MCP server 'probe' is unreachable or is not an MCP server"}


def test_loopback_is_refused_by_default_whether_the_port_is_open_or_closed(
    lite_factory: Callable[..., Gateway], mcp_server: McpFake
) -> None:
    gateway = lite_factory(tools={"call_timeout": 2})
    gateway.price(MODEL, "1", "2")
    with McpFake() as stopped:
        closed = stopped.url
    messages = set()
    for url in (mcp_server.url, closed):
        error = refused(gateway, mcp_servers=[{"name": "local", "url": url}])
        assert error.status_code == 400
        assert isinstance(error.body, dict) and error.body["code"] == "tool_url_refused"
        messages.add(error.body["message"])
    assert messages == {
        "mcp_servers[0].url: 127.0.0.1 refused: loopback addresses are not "
        "allowed (tools.allow_loopback is false)"
    }
    assert mcp_server.authorizations == [] and gateway.openai_fake.requests == []


def test_two_servers_are_namespaced_apart(gateway: Gateway, mcp_server: McpFake) -> None:
    with McpFake(name="other") as other:
        gateway.openai_fake.push(tool_calls=(ToolCall("second__add", {"a": 4, "b": 4}),))
        ask(
            gateway,
            mcp_servers=[
                calc(mcp_server, allowed_tools=["add"]),
                {"name": "second", "url": other.url, "allowed_tools": ["add"]},
            ],
        )
        assert offered(gateway.openai_fake.requests[0]) == ["calc__add", "second__add"]
        assert other.calls == [("add", {"a": 4, "b": 4})] and mcp_server.calls == []


# -- Tool failures ----------------------------------------------------------------------------


def test_tool_failures_become_tool_messages_and_the_loop_goes_on(
    lite_factory: Callable[..., Gateway], mcp_server: McpFake
) -> None:
    gateway = start(lite_factory, call_timeout=0.5, max_result_bytes=1000)
    gateway.openai_fake.push(
        tool_calls=(
            ToolCall("calc__fail"),
            ToolCall("calc__hang"),
            ToolCall("calc__big", {"size": 5000}),
            ToolCall("calc__add", {"a": "not a number"}),
            ToolCall("calc__add", {"a": 1, "b": 2}),
        )
    )
    gateway.openai_fake.push(text="Some tools failed")
    reply = ask(gateway, mcp_servers=[calc(mcp_server)])
    assert reply.choices[0].message.content == "Some tools failed"
    failed, hung, big, invalid, fine = (
        m["content"] for m in tool_messages(gateway.openai_fake.last)
    )
    assert failed == "Error: Error executing tool fail"
    assert hung == "Error: the tool did not finish within 0.5s"
    assert big.startswith("x " * 500 + "\n[truncated: the result was 5000 bytes")
    assert invalid.startswith("Error: ") and "validation error" in invalid and fine == "3"
    [row] = gateway.usage(1)
    assert row["status"] == "success"


def test_a_server_answer_over_the_size_cap_is_a_tool_error(
    lite_factory: Callable[..., Gateway], mcp_server: McpFake
) -> None:
    # max_result_bytes 1000 lets backends send up to 1 MiB; this answer is larger.
    gateway = start(lite_factory, max_result_bytes=1000)
    gateway.openai_fake.push(tool_calls=(ToolCall("calc__big", {"size": 1_200_000}),))
    ask(gateway, mcp_servers=[calc(mcp_server)])
    [message] = tool_messages(gateway.openai_fake.last)
    assert message["content"].startswith("Error: ")
    assert "over the 1048576-byte limit" in message["content"]


# -- URL safety and unsupported requests ------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "token", "expected"),
    [
        ("ftp://127.0.0.1/mcp", None, "only http and https"),
        ("http://10.1.2.3/mcp", None, "private and link-local"),
        ("http://169.254.169.254/latest", None, "private and link-local"),
        ("http://[fd00::1]/mcp", None, "private and link-local"),
        ("http://0.0.0.0:9/mcp", None, "never allowed"),
        ("http://mcp.example.com/mcp", "secret", "only sent over https"),
        ("http:///mcp", None, "no host"),
    ],
)
def test_unsafe_urls_are_refused_before_anything_is_spent(
    gateway: Gateway, url: str, token: str | None, expected: str
) -> None:
    server = {"name": "x", "url": url} | ({"authorization_token": token} if token else {})
    error = refused(gateway, mcp_servers=[server])
    assert error.status_code == 400
    assert isinstance(error.body, dict) and error.body["code"] == "tool_url_refused"
    assert expected in error.body["message"] and "mcp_servers[0].url" in error.body["message"]
    assert gateway.openai_fake.requests == []


def test_loopback_can_be_switched_off_also_behind_a_name(
    lite_factory: Callable[..., Gateway], mcp_server: McpFake
) -> None:
    gateway = start(lite_factory, allow_loopback=False)
    for url in (mcp_server.url, mcp_server.url.replace("127.0.0.1", "localhost")):
        error = refused(gateway, mcp_servers=[{"name": "local", "url": url}])
        assert error.status_code == 400 and "loopback" in error.message
    assert gateway.openai_fake.requests == [] and mcp_server.authorizations == []


@pytest.mark.parametrize(
    ("fields", "param", "expected"),
    [
        (
            {"mcp_server_ids": ["0b5c3c63-6f5f-4a38-a0a0-1d6b56f0f1d9"]},
            "mcp_server_ids",
            "connected mode",
        ),
        (
            {"n": 2, "mcp_servers": [{"name": "a", "url": "http://127.0.0.1:9/"}]},
            "n",
            "single choice",
        ),
        (
            {
                "mcp_servers": [
                    {"name": "a", "url": "http://127.0.0.1:9/"},
                    {"name": "a", "url": "http://127.0.0.1:9/"},
                ]
            },
            "mcp_servers",
            "used twice",
        ),
        ({"mcp_servers": [{"url": "http://127.0.0.1:9/"}]}, "mcp_servers", ".name"),
        ({"mcp_servers": {"name": "a"}}, "mcp_servers", "array of objects"),
        (
            {"tools": [{"type": "web_search"}, {"type": "web_search_preview"}]},
            "tools",
            "one web_search",
        ),
        ({"tools": [{"type": "web_search", "max_results": 50}]}, "tools", "max_results"),
        (
            {
                "tools": [
                    {"type": "code_execution"},
                    {"type": "function", "function": {"name": "code_execution"}},
                ]
            },
            "tools",
            "rename it",
        ),
    ],
)
def test_unsupported_combinations_are_400_with_a_message(
    gateway: Gateway, fields: dict[str, Any], param: str, expected: str
) -> None:
    error = refused(gateway, **fields)
    assert error.status_code == 400
    assert isinstance(error.body, dict) and error.body["param"] == param
    assert expected in error.body["message"]
    assert gateway.openai_fake.requests == []


def test_tools_without_a_configured_backend_are_400(lite_factory: Callable[..., Gateway]) -> None:
    gateway = start(lite_factory)
    for kind, key in (("web_search", "web_search_url"), ("code_interpreter", "sandbox_url")):
        error = refused(gateway, tools=[{"type": kind}])
        assert error.status_code == 400 and key in error.message
        assert isinstance(error.body, dict) and error.body["code"] == "tool_not_configured"


# -- Web search -------------------------------------------------------------------------------


def test_web_search_runs_on_the_backend_with_the_tools_limits(
    gateway: Gateway, searx: FakeSearx
) -> None:
    gateway.openai_fake.push(tool_calls=(ToolCall("web_search", {"query": "otari gateway"}),))
    gateway.openai_fake.push(text="otari is a gateway [docs.example.com]")
    reply = ask(
        gateway, tools=[{"type": "web_search", "max_results": 2, "blocked_domains": ["spam.test"]}]
    )
    assert reply.choices[0].message.content == "otari is a gateway [docs.example.com]"
    assert searx.queries == ["otari gateway"] and searx.last.query["format"] == "json"
    [message] = tool_messages(gateway.openai_fake.last)
    found = json.loads(message["content"])
    assert found["query"] == "otari gateway"
    assert found["results"] == [
        {
            "title": "otari docs",
            "url": "https://docs.example.com/otari",
            "snippet": "otari is a self-hosted gateway",
        },
        {
            "title": "LLM gateways compared",
            "url": "https://blog.example.org/gateways",
            "snippet": "otari, and others",
        },
    ]
    assert offered(gateway.openai_fake.requests[0]) == ["web_search"]


def test_web_search_allowed_domains_keep_only_those_sites(
    gateway: Gateway, searx: FakeSearx
) -> None:
    gateway.openai_fake.push(tool_calls=(ToolCall("web_search", {"query": "otari"}),))
    ask(
        gateway,
        tools=[
            {
                "type": "web_search_20250305",
                "allowed_domains": ["example.net", "https://docs.example.com/"],
            }
        ],
    )
    [message] = tool_messages(gateway.openai_fake.last)
    urls = [r["url"] for r in json.loads(message["content"])["results"]]
    assert urls == ["https://docs.example.com/otari", "https://news.example.net/otari"]


def test_web_search_backend_failure_is_a_tool_error(gateway: Gateway, searx: FakeSearx) -> None:
    searx.fail(500, "engine exploded")
    gateway.openai_fake.push(
        tool_calls=(
            ToolCall("web_search", {"query": "otari"}),
            ToolCall("web_search", {"query": ""}),
        )
    )
    reply = ask(gateway, tools=[{"type": "web_search"}])
    assert reply.choices[0].message.content == "Hello from the fake provider"
    failed, empty = (m["content"] for m in tool_messages(gateway.openai_fake.last))
    assert failed == "Error: the search backend answered HTTP 500"
    assert empty == "Error: 'query' must be a non-empty string"


# -- Code execution ---------------------------------------------------------------------------


def test_code_runs_in_one_sandbox_session_deleted_at_the_end(
    gateway: Gateway, sandbox: FakeSandbox
) -> None:
    fake = gateway.openai_fake
    fake.push(tool_calls=(ToolCall("code_execution", {"code": "x = 40"}),))
    fake.push(tool_calls=(ToolCall("code_execution", {"code": "print(x + 2)"}),))
    fake.push(tool_calls=(ToolCall("code_execution", {"code": "raise ValueError"}),))
    fake.push(text="It printed 42")
    reply = ask(gateway, tools=[{"type": "code_interpreter"}])
    assert reply.choices[0].message.content == "It printed 42"
    [session] = sandbox.created
    assert sandbox.executed == [
        (session, "x = 40"),
        (session, "print(x + 2)"),
        (session, "raise ValueError"),
    ]
    assert sandbox.deleted == [session]
    assert all(r.headers["authorization"] == f"Bearer {SANDBOX_TOKEN}" for r in sandbox.requests)
    outputs = [json.loads(m["content"]) for m in tool_messages(fake.last)]
    assert outputs[1] == {"stdout": "[2] print(x + 2)", "stderr": "", "exit_code": 0}
    assert outputs[2]["exit_code"] == 1 and "Traceback" in outputs[2]["stderr"]


def test_sandbox_refusal_is_a_tool_error_and_no_session_is_left(
    lite_factory: Callable[..., Gateway],
) -> None:
    with FakeSandbox(api_key="another-token") as box:
        gateway = start(lite_factory, sandbox_url=box.url, sandbox_token=SANDBOX_TOKEN)
        gateway.openai_fake.push(tool_calls=(ToolCall("code_execution", {"code": "1"}),))
        ask(gateway, tools=[{"type": "code_execution"}])
        [message] = tool_messages(gateway.openai_fake.last)
        assert message["content"] == ("Error: the sandbox answered HTTP 401: invalid sandbox token")
        assert box.created == [] and box.sessions == {}


# -- Streaming --------------------------------------------------------------------------------


def test_streaming_runs_the_tools_first_then_streams_the_answer_with_summed_usage(
    gateway: Gateway, mcp_server: McpFake
) -> None:
    gateway.openai_fake.push(tool_calls=(ToolCall("calc__add", {"a": 2, "b": 3}),))
    gateway.openai_fake.push(text="The sum is 5")
    client = gateway.client(gateway.key())
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=QUESTION,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"mcp_servers": [calc(mcp_server)]},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The sum is 5"
    assert chunks[-2].choices[0].finish_reason == "stop"
    prompt, completion = tokens(gateway.openai_fake.requests)
    usage = chunks[-1].usage
    assert usage is not None and not chunks[-1].choices
    assert (usage.prompt_tokens, usage.completion_tokens) == (prompt, completion)
    assert all("stream" not in r.body for r in gateway.openai_fake.requests)
    [row] = gateway.usage(1)
    assert row["cost"] == cost(prompt, completion)


def test_streaming_hands_client_tool_calls_over_as_chunks(
    gateway: Gateway, mcp_server: McpFake
) -> None:
    gateway.openai_fake.push(tool_calls=(ToolCall("get_weather", {"city": "Oslo"}),))
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        timeout=30,
        headers={"Authorization": f"Bearer {gateway.key()}"},
        json={
            "model": MODEL,
            "messages": QUESTION,
            "stream": True,
            "tools": [WEATHER],
            "mcp_servers": [calc(mcp_server)],
        },
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert all("usage" not in c for c in chunks)
    [call] = [
        d["tool_calls"][0] for c in chunks if (d := c["choices"][0]["delta"]).get("tool_calls")
    ]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city":"Oslo"}'}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


# -- Budgets and providers --------------------------------------------------------------------


def test_budget_holds_grow_with_the_loop_and_refuse_before_overspending(
    gateway_factory: Callable[..., Gateway], mcp_server: McpFake
) -> None:
    gateway = start(gateway_factory)
    # Enough for the first call's worst case, not for the second, whose prompt carries a
    # 60 kB tool result: 30,000 tokens, $0.03, were it sent.
    gateway.user("carol", max_budget="0.002")
    gateway.openai_fake.push(tool_calls=(ToolCall("calc__big", {"size": 60_000}),))
    error = refused(
        gateway,
        key=gateway.key(user_id="carol"),
        max_tokens=50,
        mcp_servers=[calc(mcp_server, allowed_tools=["big"])],
    )
    assert error.status_code == 402
    assert isinstance(error.body, dict) and error.body["code"] == "budget_exceeded"
    assert len(gateway.openai_fake.requests) == 1 and mcp_server.called() == ["big"]
    prompt, completion = tokens(gateway.openai_fake.requests)
    [row] = gateway.usage(1)
    assert row["status"] == "error" and row["cost"] == cost(prompt, completion)
    user = gateway.get_user("carol")
    assert user["spend"] == cost(prompt, completion) <= Decimal("0.002")
    assert user["reserved"] == 0


def test_token_limit_holds_grow_with_the_loop_too(
    gateway_factory: Callable[..., Gateway], mcp_server: McpFake
) -> None:
    gateway = start(gateway_factory)
    # The first call fits 5,000 tokens; the second's prompt (a 60 kB tool result) does not.
    budget = gateway.admin.post("/v1/budgets", json={"token_limit": 5000}).json()
    gateway.admin.post("/v1/users", json={"user_id": "dave", "budget_id": budget["budget_id"]})
    gateway.openai_fake.push(tool_calls=(ToolCall("calc__big", {"size": 60_000}),))
    error = refused(
        gateway,
        key=gateway.key(user_id="dave"),
        max_tokens=50,
        mcp_servers=[calc(mcp_server, allowed_tools=["big"])],
    )
    assert error.status_code == 402
    assert isinstance(error.body, dict) and error.body["message"].startswith(
        "Token limit exceeded for user 'dave'"
    )
    assert len(gateway.openai_fake.requests) == 1
    prompt, completion = tokens(gateway.openai_fake.requests)
    gateway.usage(1)
    user = gateway.get_user("dave")
    assert (user["current_requests"], user["current_tokens"]) == (1, prompt + completion)
    assert (user["reserved_requests"], user["reserved_tokens"]) == (0, 0)


def test_anthropic_providers_loop_through_the_translation(
    gateway: Gateway, mcp_server: McpFake
) -> None:
    claude = gateway.anthropic_fake
    claude.push(tool_calls=(ToolCall("calc__add", {"a": 20, "b": 22}),))
    claude.push(text="Forty-two")
    reply = ask(gateway, model="claude:claude-sonnet", mcp_servers=[calc(mcp_server)])
    assert reply.choices[0].message.content == "Forty-two"
    assert mcp_server.calls == [("add", {"a": 20, "b": 22})]
    second = claude.last.body
    assert "mcp_servers" not in second
    blocks = [b for m in second["messages"] for b in m["content"] if isinstance(m["content"], list)]
    [result] = [b for b in blocks if b["type"] == "tool_result"]
    assert result["content"] in ("42", [{"type": "text", "text": "42"}])
    prompt, completion = tokens(claude.requests)
    [row] = gateway.usage(1)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (prompt, completion)
    assert row["cost"] == cost(prompt, completion, 3, 15)


def test_anthropic_thinking_survives_the_gateway_tool_loop(
    gateway: Gateway, mcp_server: McpFake
) -> None:
    claude = gateway.anthropic_fake
    thought = "Add them with the tool"
    claude.push(thinking=thought, tool_calls=(ToolCall("calc__add", {"a": 20, "b": 22}),))
    claude.push(text="Forty-two")
    reply = ask(
        gateway,
        model="claude:claude-sonnet",
        mcp_servers=[calc(mcp_server)],
        reasoning_effort="low",
    )
    assert reply.choices[0].message.content == "Forty-two"
    second = claude.last.body
    assert second["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    # The signed thinking went back first in the assistant turn, as the provider requires.
    assert second["messages"][1]["content"][0] == {
        "type": "thinking",
        "thinking": thought,
        "signature": thinking_signature(thought),
    }
    assert second["messages"][1]["content"][1]["type"] == "tool_use"


def test_mcp_sessions_outlive_slow_model_calls(
    lite_factory: Callable[..., Gateway], mcp_server: McpFake
) -> None:
    gateway = start(lite_factory, call_timeout=1.5)
    fake = gateway.openai_fake
    fake.push(tool_calls=(ToolCall("calc__add", {"a": 1, "b": 1}),))
    # The model thinks for several call timeouts while the MCP session sits idle.
    fake.push(tool_calls=(ToolCall("calc__add", {"a": 2, "b": 2}),), delay=4.5)
    fake.push(text="done")
    assert ask(gateway, mcp_servers=[calc(mcp_server)]).choices[0].message.content == "done"
    assert [m["content"] for m in tool_messages(fake.last)] == ["2", "4"]

"""The pure parts of gateway-run tools: [tools] config, URL rules, request checks, rendering."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest

from otari_server.accounting.counts import consumption
from otari_server.errors import InvalidRequest
from otari_server.settings import ConfigError, Settings
from otari_server.tools import answer, plan, search, urls
from otari_server.tools.config import ToolsConfig, tools_config
from otari_server.tools.loop import Meter
from otari_server.tools.results import describe, truncate
from otari_server.tools.toolbox import function_name

# -- [tools] ----------------------------------------------------------------------------------


def test_config_defaults_are_documented_values() -> None:
    config = tools_config(Settings())
    assert config == ToolsConfig()
    assert (config.allow_loopback, config.allow_private_networks) == (False, False)
    assert (config.call_timeout, config.max_result_bytes) == (30.0, 65536)
    assert config.max_response_bytes == 1 << 20


def test_config_reads_every_key() -> None:
    config = tools_config(
        Settings(
            tools={
                "web_search_url": "http://searx:8080/",
                "sandbox_url": "https://sandbox.internal",
                "sandbox_token": "t",
                "allow_loopback": "true",
                "allow_private_networks": ["10.1.0.0/16", "fd00::/8"],
                "call_timeout": "2.5",
                "max_result_bytes": 100_000,
                "header": "Use the tools.",
            }
        )
    )
    assert config.web_search_url == "http://searx:8080"
    assert config.sandbox_url == "https://sandbox.internal" and config.sandbox_token == "t"
    assert config.allow_loopback is True and config.allow_private_networks is False
    assert config.private_networks == (
        ipaddress.ip_network("10.1.0.0/16"),
        ipaddress.ip_network("fd00::/8"),
    )
    assert (config.call_timeout, config.max_result_bytes) == (2.5, 100_000)
    assert config.max_response_bytes == 1_600_000 and config.header == "Use the tools."


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"search_url": "x"}, "tools.search_url: unknown setting"),
        ({"web_search_url": "searx:8080"}, "tools.web_search_url: expected an http(s) URL"),
        ({"sandbox_url": 5}, "tools.sandbox_url: expected a string"),
        ({"allow_loopback": "maybe"}, "tools.allow_loopback: expected true or false"),
        (
            {"allow_private_networks": ["10.0.0.0/33"]},
            "tools.allow_private_networks: expected true, false or a list of networks such as "
            "\"10.0.0.0/8\"; '10.0.0.0/33' is not a network",
        ),
        (
            {"allow_private_networks": "sometimes"},
            "tools.allow_private_networks: expected true or false or a list of networks",
        ),
        ({"call_timeout": 0}, "tools.call_timeout: expected a number above zero"),
        ({"call_timeout": "soon"}, "tools.call_timeout: expected a number above zero"),
        ({"max_result_bytes": 1.5}, "tools.max_result_bytes: expected an integer above zero"),
        ({"max_result_bytes": True}, "tools.max_result_bytes: expected an integer above zero"),
    ],
)
def test_config_errors_name_the_key_in_one_line(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        tools_config(Settings(tools=table))
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


# -- URL rules --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("8.8.8.8", urls.PUBLIC),
        ("2606:4700::1111", urls.PUBLIC),
        ("127.0.0.2", urls.LOOPBACK),
        ("::1", urls.LOOPBACK),
        ("::ffff:127.0.0.1", urls.LOOPBACK),
        ("10.0.0.1", urls.PRIVATE),
        ("172.16.5.4", urls.PRIVATE),
        ("192.168.1.1", urls.PRIVATE),
        ("169.254.169.254", urls.PRIVATE),
        ("fe80::1", urls.PRIVATE),
        ("fd12::1", urls.PRIVATE),
        ("100.64.0.1", urls.PRIVATE),
        ("::ffff:10.0.0.1", urls.PRIVATE),
        ("0.0.0.0", urls.RESERVED),
        ("224.0.0.1", urls.RESERVED),
        ("240.0.0.1", urls.RESERVED),
    ],
)
def test_addresses_are_classified(address: str, kind: str) -> None:
    assert urls.kind(ipaddress.ip_address(address)) == kind


def test_refusal_follows_the_configuration() -> None:
    def refused(address: str, config: ToolsConfig) -> bool:
        return urls.refusal(ipaddress.ip_address(address), config) is not None

    default = ToolsConfig()
    assert not refused("8.8.8.8", default) and refused("127.0.0.1", default)
    assert refused("::1", default) and refused("::ffff:127.0.0.1", default)
    assert refused("10.1.2.3", default) and refused("169.254.169.254", default)
    assert not refused("127.0.0.1", ToolsConfig(allow_loopback=True))
    everything = ToolsConfig(allow_private_networks=True)
    assert not refused("10.1.2.3", everything) and not refused("169.254.169.254", everything)
    assert refused("0.0.0.0", everything)
    some = ToolsConfig(private_networks=(ipaddress.ip_network("10.1.0.0/16"),))
    assert not refused("10.1.2.3", some) and refused("10.2.0.1", some)
    assert refused("169.254.169.254", some)


@pytest.mark.parametrize(
    ("url", "token", "problem"),
    [
        ("https://mcp.example.com/mcp", True, None),
        ("http://mcp.example.com/mcp", False, None),
        ("http://mcp.example.com/mcp", True, "only sent over https"),
        ("http://127.0.0.1:8000/mcp", True, None),
        ("http://localhost:8000/mcp", True, None),
        ("http://[::1]:8000/mcp", True, None),
        ("http://10.0.0.1/mcp", False, "private and link-local"),
        ("https://[fe80::1%25eth0]/mcp", False, "private and link-local"),
        ("http://mcp.example.com:99999/mcp", False, "invalid port"),
        ("javascript:alert(1)", False, "only http and https"),
    ],
)
def test_check_refuses_what_the_url_alone_shows(url: str, token: bool, problem: str | None) -> None:
    config = ToolsConfig(allow_loopback=True)
    if problem is None:
        urls.check(url, config, where="u", token=token)
        return
    with pytest.raises(urls.UnsafeUrl) as info:
        urls.check(url, config, where="u", token=token)
    assert problem in info.value.message and info.value.status == 400


# -- Request checks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"messages": []}, False),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, False),
        ({"mcp_servers": None}, False),
        ({"mcp_servers": []}, True),
        ({"max_tool_iterations": 3}, True),
        ({"tools": [{"type": "web_search_preview"}]}, True),
        ({"tools": [{"type": "code_interpreter"}]}, True),
        ({"tools": [{"type": "code_execution"}]}, True),
        ({"tools": [{"type": "code_execution_20250522"}]}, False),  # Anthropic's own, passed on
    ],
)
def test_wanted_only_for_gateway_tools_and_fields(body: dict[str, Any], expected: bool) -> None:
    assert plan.wanted(body) is expected


def test_model_request_drops_gateway_fields_and_forced_choices_after_the_first_call() -> None:
    body = {
        "model": "m",
        "messages": [],
        "stream": True,
        "stream_options": {},
        "mcp_servers": [],
        "max_tool_iterations": 3,
        "tools_header": "h",
        "tools": [{"type": "function", "function": {"name": "f"}}, {"type": "web_search"}],
        "tool_choice": "required",
        "temperature": 0.2,
    }
    checked = plan.parse(body, ToolsConfig(web_search_url="http://s"))
    function = {"type": "function", "function": {"name": "web_search"}}
    messages = [{"role": "user", "content": "hi"}]
    first = plan.model_request(checked, messages, [function], first=True)
    assert first == {
        "model": "m",
        "messages": messages,
        "temperature": 0.2,
        "tool_choice": "required",
        "tools": [{"type": "function", "function": {"name": "f"}}, function],
    }
    assert "tool_choice" not in plan.model_request(checked, messages, [function], first=False)
    bare = plan.parse(
        {
            "model": "m",
            "messages": [],
            "mcp_servers": [],
            "tool_choice": "auto",
            "parallel_tool_calls": True,
        },
        ToolsConfig(),
    )
    assert plan.model_request(bare, messages, [], first=True) == {
        "model": "m",
        "messages": messages,
    }


def test_parse_reads_servers_and_web_search_options() -> None:
    checked = plan.parse(
        {
            "mcp_servers": [
                {
                    "name": "a",
                    "url": "https://a.example/mcp",
                    "authorization_token": "t",
                    "allowed_tools": ["x"],
                    "purpose_hint": "docs",
                }
            ],
            "tools": [
                {
                    "type": "web_search",
                    "max_results": 3,
                    "allowed_domains": ["*.Example.com", "https://docs.python.org/3/"],
                }
            ],
        },
        ToolsConfig(web_search_url="http://s"),
    )
    assert checked.servers == (
        plan.McpServer("a", "https://a.example/mcp", "t", frozenset({"x"}), "docs"),
    )
    assert checked.web_search == plan.WebSearch(3, ("example.com", "docs.python.org"), ())
    assert checked.max_iterations == plan.DEFAULT_ITERATIONS
    assert plan.hints(checked, {"a": ["a__x"]}) == {
        "role": "system",
        "content": f"{plan.DEFAULT_HEADER}\n- a: docs (tools: a__x)",
    }
    assert plan.hints(plan.parse({}, ToolsConfig()), {}) is None
    assert plan.hints(plan.parse({}, ToolsConfig(header="H")), {}) == {
        "role": "system",
        "content": "H",
    }


def test_parse_refuses_a_bad_allowed_tools_list() -> None:
    with pytest.raises(InvalidRequest, match="allowed_tools"):
        plan.parse(
            {"mcp_servers": [{"name": "a", "url": "https://a.example", "allowed_tools": "x"}]},
            ToolsConfig(),
        )


# -- Web search filters, names, sizes, rendering ----------------------------------------------


def test_search_results_pass_allowed_then_blocked_domains() -> None:
    spec = plan.WebSearch(allowed_domains=("example.com",), blocked_domains=("ads.example.com",))
    assert search.kept("https://example.com/a", spec)
    assert search.kept("https://docs.example.com/a", spec)
    assert not search.kept("https://ads.example.com/a", spec)
    assert not search.kept("https://x.ads.example.com/a", spec)
    assert not search.kept("https://notexample.com/a", spec)
    assert not search.kept("ftp://example.com/a", spec)
    assert search.kept("https://anything.org", plan.WebSearch())


def test_function_names_are_valid_unique_and_short() -> None:
    assert function_name("calc", "add", set()) == "calc__add"
    assert function_name("my server", "do.it", set()) == "my_server__do_it"
    long = function_name("s" * 100, "tool", set())
    assert len(long) == 64 and long.startswith("s" * 55 + "_")
    clash = function_name("a.b", "c", {"a_b__c"})
    assert clash != "a_b__c" and clash.startswith("a_b__c_") and len(clash) == 15


def test_truncate_cuts_at_a_byte_limit_without_splitting_characters() -> None:
    assert truncate("short", 10) == "short"
    cut = truncate("é" * 10, 5)
    assert cut.startswith("éé\n[truncated: the result was 20 bytes")


def test_describe_looks_inside_exception_groups() -> None:
    group = ExceptionGroup("outer", [ExceptionGroup("inner", [ValueError("deep")])])
    assert describe(group) == "ValueError: deep"
    assert describe(TimeoutError()) == "TimeoutError"


def test_stream_events_carry_the_answer_tool_calls_and_usage() -> None:
    meter = Meter()
    meter.add(consumption({"prompt_tokens": 3, "completion_tokens": 4}))
    meter.add(
        consumption(
            {
                "prompt_tokens": 5,
                "completion_tokens": 6,
                "prompt_tokens_details": {"cached_tokens": 2},
            }
        )
    )
    summed = answer.usage(meter)
    assert summed == {
        "prompt_tokens": 8,
        "completion_tokens": 10,
        "total_tokens": 18,
        "prompt_tokens_details": {"cached_tokens": 2, "cache_creation_tokens": 0},
    }
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    completion = {
        "id": "x",
        "created": 1,
        "model": "m",
        "usage": summed,
        "choices": [
            {
                "message": {"role": "assistant", "content": "hi", "tool_calls": [call]},
                "finish_reason": "tool_calls",
            }
        ],
    }
    events = answer.events(completion, include_usage=True)
    assert events[-1] == b"data: [DONE]\n\n"
    chunks = [json.loads(event.decode().removeprefix("data: ")) for event in events[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"content": "hi"},
        {"tool_calls": [{"index": 0, **call}]},
        {},
    ]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1] == {
        "id": "x",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [],
        "usage": summed,
    }
    assert all(c["usage"] is None for c in chunks[:-1])

"""Provider base URLs are forgiving, and a 404 for the endpoint names it (issue 22 item 6)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import anthropic
import httpx
import openai
import pytest

from otari_server.providers.registry import api_root
from tests.support.fakes import DEFAULT_TEXT, FakeAnthropic, FakeOpenAI
from tests.support.gateway import MASTER
from tests.support.servers import make_settings, running

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("base_url", "kind", "root"),
    [
        ("http://host:8000", "anthropic", "http://host:8000/v1"),
        ("http://host:8000/", "anthropic", "http://host:8000/v1"),
        ("http://host:8000/v1", "anthropic", "http://host:8000/v1"),
        (
            "https://api.deepseek.com/anthropic",
            "anthropic",
            "https://api.deepseek.com/anthropic/v1",
        ),
        ("http://host:8000", "openai", "http://host:8000/v1"),
        ("http://host:8000/v1/", "openai", "http://host:8000/v1"),
        ("https://host/api/openai", "openai", "https://host/api/openai"),
        (
            "https://generativelanguage.googleapis.com/v1beta/openai",
            "openai",
            "https://generativelanguage.googleapis.com/v1beta/openai",
        ),
    ],
)
def test_the_api_root_rule(base_url: str, kind: str, root: str) -> None:
    assert api_root(base_url, kind) == root  # type: ignore[arg-type]


@dataclass
class World:
    url: str
    openai_fake: FakeOpenAI
    anthropic_fake: FakeAnthropic


@pytest.fixture
def world(sqlite_url: str) -> Iterator[World]:
    with ExitStack() as stack:
        fake = stack.enter_context(FakeOpenAI(api_key="sk-o"))
        claude = stack.enter_context(FakeAnthropic(api_key="sk-a"))
        providers = {
            # Each provider type, spelled with and without /v1.
            "oai_bare": {"type": "openai", "base_url": fake.url, "api_key": "sk-o"},
            "oai_v1": {"type": "openai", "base_url": fake.base_url, "api_key": "sk-o"},
            "ant_bare": {"type": "anthropic", "base_url": claude.url, "api_key": "sk-a"},
            "ant_v1": {"type": "anthropic", "base_url": claude.base_url, "api_key": "sk-a"},
            # A path the provider does not serve.
            "wrong": {"type": "openai", "base_url": f"{fake.url}/openai", "api_key": "sk-o"},
        }
        url = stack.enter_context(
            running(make_settings(sqlite_url, providers=providers, require_pricing=False))
        )
        yield World(url, fake, claude)


def test_both_spellings_work_for_both_provider_types(world: World) -> None:
    master = MASTER["Authorization"][7:]
    with (
        openai.OpenAI(base_url=f"{world.url}/v1", api_key=master, max_retries=0) as chat,
        anthropic.Anthropic(base_url=world.url, api_key=master, max_retries=0) as messages,
    ):
        ask_both(world, chat, messages)


def ask_both(world: World, chat: openai.OpenAI, messages: anthropic.Anthropic) -> None:
    for name in ("oai_bare", "oai_v1", "ant_bare", "ant_v1"):
        reply = chat.chat.completions.create(model=f"{name}:m", messages=MESSAGES)  # type: ignore[arg-type]
        assert reply.choices[0].message.content == DEFAULT_TEXT, name
        answer = messages.messages.create(model=f"{name}:m", max_tokens=20, messages=MESSAGES)  # type: ignore[arg-type]
        assert answer.content[0].text == DEFAULT_TEXT, name  # type: ignore[union-attr]
    assert {call.path for call in world.openai_fake.requests} == {"/v1/chat/completions"}
    assert {call.path for call in world.anthropic_fake.requests} == {"/v1/messages"}


def test_a_404_for_the_endpoint_names_the_path_not_the_host(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="otari.upstream"):
        for path in ("/v1/chat/completions", "/v1/messages"):
            reply = httpx.post(
                world.url + path,
                headers=MASTER,
                json={"model": "wrong:m", "max_tokens": 5, "messages": MESSAGES},
            )
            assert reply.status_code == 404
            text = reply.text
            assert "127.0.0.1" not in text
            message = reply.json()["error"]["message"]
            assert message == (
                "Provider 'wrong': Not Found: the provider has no endpoint "
                "/openai/chat/completions (check its base_url)"
            )
    logged = [r.getMessage() for r in caplog.records if r.name == "otari.upstream"]
    assert logged and all(
        f"{world.openai_fake.url}/openai/chat/completions" in line for line in logged
    )


def test_a_404_for_a_model_keeps_the_providers_words(world: World) -> None:
    world.openai_fake.fail(404, "The model `m` does not exist", code="model_not_found")
    reply = httpx.post(
        world.url + "/v1/chat/completions",
        headers=MASTER,
        json={"model": "oai_v1:m", "messages": MESSAGES},
    )
    assert reply.status_code == 404
    assert reply.json()["error"]["message"] == "Provider 'oai_v1': The model `m` does not exist"

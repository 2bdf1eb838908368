"""Stored responses through otari: GET/DELETE /v1/responses/{id}, input_items and cancel.

The official openai SDK talks to otari; each call must reach the provider that created the
response (the FakeOpenAIResponses that stores it), only for the user who made it; responses
otari made by translation (the Anthropic-type "claude") answer 404 saying why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import openai
import pytest

from tests.support.fakes import DEFAULT_TEXT
from tests.support.fakes_responses import FakeOpenAIResponses
from tests.support.gateway import UPSTREAM_KEY, Gateway, gateway_factory_fixture
from tests.support.servers import MASTER_KEY

OPENAI_MODEL = "fake:gpt-4o-mini"
CLAUDE_MODEL = "claude:claude-sonnet"


@pytest.fixture
def gateway_factory(database_url: str) -> Iterator[Callable[..., Gateway]]:
    yield from gateway_factory_fixture(database_url, FakeOpenAIResponses)


@pytest.fixture
def gateway(gateway_factory: Callable[..., Gateway]) -> Gateway:
    gw = gateway_factory()
    gw.price(OPENAI_MODEL, "1", "2")
    gw.price(CLAUDE_MODEL, "3", "15")
    gw.user("alice")
    gw.user("bob")
    return gw


def fake(gateway: Gateway) -> FakeOpenAIResponses:
    assert isinstance(gateway.openai_fake, FakeOpenAIResponses)
    return gateway.openai_fake


def test_retrieve_input_items_and_delete_reach_the_provider_that_made_it(gateway: Gateway) -> None:
    client = gateway.client(gateway.key(user_id="alice"))
    created = client.responses.create(model=OPENAI_MODEL, input="say hello please")
    got = client.responses.retrieve(created.id)
    assert got.id == created.id and got.output_text == DEFAULT_TEXT
    sent = fake(gateway).last
    assert (sent.method, sent.path) == ("GET", f"/v1/responses/{created.id}")
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    items = client.responses.input_items.list(created.id, limit=5, order="asc")
    assert [item.type for item in items.data] == ["message"]
    assert fake(gateway).last.query == {"limit": "5", "order": "asc"}
    # Another key of the same user reaches it too.
    other = gateway.client(gateway.key(user_id="alice"))
    assert other.responses.retrieve(created.id).id == created.id
    client.responses.delete(created.id)
    assert (fake(gateway).last.method, fake(gateway).last.path) == (
        "DELETE",
        f"/v1/responses/{created.id}",
    )
    assert created.id not in fake(gateway).stored
    calls = len(fake(gateway).requests)
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.retrieve(created.id)
    assert caught.value.body["message"] == f"Response '{created.id}' not found"  # type: ignore[index]
    assert len(fake(gateway).requests) == calls  # the gateway forgot it: no provider call


def test_a_streamed_response_is_reachable_too(gateway: Gateway) -> None:
    client = gateway.client(gateway.key(user_id="alice"))
    events = list(client.responses.create(model=OPENAI_MODEL, input="hi", stream=True))
    created = events[-1].response  # type: ignore[union-attr]
    assert client.responses.retrieve(created.id).output_text == DEFAULT_TEXT


def test_cancel_is_routed_and_the_provider_answer_passed_on(gateway: Gateway) -> None:
    client = gateway.client(gateway.key(user_id="alice"))
    foreground = client.responses.create(model=OPENAI_MODEL, input="hi")
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.cancel(foreground.id)
    assert "Only responses created with background=true" in str(caught.value)
    background = client.responses.create(model=OPENAI_MODEL, input="hi", background=True)
    cancelled = client.responses.cancel(background.id)
    assert cancelled.id == background.id and cancelled.status == "cancelled"
    assert fake(gateway).last.path == f"/v1/responses/{background.id}/cancel"


def test_another_user_gets_404_and_the_provider_is_not_asked(gateway: Gateway) -> None:
    created = gateway.client(gateway.key(user_id="alice")).responses.create(
        model=OPENAI_MODEL, input="hi"
    )
    calls = len(fake(gateway).requests)
    bob = gateway.client(gateway.key(user_id="bob"))
    for attempt in (
        lambda: bob.responses.retrieve(created.id),
        lambda: bob.responses.input_items.list(created.id),
        lambda: bob.responses.cancel(created.id),
        lambda: bob.responses.delete(created.id),
    ):
        with pytest.raises(openai.NotFoundError) as caught:
            attempt()
        assert caught.value.body["message"] == (  # type: ignore[index]
            f"Response '{created.id}' not found"
        )
    assert len(fake(gateway).requests) == calls
    # The master key reaches every response.
    assert gateway.client(MASTER_KEY).responses.retrieve(created.id).id == created.id


def test_another_users_response_cannot_be_continued(gateway: Gateway) -> None:
    # previous_response_id makes the provider read the earlier turns: naming a response of
    # another user would hand its conversation to the caller (one provider key serves all).
    created = gateway.client(gateway.key(user_id="alice")).responses.create(
        model=OPENAI_MODEL, input="my secret is 42"
    )
    calls = len(fake(gateway).requests)
    bob = gateway.client(gateway.key(user_id="bob"))
    for response_id in (created.id, "resp_never_made"):
        with pytest.raises(openai.NotFoundError) as caught:
            bob.responses.create(
                model=OPENAI_MODEL, input="what is my secret?", previous_response_id=response_id
            )
        assert caught.value.body == {  # type: ignore[comparison-overlap]
            "message": f"Response '{response_id}' not found",
            "type": "not_found_error",
            "param": "previous_response_id",
            "code": None,
        }
    assert len(fake(gateway).requests) == calls
    # Its owner continues it.
    alice = gateway.client(gateway.key(user_id="alice"))
    second = alice.responses.create(
        model=OPENAI_MODEL, input="and again", previous_response_id=created.id
    )
    assert fake(gateway).last.body["previous_response_id"] == created.id
    assert second.status == "completed"


def test_unknown_and_unstored_responses_are_404(gateway: Gateway) -> None:
    client = gateway.client(gateway.key(user_id="alice"))
    unstored = client.responses.create(model=OPENAI_MODEL, input="hi", store=False)
    for response_id in (unstored.id, "resp_never_made"):
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(response_id)


@pytest.mark.parametrize("stream", [False, True])
def test_a_translated_response_answers_404_saying_why(gateway: Gateway, stream: bool) -> None:
    client = gateway.client(gateway.key(user_id="alice"))
    if stream:
        events = list(client.responses.create(model=CLAUDE_MODEL, input="hi", stream=True))
        response_id = events[-1].response.id  # type: ignore[union-attr]
    else:
        response_id = client.responses.create(model=CLAUDE_MODEL, input="hi").id
    calls = len(gateway.anthropic_fake.requests)
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.retrieve(response_id)
    assert caught.value.body["message"] == (  # type: ignore[index]
        f"Response '{response_id}' was made by otari from provider 'claude' (anthropic), "
        "which has no Responses API and stores nothing; otari does not store it either, so "
        "it cannot be retrieved, listed, deleted or cancelled. Send the earlier turns as "
        "`input` instead of `previous_response_id`."
    )
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(response_id)
    assert len(gateway.anthropic_fake.requests) == calls
    # Someone else's translated response is plainly not found.
    bob = gateway.client(gateway.key(user_id="bob"))
    with pytest.raises(openai.NotFoundError) as caught:
        bob.responses.retrieve(response_id)
    assert caught.value.body["message"] == f"Response '{response_id}' not found"  # type: ignore[index]

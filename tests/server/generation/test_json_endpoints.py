"""Embeddings, moderations, rerank and images through the gateway: usage, exact cost, budgets."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from tests.support.fakes_media import MEDIA_KEY, PIXEL, MediaGateway, media_gateway

DOCUMENTS = ["the cat sat", "dogs bark loudly", "a cat and a dog"]


@pytest.fixture
def gateway(database_url: str) -> Iterator[MediaGateway]:
    with media_gateway(database_url) as gw:
        yield gw


def post(gateway: MediaGateway, path: str, key: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}{path}", json=body, timeout=30, headers={"Authorization": f"Bearer {key}"}
    )


# -- embeddings ------------------------------------------------------------------------------


def test_embeddings_bill_the_input_tokens(gateway: MediaGateway) -> None:
    gateway.set_price("media:text-embedding-3-small", input_price_per_million="2")
    gateway.user("alice", max_budget="1")
    client = gateway.client(gateway.key(user_id="alice"))
    result = client.embeddings.create(
        model="media:text-embedding-3-small", input=["one two three", "four five"], dimensions=4
    )
    assert [len(item.embedding) for item in result.data] == [4, 4]
    assert result.usage.prompt_tokens == 5
    sent = gateway.media.last
    assert sent.body["model"] == "text-embedding-3-small" and sent.body["dimensions"] == 4
    assert sent.headers["authorization"] == f"Bearer {MEDIA_KEY}"
    [row] = gateway.usage(1)
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (5, 0, 5)
    assert row["cost"] == Decimal("0.00001")  # 5 tokens at $2 per million
    assert row["endpoint"] == "/v1/embeddings" and row["user_id"] == "alice"
    user = gateway.get_user("alice")
    assert user["spend"] == Decimal("0.00001") and user["reserved"] == 0


def test_embeddings_provider_refusal_is_recorded(gateway: MediaGateway) -> None:
    gateway.set_price("media:text-embedding-3-small", input_price_per_million="2")
    gateway.media.fail(400, "input is too long", param="input")
    client = gateway.client(gateway.key())
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="media:text-embedding-3-small", input="x")
    assert "input is too long" in caught.value.message
    [row] = gateway.usage(1)
    assert row["status"] == "error" and not row["cost"]


def test_embeddings_to_an_anthropic_provider_are_refused(gateway: MediaGateway) -> None:
    gateway.set_price("claude:claude-sonnet", input_price_per_million="1")
    client = gateway.client(gateway.key())
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="claude:claude-sonnet", input="x")
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["code"] == "unsupported_endpoint"
    assert gateway.anthropic_fake.requests == []


# -- moderations -----------------------------------------------------------------------------


def test_moderations_bill_per_request(gateway: MediaGateway) -> None:
    gateway.set_price("media:omni-moderation-latest", price_per_request="0.0001")
    gateway.user("bob", max_budget="1")
    client = gateway.client(gateway.key(user_id="bob"))
    result = client.moderations.create(
        model="media:omni-moderation-latest", input=["a kind word", "[flag] a threat"]
    )
    assert [r.flagged for r in result.results] == [False, True]
    assert result.results[1].categories.violence is True
    assert gateway.media.last.body["model"] == "omni-moderation-latest"
    [row] = gateway.usage(1)
    assert row["cost"] == Decimal("0.0001") and row["endpoint"] == "/v1/moderations"
    assert gateway.get_user("bob")["spend"] == Decimal("0.0001")


def test_moderations_include_raw_copies_each_provider_result(gateway: MediaGateway) -> None:
    gateway.set_price("media:omni-moderation-latest", price_per_request="0.0001")
    reply = post(
        gateway,
        "/v1/moderations?include_raw=true",
        gateway.key(),
        {"model": "media:omni-moderation-latest", "input": "[flag] go away"},
    )
    assert reply.status_code == 200, reply.text
    [result] = reply.json()["results"]
    raw = result.pop("provider_raw")
    assert raw == result and result["flagged"] is True
    plain = post(
        gateway,
        "/v1/moderations",
        gateway.key(),
        {"model": "media:omni-moderation-latest", "input": "hello"},
    )
    assert "provider_raw" not in plain.json()["results"][0]
    rows = gateway.usage(2)
    assert [r["cost"] for r in rows] == [Decimal("0.0001")] * 2


# -- rerank ------------------------------------------------------------------------------------


def test_cohere_style_rerank_bills_per_request(gateway: MediaGateway) -> None:
    gateway.set_price("media:rerank-v3.5", price_per_request="0.002")
    gateway.user("carol", max_budget="1")
    reply = post(
        gateway,
        "/v1/rerank",
        gateway.key(user_id="carol"),
        {
            "model": "media:rerank-v3.5",
            "query": "cat dog",
            "documents": DOCUMENTS,
            "top_n": 2,
            "max_tokens_per_doc": 512,
        },
    )
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    assert [(r["index"], r["relevance_score"]) for r in results] == [(2, 1.0), (0, 0.5)]
    sent = gateway.media.last.body
    assert sent["model"] == "rerank-v3.5" and sent["max_tokens_per_doc"] == 512
    [row] = gateway.usage(1)
    assert row["cost"] == Decimal("0.002") and row["endpoint"] == "/v1/rerank"
    assert gateway.get_user("carol")["spend"] == Decimal("0.002")


def test_jina_style_rerank_bills_tokens_and_the_request(gateway: MediaGateway) -> None:
    gateway.set_price(
        "media:jina-reranker-v2", input_price_per_million="1", price_per_request="0.001"
    )
    reply = post(
        gateway,
        "/v1/rerank",
        gateway.key(),
        {"model": "media:jina-reranker-v2", "query": "cat dog", "documents": DOCUMENTS},
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["results"][0]["document"] == {"text": "a cat and a dog"}
    [row] = gateway.usage(1)
    # 2 query words x 3 documents + 11 document words = 17 tokens at $1/M, plus $0.001.
    assert row["prompt_tokens"] == 17
    assert row["cost"] == Decimal("0.001017")


def test_rerank_requires_query_and_documents(gateway: MediaGateway) -> None:
    gateway.set_price("media:rerank-v3.5", price_per_request="0.002")
    reply = post(
        gateway, "/v1/rerank", gateway.key(), {"model": "media:rerank-v3.5", "query": "cat"}
    )
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "documents"
    assert gateway.media.requests == []


# -- images ------------------------------------------------------------------------------------


def test_images_bill_per_image(gateway: MediaGateway) -> None:
    gateway.set_price("media:dall-e-3", price_per_image="0.04")
    gateway.user("dora", max_budget="1")
    client = gateway.client(gateway.key(user_id="dora"))
    result = client.images.generate(model="media:dall-e-3", prompt="a cat", n=2, size="1024x1024")
    assert result.data is not None and len(result.data) == 2
    assert all(image.url for image in result.data)
    sent = gateway.media.last.body
    assert (sent["model"], sent["n"], sent["size"]) == ("dall-e-3", 2, "1024x1024")
    [row] = gateway.usage(1)
    assert row["cost"] == Decimal("0.08") and row["endpoint"] == "/v1/images/generations"
    user = gateway.get_user("dora")
    assert user["spend"] == Decimal("0.08") and user["reserved"] == 0


def test_image_tokens_add_to_the_per_image_price(gateway: MediaGateway) -> None:
    gateway.set_price(
        "media:gpt-image-1",
        input_price_per_million="5",
        output_price_per_million="40",
        price_per_image="0.01",
    )
    client = gateway.client(gateway.key())
    result = client.images.generate(model="media:gpt-image-1", prompt="a red cat")
    assert result.data is not None and result.data[0].b64_json is not None
    assert base64.b64decode(result.data[0].b64_json) == PIXEL
    [row] = gateway.usage(1)
    # 3 prompt tokens at $5/M + 100 image tokens at $40/M + one image at $0.01.
    assert (row["prompt_tokens"], row["completion_tokens"]) == (3, 100)
    assert row["cost"] == Decimal("0.014015")


def test_images_priced_by_unit(gateway: MediaGateway) -> None:
    # unit "images": input_price_per_million is per million images ($0.05 an image here).
    gateway.set_price("media:dall-e-2", unit="images", input_price_per_million="50000")
    client = gateway.client(gateway.key())
    client.images.generate(model="media:dall-e-2", prompt="a dog", n=3)
    [row] = gateway.usage(1)
    assert row["cost"] == Decimal("0.15")


def test_images_without_a_price_per_image_are_refused(gateway: MediaGateway) -> None:
    gateway.set_price("media:dall-e-3", input_price_per_million="1", output_price_per_million="1")
    client = gateway.client(gateway.key())
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model="media:dall-e-3", prompt="a cat")
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["code"] == "model_not_priced"
    assert "no price per images" in caught.value.body["message"]
    assert gateway.media.requests == []


def test_images_without_a_price_run_when_pricing_is_optional(database_url: str) -> None:
    with media_gateway(database_url, require_pricing=False) as gateway:
        client = gateway.client(gateway.key())
        result = client.images.generate(model="media:dall-e-3", prompt="a cat")
        assert result.data is not None and len(result.data) == 1
        [row] = gateway.usage(1)
        assert row["status"] == "success" and row["cost"] is None


def test_images_over_the_budget_are_refused_before_the_provider(gateway: MediaGateway) -> None:
    gateway.set_price("media:dall-e-3", price_per_image="0.04")
    gateway.user("erin", max_budget="0.1")
    client = gateway.client(gateway.key(user_id="erin"))
    with pytest.raises(openai.APIStatusError) as caught:
        client.images.generate(model="media:dall-e-3", prompt="cats", n=3)  # 0.12 > 0.1
    assert caught.value.status_code == 402
    assert gateway.media.requests == []
    client.images.generate(model="media:dall-e-3", prompt="cats", n=2)
    row, refused = gateway.usage(2)
    assert row["cost"] == Decimal("0.08")
    assert (refused["status"], refused["status_code"], refused["cost"]) == ("refused", 402, None)
    user = gateway.get_user("erin")
    assert user["spend"] == Decimal("0.08") and user["reserved"] == 0
    with pytest.raises(openai.APIStatusError) as again:
        client.images.generate(model="media:dall-e-3", prompt="cats", n=1)  # 0.04 > 0.02
    assert again.value.status_code == 402

"""POST /v1/audio/speech end to end: audio streamed back unbuffered, billed per character."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import httpx
import openai
import pytest

from tests.support.fakes import Behaviour
from tests.support.fakes_media import CHUNK, MediaGateway, media_gateway, speech_audio

MODEL = "media:tts-1"
PER_MILLION = "15"


@pytest.fixture
def gateway(database_url: str) -> Iterator[MediaGateway]:
    with media_gateway(database_url) as gw:
        gw.set_price(MODEL, price_per_million_characters=PER_MILLION)
        yield gw


def test_speech_returns_the_audio_and_bills_each_character(gateway: MediaGateway) -> None:
    gateway.user("alice", max_budget="10")
    client = gateway.client(gateway.key(user_id="alice"))
    text = "Hello world, héllo!"  # 19 characters (not bytes)
    raw = client.audio.speech.with_raw_response.create(
        model=MODEL, voice="alloy", input=text, speed=1.25, instructions="cheerful"
    )
    assert raw.headers["content-type"] == "audio/mpeg"
    assert raw.content == speech_audio(text, "mp3")
    sent = gateway.media.last.body
    assert sent == {
        "model": "tts-1",
        "voice": "alloy",
        "input": text,
        "speed": 1.25,
        "instructions": "cheerful",
    }
    [row] = gateway.usage(1)
    # 19 characters at $15 per million, exactly.
    assert row["cost"] == Decimal("0.000285")
    assert row["endpoint"] == "/v1/audio/speech" and row["status"] == "success"
    user = gateway.get_user("alice")
    assert user["spend"] == Decimal("0.000285") and user["reserved"] == 0


@pytest.mark.parametrize(
    ("fmt", "content_type"), [("wav", "audio/wav"), ("opus", "audio/opus"), ("flac", "audio/flac")]
)
def test_the_provider_content_type_is_kept(
    gateway: MediaGateway, fmt: str, content_type: str
) -> None:
    client = gateway.client(gateway.key())
    with client.audio.speech.with_streaming_response.create(
        model=MODEL, voice="nova", input="Some words", response_format=fmt
    ) as response:
        assert response.headers["content-type"] == content_type
        assert b"".join(response.iter_bytes()) == speech_audio("Some words", fmt)


def test_audio_arrives_before_the_provider_finishes(gateway: MediaGateway) -> None:
    gate = gateway.media.gate()
    gateway.media.push(Behaviour(gate=gate, hold_after=2))
    text = "A long sentence to speak aloud. " * 10
    client = gateway.client(gateway.key())
    with client.audio.speech.with_streaming_response.create(
        model=MODEL, voice="alloy", input=text
    ) as response:
        chunks = response.iter_bytes()
        received = b""
        while len(received) < 2 * CHUNK:  # would block forever if the gateway buffered
            received += next(chunks)
        assert received == speech_audio(text)[: 2 * CHUNK]
        gate.release()
        received += b"".join(chunks)
    assert received == speech_audio(text)
    [row] = gateway.usage(1)
    assert row["status"] == "success" and row["cost"] == Decimal(len(text) * 15) / 1_000_000


def test_client_gone_mid_stream_is_recorded_and_billed(gateway: MediaGateway) -> None:
    gate = gateway.media.gate()
    gateway.media.push(Behaviour(gate=gate, hold_after=1))
    gateway.user("dan", max_budget="1")
    key = gateway.key(user_id="dan")
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/audio/speech",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": MODEL, "voice": "alloy", "input": "x" * 100},
    ) as response:
        assert response.status_code == 200
        next(response.iter_raw())
    [row] = gateway.usage(1)
    gate.release()
    assert row["status"] == "client_disconnected"
    assert row["cost"] == Decimal("0.0015")  # the provider charges the input it accepted
    user = gateway.get_user("dan")
    assert user["spend"] == Decimal("0.0015") and user["reserved"] == 0


def test_provider_cut_off_is_an_error_row(gateway: MediaGateway) -> None:
    gateway.media.push(cut_after=2)
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream(  # never a "complete" file
            "POST",
            f"{gateway.url}/v1/audio/speech",
            headers={"Authorization": f"Bearer {gateway.key()}"},
            json={"model": MODEL, "voice": "alloy", "input": "y" * 100},
        ) as response,
    ):
        response.read()
    [row] = gateway.usage(1)
    assert row["status"] == "error" and "media" in row["error_message"]
    assert row["cost"] == Decimal("0.0015")


def test_provider_refusal_keeps_its_status(gateway: MediaGateway) -> None:
    gateway.media.fail(429, "Slow down", type="rate_limit_error")
    client = gateway.client(gateway.key())
    with pytest.raises(openai.RateLimitError) as caught:
        client.audio.speech.create(model=MODEL, voice="alloy", input="hi")
    assert "Slow down" in caught.value.message
    [row] = gateway.usage(1)
    assert row["status"] == "error" and not row["cost"]


def test_input_over_the_budget_is_refused_before_the_provider(gateway: MediaGateway) -> None:
    gateway.set_price("media:tts-hd", price_per_million_characters="30000")
    gateway.user("eve", max_budget="0.1")
    client = gateway.client(gateway.key(user_id="eve"))
    with pytest.raises(openai.APIStatusError) as caught:
        client.audio.speech.create(model="media:tts-hd", voice="alloy", input="z" * 4)
    assert caught.value.status_code == 402  # 4 * 0.03 = 0.12 > 0.1
    assert gateway.media.requests == []
    client.audio.speech.create(model="media:tts-hd", voice="alloy", input="z" * 3)
    row, refused = gateway.usage(2)
    assert row["cost"] == Decimal("0.09")
    assert (refused["status"], refused["status_code"], refused["cost"]) == ("refused", 402, None)


def test_missing_character_price_is_refused(gateway: MediaGateway) -> None:
    gateway.set_price("media:tts-x", input_price_per_million="1", output_price_per_million="1")
    client = gateway.client(gateway.key())
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.speech.create(model="media:tts-x", voice="alloy", input="hi")
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["code"] == "model_not_priced"
    assert "no price per characters" in caught.value.body["message"]
    assert gateway.media.requests == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MODEL, "voice": "alloy"}, "input"),
        ({"model": MODEL, "input": "hi"}, "voice"),
        ({"model": MODEL, "voice": "alloy", "input": ["hi"]}, "input"),
    ],
)
def test_bad_requests_are_refused(
    gateway: MediaGateway, body: dict[str, object], param: str
) -> None:
    reply = httpx.post(
        f"{gateway.url}/v1/audio/speech",
        json=body,
        headers={"Authorization": f"Bearer {gateway.key()}"},
    )
    assert reply.status_code == 400 and reply.json()["error"]["param"] == param
    assert gateway.media.requests == []

"""POST /v1/audio/transcriptions end to end: openai SDK -> otari -> FakeMedia (multipart)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import httpx
import openai
import pytest

from otari_server.generation.audio import render, subtitles
from tests.support.fakes_media import (
    MEDIA_KEY,
    WAV_TEXT,
    MediaGateway,
    fake_audio,
    media_gateway,
    wav_audio,
)
from tests.support.servers import MASTER_KEY

SPEECH = "Hello there. How are you?"
MODEL = "media:whisper-1"
PER_SECOND = "0.0001"


@pytest.fixture
def gateway(database_url: str) -> Iterator[MediaGateway]:
    with media_gateway(database_url) as gw:
        gw.set_price(MODEL, price_per_audio_second=PER_SECOND)
        yield gw


def test_json_transcript_bills_the_exact_duration(gateway: MediaGateway) -> None:
    gateway.user("alice", max_budget="10")
    client = gateway.client(gateway.key(user_id="alice"))
    audio = fake_audio(SPEECH, 12.5)
    result = client.audio.transcriptions.create(
        model=MODEL,
        file=("talk.mp3", audio, "audio/mpeg"),
        language="en",
        prompt="greeting",
        temperature=0.2,
    )
    assert result.text == SPEECH
    sent = gateway.media.last
    assert sent.path == "/v1/audio/transcriptions"
    assert sent.headers["authorization"] == f"Bearer {MEDIA_KEY}"
    form = sent.body
    assert form.files["file"] == ("talk.mp3", "audio/mpeg", audio)
    assert form.value("model") == "whisper-1"
    assert form.value("response_format") == "verbose_json"  # to learn the duration
    assert (form.value("language"), form.value("prompt"), form.value("temperature")) == (
        "en",
        "greeting",
        "0.2",
    )
    assert "user" not in form.fields
    [row] = gateway.usage(1)
    # 12.5 seconds at 0.0001 a second, exactly (not rounded up to 13).
    assert row["cost"] == Decimal("0.00125")
    assert row["endpoint"] == "/v1/audio/transcriptions" and row["status"] == "success"
    assert row["model"] == MODEL and row["user_id"] == "alice"
    user = gateway.get_user("alice")
    assert user["spend"] == Decimal("0.00125") and user["reserved"] == 0


SRT = (
    "1\n00:00:00,000 --> 00:00:06,000\nHello there.\n\n"
    "2\n00:00:06,000 --> 00:00:12,500\nHow are you?\n"
)
VTT = (
    "WEBVTT\n\n00:00:00.000 --> 00:00:06.000\nHello there.\n\n"
    "00:00:06.000 --> 00:00:12.500\nHow are you?\n"
)


@pytest.mark.parametrize(("fmt", "expected"), [("text", SPEECH + "\n"), ("srt", SRT), ("vtt", VTT)])
def test_text_formats_are_rendered_from_verbose_json(
    gateway: MediaGateway, fmt: str, expected: str
) -> None:
    client = gateway.client(gateway.key())
    raw = client.audio.transcriptions.with_raw_response.create(
        model=MODEL, file=("talk.wav", fake_audio(SPEECH, 12.5)), response_format=fmt
    )
    assert raw.http_response.text == expected
    assert raw.headers["content-type"].startswith("text/plain")
    assert raw.parse().strip() == expected.strip()
    assert gateway.media.last.body.value("response_format") == "verbose_json"
    [row] = gateway.usage(1)
    assert row["cost"] == Decimal("0.00125")


def test_verbose_json_passes_through_with_words(gateway: MediaGateway) -> None:
    client = gateway.client(gateway.key())
    result = client.audio.transcriptions.create(
        model=MODEL,
        file=("talk.wav", fake_audio(SPEECH, 3)),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert result.duration == 3 and result.text == SPEECH
    assert [s.text for s in result.segments or []] == ["Hello there.", " How are you?"]
    assert [w.word for w in result.words or []] == SPEECH.split()
    assert gateway.media.last.body.fields["timestamp_granularities[]"] == ["word", "segment"]
    [row] = gateway.usage(1)
    assert row["cost"] == Decimal("0.0003")


def test_json_keeps_the_provider_usage(gateway: MediaGateway) -> None:
    reply = httpx.post(
        f"{gateway.url}/v1/audio/transcriptions",
        headers={"Authorization": f"Bearer {gateway.key()}"},
        data={"model": MODEL},
        files={"file": ("a.wav", fake_audio("Hi.", 2.2))},
    )
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"text": "Hi.", "usage": {"type": "duration", "seconds": 3}}


def test_declared_body_over_the_limit_is_refused_before_the_provider(database_url: str) -> None:
    with media_gateway(database_url, max_body_bytes=20_000) as gateway:
        gateway.set_price(MODEL, price_per_audio_second=PER_SECOND)
        client = gateway.client(gateway.key())
        with pytest.raises(openai.APIStatusError) as caught:
            client.audio.transcriptions.create(
                model=MODEL, file=("big.wav", fake_audio(SPEECH, 30))
            )
        assert caught.value.status_code == 413
        assert gateway.media.requests == []


def test_chunked_upload_over_the_limit_is_cut_off(database_url: str) -> None:
    with media_gateway(database_url, max_body_bytes=20_000) as gateway:
        gateway.set_price(MODEL, price_per_audio_second=PER_SECOND)
        boundary = "otari-test-boundary"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\n'
            f'{MODEL}\r\n--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="big.wav"\r\nContent-Type: audio/wav\r\n\r\n'
        ).encode()

        def body() -> Iterator[bytes]:  # no Content-Length: sent chunked
            yield head
            for _ in range(30):
                yield b"\0" * 1000
            yield f"\r\n--{boundary}--\r\n".encode()

        reply = httpx.post(
            f"{gateway.url}/v1/audio/transcriptions",
            content=body(),
            headers={
                "Authorization": f"Bearer {gateway.key()}",
                "Content-Type": f"multipart/form-data; boundary={boundary}",
            },
        )
        assert reply.status_code == 413
        assert reply.json()["error"]["code"] == "request_too_large"
        assert gateway.media.requests == []
        assert gateway.admin.get("/v1/usage").json() == []


def test_missing_per_second_price_is_refused_when_pricing_is_required(
    gateway: MediaGateway,
) -> None:
    # Zero token prices and no per-second price: a per-second model without its price.
    gateway.set_price("media:whisper-2", input_price_per_million="0")
    client = gateway.client(gateway.key())
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(
            model="media:whisper-2", file=("a.wav", fake_audio(SPEECH, 2))
        )
    error = caught.value.body
    assert isinstance(error, dict) and error["code"] == "model_not_priced"
    assert "no price per audio_seconds" in error["message"]
    assert gateway.media.requests == []


def test_worst_case_duration_over_the_budget_is_refused(gateway: MediaGateway) -> None:
    # 12.5 kB is at most 13 s at the lowest bitrate we assume: 13 * 0.01 > 0.1.
    gateway.set_price("media:whisper-big", price_per_audio_second="0.01")
    gateway.user("bob", max_budget="0.1")
    client = gateway.client(gateway.key(user_id="bob"))
    with pytest.raises(openai.APIStatusError) as caught:
        client.audio.transcriptions.create(
            model="media:whisper-big", file=("a.wav", fake_audio(SPEECH, 12.5))
        )
    assert caught.value.status_code == 402
    assert gateway.media.requests == []
    # The same audio at 8 s fits; it is billed what it lasted.
    client.audio.transcriptions.create(
        model="media:whisper-big", file=("a.wav", fake_audio(SPEECH, 8))
    )
    row, refused = gateway.usage(2)
    assert row["cost"] == Decimal("0.08")
    assert refused["status"] == "refused" and refused["status_code"] == 402
    user = gateway.get_user("bob")
    assert user["spend"] == Decimal("0.08") and user["reserved"] == 0


def test_provider_refusal_is_passed_on_and_recorded(gateway: MediaGateway) -> None:
    gateway.set_price("media:gpt-4o-transcribe", price_per_audio_second=PER_SECOND)
    gateway.user("carol", max_budget="1")
    client = gateway.client(gateway.key(user_id="carol"))
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(
            model="media:gpt-4o-transcribe", file=("a.wav", fake_audio(SPEECH, 2))
        )
    assert "verbose_json" in caught.value.message
    [row] = gateway.usage(1)
    assert row["status"] == "error" and not row["cost"]
    assert gateway.get_user("carol")["reserved"] == 0


@pytest.mark.parametrize("duration", [None, -3, "three", True, 10**9, [3]])
def test_answer_with_a_bad_duration_is_served_and_billed_the_estimate(
    gateway: MediaGateway, duration: object
) -> None:
    body: dict[str, object] = {"text": "no duration here"}
    if duration is not None:
        body["duration"] = duration
    gateway.media.push(body=body)
    gateway.set_price("media:whisper-big", price_per_audio_second="0.01")
    client = gateway.client(gateway.key())
    audio = fake_audio(SPEECH, 2)
    result = client.audio.transcriptions.create(model="media:whisper-big", file=("a.wav", audio))
    assert result.text == "no duration here"  # served whatever the numbers say
    [row] = gateway.usage(1)
    # Billed from the gateway's bound on the upload's duration: 2000 bytes, at most 3 s.
    assert row["status"] == "invalid_usage" and row["status_code"] == 200
    assert len(audio) == 2000 and row["cost"] == Decimal("0.03")
    assert row["error_message"].startswith("provider usage refused (duration")


@pytest.mark.parametrize(
    ("data", "files", "message"),
    [
        ({"model": MODEL}, None, "'file' is required"),
        ({}, {"file": ("a.wav", b"x" * 50)}, "'model' is required"),
        (
            {"model": MODEL, "response_format": "diarized_json"},
            {"file": ("a.wav", b"x" * 50)},
            "'response_format' must be one of",
        ),
        (
            {"model": MODEL, "stream": "true"},
            {"file": ("a.wav", b"x" * 50)},
            "Streaming transcriptions are not supported",
        ),
    ],
)
def test_bad_forms_are_refused(
    gateway: MediaGateway,
    data: dict[str, str],
    files: dict[str, tuple[str, bytes]] | None,
    message: str,
) -> None:
    # httpx sends a form without files as urlencoded: force multipart with an empty file list.
    reply = httpx.post(
        f"{gateway.url}/v1/audio/transcriptions",
        data=data,
        files=files or {"other": ("", b"")},
        headers={"Authorization": f"Bearer {gateway.key()}"},
    )
    assert reply.status_code == 400, reply.text
    assert message in reply.json()["error"]["message"]
    assert gateway.media.requests == []


def test_json_body_and_missing_key_are_refused(gateway: MediaGateway) -> None:
    url = f"{gateway.url}/v1/audio/transcriptions"
    reply = httpx.post(
        url, json={"model": MODEL}, headers={"Authorization": f"Bearer {gateway.key()}"}
    )
    assert reply.status_code == 400 and "multipart/form-data" in reply.text
    reply = httpx.post(url, data={"model": MODEL}, files={"file": ("a.wav", b"x")})
    assert reply.status_code == 401


def test_anthropic_provider_is_refused(gateway: MediaGateway) -> None:
    gateway.set_price("claude:claude-sonnet", price_per_audio_second=PER_SECOND)
    client = gateway.client(gateway.key())
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(
            model="claude:claude-sonnet", file=("a.wav", fake_audio(SPEECH, 2))
        )
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["code"] == "unsupported_endpoint"
    [row] = gateway.usage(1)
    assert row["status"] == "error"


def test_the_user_field_bills_that_user_for_the_master_key_only(gateway: MediaGateway) -> None:
    gateway.user("frank", max_budget="1")
    gateway.user("grace", max_budget="1")
    url = f"{gateway.url}/v1/audio/transcriptions"
    files = {"file": ("a.wav", fake_audio(SPEECH, 2))}
    reply = httpx.post(
        url,
        data={"model": MODEL, "user": "frank"},
        files=files,
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
    )
    assert reply.status_code == 200, reply.text
    [row] = gateway.usage(1)
    assert row["user_id"] == "frank" and gateway.get_user("frank")["spend"] == Decimal("0.0002")
    reply = httpx.post(
        url,
        data={"model": MODEL, "user": "frank"},
        files=files,
        headers={"Authorization": f"Bearer {gateway.key(user_id='grace')}"},
    )
    assert reply.status_code == 403


def test_subtitles_count_hours_and_fall_back_to_one_cue() -> None:
    assert subtitles([(3725.5, 3727.25, "late")], "srt") == (
        "1\n01:02:05,500 --> 01:02:07,250\nlate\n"
    )
    content, media_type = render({"text": " all of it ", "duration": 4.0}, "vtt")
    assert content == b"WEBVTT\n\n00:00:00.000 --> 00:00:04.000\nall of it\n"
    assert media_type.startswith("text/plain")


# -- the reservation is the file's real duration (its header), else the size bound ----------


def test_a_low_bitrate_file_reserves_its_header_duration_not_its_size(
    gateway: MediaGateway,
) -> None:
    # 60 s of 500 Hz 8-bit WAV is 30,044 bytes: the size bound (1000 bytes a second) would
    # reserve 31 s and the provider would bill 60. The header says 60: 61 s are reserved.
    audio = wav_audio(60, rate=500)
    assert len(audio) == 30_044
    gateway.user("dave", max_budget="0.005")
    client = gateway.client(gateway.key(user_id="dave"))
    with pytest.raises(openai.APIStatusError) as caught:
        client.audio.transcriptions.create(model=MODEL, file=("a.wav", audio, "audio/wav"))
    assert caught.value.status_code == 402
    assert "this request may cost up to 0.0061," in caught.value.message
    assert gateway.media.requests == []
    gateway.user("erin", max_budget="0.0061")  # exactly the 61 s reserved
    client = gateway.client(gateway.key(user_id="erin"))
    result = client.audio.transcriptions.create(model=MODEL, file=("a.wav", audio, "audio/wav"))
    assert result.text == WAV_TEXT
    row, refused = gateway.usage(2)  # newest first: the refusal left its own row
    assert (refused["status"], refused["status_code"], refused["cost"]) == ("refused", 402, None)
    assert row["cost"] == Decimal("0.006")  # 60 s at 0.0001
    user = gateway.get_user("erin")
    assert user["spend"] == Decimal("0.006") and user["reserved"] == 0


# -- models billed by tokens (gpt-4o-transcribe, gpt-4o-mini-transcribe) ---------------------

TOKEN_MODELS = ["media:gpt-4o-transcribe", "media:gpt-4o-mini-transcribe"]


@pytest.mark.parametrize("model", TOKEN_MODELS)
@pytest.mark.parametrize(("fmt", "expected"), [("json", None), ("text", SPEECH + "\n")])
def test_token_models_are_asked_for_json_and_billed_by_tokens(
    gateway: MediaGateway, model: str, fmt: str, expected: str | None
) -> None:
    gateway.price(model, "2.5", "10")  # token prices only: no per-second price
    gateway.user("alice", max_budget="1")
    client = gateway.client(gateway.key(user_id="alice"))
    raw = client.audio.transcriptions.with_raw_response.create(
        model=model, file=("a.mp3", fake_audio(SPEECH, 12.5)), response_format=fmt
    )
    # 12.5 s is 209 audio tokens (1,000 a minute, rounded up); the 5 words are 5 tokens out.
    usage = {
        "type": "tokens",
        "input_tokens": 209,
        "input_token_details": {"text_tokens": 0, "audio_tokens": 209},
        "output_tokens": 5,
        "total_tokens": 214,
    }
    if expected is None:
        assert raw.http_response.json() == {"text": SPEECH, "usage": usage}
    else:
        assert raw.http_response.text == expected
    assert gateway.media.last.body.value("response_format") == "json"
    [row] = gateway.usage(1)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (209, 5)
    assert row["cost"] == Decimal("0.0005725")  # 209 x $2.5/M + 5 x $10/M
    assert row["status"] == "success" and row["error_message"] is None
    user = gateway.get_user("alice")
    assert user["spend"] == Decimal("0.0005725") and user["reserved"] == 0


def test_a_token_model_reserves_tokens_for_the_duration(gateway: MediaGateway) -> None:
    # No header: 12.5 kB bounds the audio to 13 s, so at most 13 x 50 audio tokens in and
    # 13 x 20 tokens out: 650 x $2.5/M + 260 x $10/M = 0.004225.
    gateway.price("media:gpt-4o-transcribe", "2.5", "10")
    gateway.user("frank", max_budget="0.004")
    client = gateway.client(gateway.key(user_id="frank"))
    with pytest.raises(openai.APIStatusError) as caught:
        client.audio.transcriptions.create(
            model="media:gpt-4o-transcribe", file=("a.mp3", fake_audio(SPEECH, 12.5))
        )
    assert caught.value.status_code == 402
    assert "this request may cost up to 0.004225," in caught.value.message
    assert gateway.media.requests == []


def test_a_token_model_answering_without_token_usage_is_billed_its_reservation(
    gateway: MediaGateway,
) -> None:
    gateway.price("media:gpt-4o-transcribe", "2.5", "10")
    gateway.media.push(body={"text": "no usage here"})
    client = gateway.client(gateway.key())
    result = client.audio.transcriptions.create(
        model="media:gpt-4o-transcribe", file=("a.mp3", fake_audio(SPEECH, 12.5))
    )
    assert result.text == "no usage here"
    [row] = gateway.usage(1)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (650, 260)
    assert row["cost"] == Decimal("0.004225")
    assert row["error_message"] == "the provider reported no token usage: billed the reservation"


def test_a_token_model_asked_for_subtitles_gets_the_provider_refusal(gateway: MediaGateway) -> None:
    # Subtitles need timed segments, which only verbose_json has; these models refuse it.
    gateway.price("media:gpt-4o-transcribe", "2.5", "10")
    client = gateway.client(gateway.key())
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(
            model="media:gpt-4o-transcribe",
            file=("a.mp3", fake_audio(SPEECH, 2)),
            response_format="srt",
        )
    assert "response_format 'verbose_json' is not compatible" in caught.value.message

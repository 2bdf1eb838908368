"""POST /v1/audio/transcriptions (multipart upload) and /v1/audio/speech (streamed audio).

Transcriptions are billed per second of audio, or by tokens for models priced by tokens
only (see `bills_by_tokens`). Only verbose_json reports the duration on every Whisper-style
server, so per-second models are asked for verbose_json; token-billed models answer only
json and text and report token usage, so they are asked for json. The gateway renders the
format the client asked for (json, text, srt, vtt or verbose_json) from the answer. The
reservation is the file's real duration, read from its header (`audio_seconds`).
Speech is billed per character of input and streamed back as the provider sends it.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import aiohttp
import orjson
from anyio import to_thread
from fastapi import Request
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.responses import Response

from otari_server.access.auth import Caller
from otari_server.accounting import counts, estimates
from otari_server.accounting.counts import consumption
from otari_server.accounting.prices import TOKENS, Consumption, Price
from otari_server.errors import InvalidRequest, OtariError, PayloadTooLarge
from otari_server.generation.endpoints import SPEECH, Endpoint
from otari_server.generation.proxy import (
    JSON_HEADERS,
    Call,
    admit,
    check_fields,
    openai_only,
    read_body,
    route,
    runtime_of,
)
from otari_server.generation.relay import relayed
from otari_server.providers.upstream import malformed, parse_upstream, read_upstream
from otari_server.runtime import Runtime
from otari_server.storage.tables import utcnow
from otari_server.translate.streams import AudioPassThrough

FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
TEXT_TYPE = "text/plain; charset=utf-8"
# Token-billed transcription, per second of audio: OpenAI's gpt-4o-transcribe family counts
# about 17 audio tokens a second (1,000 a minute); speech is at most about 5 text tokens a
# second. The reservation allows three and four times that.
AUDIO_TOKENS_PER_SECOND = 50
TRANSCRIPT_TOKENS_PER_SECOND = 20
# Form fields the gateway answers itself rather than forwarding.
_OWN_FIELDS = frozenset({"file", "model", "user", "response_format", "stream"})


async def forward(request: Request, caller: Caller, endpoint: Endpoint) -> Response:
    """Serve the audio endpoint `endpoint` names."""
    if endpoint == SPEECH:
        return await _speak(request, caller, endpoint)
    return await _transcribe(request, caller, endpoint)


# -- transcriptions ----------------------------------------------------------------------


async def _transcribe(request: Request, caller: Caller, endpoint: Endpoint) -> Response:
    """Upload the audio, bill its duration (or its tokens), answer in the asked format."""
    runtime = runtime_of(request)
    form = await read_form(request, runtime.settings.max_body_bytes)
    try:
        upload, fields = _transcription_fields(form)
        asked = fields.get("response_format") or "json"
        seconds = await to_thread.run_sync(audio_seconds, upload)
        model = {"model": fields["model"], "user": fields.get("user")}
        price = await _price(runtime, caller, fields["model"])
        by_tokens = bills_by_tokens(price)
        worst = (
            _token_bound(seconds, form.get("prompt"))
            if by_tokens
            else Consumption(audio_seconds=seconds)
        )
        call, upstream_model = await admit(
            runtime,
            caller,
            replace(endpoint, billing=TOKENS) if by_tokens else endpoint,
            b"",
            model,
            request.scope.get("otari.request_id"),
            worst=worst,
        )
        try:
            openai_only(call)
            ask = "json" if by_tokens and asked in ("json", "text") else "verbose_json"
            outgoing = _upstream_form(form, upload, upstream_model, ask)
            response = await runtime.upstream.post_form(
                call.provider, endpoint.upstream_path, outgoing
            )
            answer = parse_upstream(call.provider, await read_upstream(call.provider, response))
            if ask == "json":
                used, note = _tokens_used(call, answer, worst)
            else:
                used, note = _consumed(call, answer), None
            content, media_type = render(answer, asked)
        except OtariError as exc:
            call.settle("error", error=exc.message, status_code=exc.status)
            raise
    finally:
        await form.close()
    call.settle("success", used, note)
    return Response(content, media_type=media_type)


def bills_by_tokens(price: Price | None) -> bool:
    """Whether a transcription model bills by tokens: its price entry has a token price
    (input or output, not zero) and no per-second price.

    Such models (gpt-4o-transcribe, gpt-4o-mini-transcribe) report token usage and answer
    only json and text, so they are asked for json; per-second models for verbose_json,
    the one format that reports the duration everywhere. A model without any price entry
    (require_pricing off) is asked for json too: nothing needs its duration. An entry with
    neither (zero token prices, no per-second price) is per-second and lacks its price.
    """
    if price is None:
        return True
    return price.per_audio_second is None and (
        price.input_per_million > 0 or price.output_per_million > 0
    )


async def _price(runtime: Runtime, caller: Caller, model: str) -> Price | None:
    """The model's price now (None for a model admit will refuse: it says why)."""
    try:
        _, _, model_key = route(runtime, caller, model)
    except OtariError:
        return None
    return await runtime.prices.at(model_key, utcnow())


def audio_seconds(upload: UploadFile) -> Decimal:
    """The most seconds an upload can last: its duration from the file's own header (MP3,
    WAV, FLAC, Ogg, M4A, ... read by mutagen) rounded up, plus one second for decoders
    that count a partial frame; from its size (estimates.audio_seconds_bound) when no header
    gives a duration."""
    import mutagen  # imported when an upload needs it, not by every gateway

    upload.file.seek(0)
    try:
        found = mutagen.File(upload.file)
        length = getattr(getattr(found, "info", None), "length", None)
    except Exception:  # any file a client sends: a broken header is only "unknown"
        length = None
    finally:
        upload.file.seek(0)
    if (
        isinstance(length, int | float)
        and not isinstance(length, bool)
        and math.isfinite(length)
        and length > 0
    ):
        return Decimal(math.ceil(length) + 1)
    return Decimal(estimates.audio_seconds_bound(upload.size or 0))


def _token_bound(seconds: Decimal, prompt: object) -> Consumption:
    """The worst case of a token-billed transcription of `seconds` of audio with a text
    `prompt` (a transcript has no max_tokens: its length follows the audio)."""
    whole = math.ceil(seconds)
    text = estimates.input_tokens(prompt.encode()) if isinstance(prompt, str) and prompt else 0
    return Consumption(
        prompt_tokens=whole * AUDIO_TOKENS_PER_SECOND + text,
        completion_tokens=whole * TRANSCRIPT_TOKENS_PER_SECOND,
    )


def _tokens_used(
    call: Call, answer: dict[str, Any], worst: Consumption
) -> tuple[Consumption, str | None]:
    """Token usage of a json transcription; the reservation when it reports none."""
    if not isinstance(answer.get("text"), str):
        raise malformed(call.provider)
    usage = answer.get("usage")
    if isinstance(usage, dict) and usage.get("type") == "tokens":
        return consumption(usage), None
    if call.price is None:
        return Consumption(), None  # nothing is priced: nothing to bill
    return worst, "the provider reported no token usage: billed the reservation"


async def read_form(request: Request, limit: int) -> FormData:
    """The multipart form of a request; 413 as soon as the body passes `limit` bytes."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise InvalidRequest("Send the audio as multipart/form-data with 'file' and 'model'")

    async def limited() -> AsyncGenerator[bytes, None]:
        # Chunked uploads carry no Content-Length for the middleware to check: count here.
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise PayloadTooLarge(f"Request body is over the {limit}-byte limit")
            yield chunk

    parser = MultiPartParser(request.headers, limited(), max_files=1, max_fields=100)
    try:
        return await parser.parse()
    except MultiPartException as exc:
        raise InvalidRequest(f"Malformed multipart body: {exc.message}") from None


def _transcription_fields(form: FormData) -> tuple[UploadFile, dict[str, str]]:
    """The uploaded file and the text fields the gateway reads, checked."""
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidRequest("'file' is required and must be a file upload", param="file")
    fields = {
        name: value
        for name, value in form.multi_items()
        if isinstance(value, str) and name in _OWN_FIELDS
    }
    if not fields.get("model"):
        raise InvalidRequest("'model' is required and must be a string", param="model")
    if fields.get("response_format", "json") not in FORMATS:
        raise InvalidRequest(
            f"'response_format' must be one of {', '.join(FORMATS)}", param="response_format"
        )
    if fields.get("stream", "false").lower() not in ("false", "0"):
        raise InvalidRequest("Streaming transcriptions are not supported", param="stream")
    return upload, fields


def _upstream_form(
    form: FormData, upload: UploadFile, upstream_model: str, response_format: str
) -> aiohttp.FormData:
    """The provider's form: the client's fields, our model and format, the same file."""
    outgoing = aiohttp.FormData()
    outgoing.add_field("model", upstream_model)
    outgoing.add_field("response_format", response_format)
    for name, value in form.multi_items():
        if isinstance(value, str) and name not in _OWN_FIELDS:
            outgoing.add_field(name, value)
    outgoing.add_field(
        "file",
        upload.file,
        filename=upload.filename or "audio",
        content_type=upload.content_type or "application/octet-stream",
    )
    return outgoing


def _consumed(call: Call, answer: dict[str, Any]) -> Consumption:
    """Seconds from `duration` (or usage.seconds); tokens too when the usage is in tokens."""
    usage = answer.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    if not isinstance(answer.get("text"), str):
        raise malformed(call.provider)
    # The transcript is served whatever the numbers say; numbers that break the rules are
    # not billed (counts.py: the row is billed from the gateway's estimate).
    duration = answer.get("duration", usage.get("seconds"))
    try:
        if duration is None:
            raise counts.BadCount("duration: missing")
        seconds = counts.seconds(duration)
    except counts.BadCount as exc:
        return Consumption(invalid=str(exc))
    return consumption(usage if usage.get("type") == "tokens" else None, audio_seconds=seconds)


def render(answer: dict[str, Any], fmt: str) -> tuple[bytes, str]:
    """A verbose_json (or, for json and text, json) transcription in the asked format."""
    if fmt == "verbose_json":
        return orjson.dumps(answer), JSON_HEADERS["content-type"]
    text: str = answer["text"]
    if fmt == "json":
        out: dict[str, Any] = {"text": text}
        if isinstance(answer.get("usage"), dict):
            out["usage"] = answer["usage"]
        return orjson.dumps(out), JSON_HEADERS["content-type"]
    if fmt == "text":
        return (text + "\n").encode(), TEXT_TYPE
    return subtitles(_cues(answer), fmt).encode(), TEXT_TYPE


def _cues(answer: dict[str, Any]) -> list[tuple[float, float, str]]:
    """(start, end, text) per segment; the whole text as one cue when there are none."""
    cues = []
    for segment in answer.get("segments") or ():
        if isinstance(segment, dict) and isinstance(segment.get("text"), str):
            start, end = segment.get("start"), segment.get("end")
            if isinstance(start, int | float) and isinstance(end, int | float):
                cues.append((float(start), float(end), segment["text"].strip()))
    if not cues:
        duration = answer.get("duration")
        end = float(duration) if isinstance(duration, int | float) else 0.0
        cues.append((0.0, end, str(answer["text"]).strip()))
    return cues


def subtitles(cues: list[tuple[float, float, str]], fmt: str) -> str:
    """SubRip (srt) or WebVTT (vtt) text for timed cues."""
    separator = "," if fmt == "srt" else "."

    def stamp(seconds: float) -> str:
        millis = max(round(seconds * 1000), 0)
        hours, millis = divmod(millis, 3_600_000)
        minutes, millis = divmod(millis, 60_000)
        whole, millis = divmod(millis, 1000)
        return f"{hours:02d}:{minutes:02d}:{whole:02d}{separator}{millis:03d}"

    blocks = [f"{stamp(start)} --> {stamp(end)}\n{text}\n" for start, end, text in cues]
    if fmt == "srt":
        return "\n".join(f"{number}\n{block}" for number, block in enumerate(blocks, 1))
    return "WEBVTT\n\n" + "\n".join(blocks)


# -- speech ----------------------------------------------------------------------------------


async def _speak(request: Request, caller: Caller, endpoint: Endpoint) -> Response:
    """Relay the provider's audio as it arrives; bill the characters of the input."""
    runtime = runtime_of(request)
    raw, body = await read_body(request, runtime.settings.max_body_bytes)
    check_fields(body, endpoint)
    text = body["input"]
    if not isinstance(text, str):
        raise InvalidRequest("'input' must be a string", param="input")
    call, upstream_model = await admit(
        runtime,
        caller,
        endpoint,
        raw,
        body,
        request.scope.get("otari.request_id"),
        worst=Consumption(characters=len(text)),
    )
    try:
        openai_only(call)
        response = await runtime.upstream.post(
            call.provider, endpoint.upstream_path, dict(body, model=upstream_model), stream=True
        )
        if response.status >= 400:
            await read_upstream(call.provider, response)  # raises the provider's refusal
    except OtariError as exc:
        call.settle("error", error=exc.message, status_code=exc.status)
        raise
    media_type = response.headers.get("content-type", "audio/mpeg")
    return relayed(call, response, AudioPassThrough(len(text)), media_type=media_type)

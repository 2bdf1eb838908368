"""A fake OpenAI-compatible media and batch API on loopback, and a gateway in front of it.

`FakeMedia` adds to `FakeOpenAI` (chat, embeddings, moderations, models):

- POST /v1/audio/transcriptions: multipart upload; json, text, srt, vtt, verbose_json. Its
  "audio" is the bytes of `fake_audio(text, seconds)`: the text, padded with NULs to
  BYTES_PER_SECOND per second, so the transcript and the duration are what the test chose
  (no audio header: the gateway cannot read its duration). A real WAV file (`wav_audio`)
  lasts what its header says and is transcribed as WAV_TEXT. The gpt-4o(-mini)-transcribe
  models answer json and text only and report token usage, as OpenAI's do.
- POST /v1/audio/speech: `speech_audio(input, format)` streamed in CHUNK-byte writes with the
  format's content type (Behaviour gate/hold_after, cut_after and interval apply per chunk).
- POST /v1/images/generations, POST /v1/rerank (Cohere style; Jina style for "jina" models).
- POST /v1/files (multipart, purpose "batch"), GET /v1/files/{id} and /{id}/content.
- POST/GET /v1/batches, GET /v1/batches/{id}, POST /v1/batches/{id}/cancel. Batches stay
  "validating" until the test moves them on with `set_status` or `finish`.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import io
import json
import math
import re
import time
import wave
from collections.abc import Collection, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx
from aiohttp import web

from tests.support.fakes import (
    CREATED,
    Behaviour,
    Failure,
    FakeAnthropic,
    FakeOpenAI,
    Handler,
    Received,
    count_tokens,
)
from tests.support.gateway import ANTHROPIC_KEY, MASTER, Gateway
from tests.support.servers import make_settings, running

BYTES_PER_SECOND = 1000
CHUNK = 256
SPEECH_BYTES_PER_CHARACTER = 40
TRANSCRIPTION_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
# Models that, like OpenAI's gpt-4o-transcribe family, answer only json and text.
JSON_ONLY_TRANSCRIBERS = ("gpt-4o-transcribe", "gpt-4o-mini-transcribe")
WAV_TEXT = "Hello from a real WAV file."
SPEECH_TYPES: Mapping[str, str] = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
MEDIA_KEY = "sk-media-upstream-789"
# 1x1 transparent PNG: what every generated image is.
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)
TERMINAL = ("completed", "failed", "expired", "cancelled")


def fake_audio(text: str, seconds: float) -> bytes:
    """An upload the fake transcribes as `text`, lasting `seconds` (millisecond precision)."""
    data = text.encode()
    size = round(seconds * BYTES_PER_SECOND)
    assert len(data) < size, "the audio must be longer than its text"
    return data + b"\0" * (size - len(data))


def wav_audio(seconds: float, rate: int = 8000) -> bytes:
    """A real WAV file (8-bit mono silence) lasting `seconds` at `rate` samples a second."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(1)
        wav.setframerate(rate)
        wav.writeframes(b"\x80" * round(seconds * rate))
    return out.getvalue()


def speech_audio(text: str, response_format: str = "mp3") -> bytes:
    """The exact bytes the fake speaks for `text`."""
    head = {"mp3": b"ID3", "wav": b"RIFF"}.get(response_format, b"FAKE")
    size = len(text) * SPEECH_BYTES_PER_CHARACTER
    out = bytearray(head)
    digest = hashlib.sha256(f"{response_format}:{text}".encode()).digest()
    while len(out) < size:
        out += digest
        digest = hashlib.sha256(digest).digest()
    return bytes(out[:size])


@dataclass
class Upload:
    """One multipart form as the fake received it."""

    fields: dict[str, list[str]]
    files: dict[str, tuple[str | None, str, bytes]]  # name -> (filename, content type, data)

    def value(self, name: str, default: str | None = None) -> str | None:
        values = self.fields.get(name)
        return values[0] if values else default


@dataclass
class FakeBatch:
    """A batch the fake holds: its wire object and its parsed requests."""

    object: dict[str, Any]
    requests: list[dict[str, Any]] = field(default_factory=list)


class FakeMedia(FakeOpenAI):
    """FakeOpenAI plus audio, images, rerank, files and the batch API."""

    name = "fake-media"
    MULTIPART_PATHS: ClassVar[tuple[str, ...]] = ("/v1/audio/transcriptions", "/v1/files")

    def __init__(
        self, *, api_key: str | None = None, models: tuple[str, ...] = ("gpt-4o-mini",)
    ) -> None:
        super().__init__(api_key=api_key, models=models)
        self.files: dict[str, tuple[dict[str, Any], bytes]] = {}
        self.batches: dict[str, FakeBatch] = {}

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            *super().routes(),
            ("POST", "/v1/audio/transcriptions", self.transcriptions),
            ("POST", "/v1/audio/speech", self.speech),
            ("POST", "/v1/images/generations", self.images),
            ("POST", "/v1/rerank", self.rerank),
            ("POST", "/v1/files", self.upload_file),
            ("GET", "/v1/files/{file_id}", self.retrieve_file),
            ("GET", "/v1/files/{file_id}/content", self.file_content),
            ("POST", "/v1/batches", self.create_batch),
            ("GET", "/v1/batches", self.list_batches),
            ("GET", "/v1/batches/{batch_id}", self.retrieve_batch),
            ("POST", "/v1/batches/{batch_id}/cancel", self.cancel_batch),
        ]

    def check(self, request: web.Request, call: Received) -> web.Response | None:
        authorization = call.headers.get("authorization", "")
        if self.api_key is not None and authorization != f"Bearer {self.api_key}":
            message = "Incorrect API key provided." if authorization else "No API key provided."
            return self.error_response(Failure(401, message, code="invalid_api_key"))
        if request.path in self.MULTIPART_PATHS:
            if request.content_type != "multipart/form-data":
                return self.error_response(Failure(400, "Expected multipart/form-data"))
            call.body = parse_form(call.headers["content-type"], call.raw)
            return None
        if request.path == "/v1/batches" and request.method == "POST":
            if not isinstance(call.body, dict):
                return self.error_response(Failure(400, "We could not parse the JSON body."))
            return None
        if request.path.endswith("/cancel"):
            return None
        return super().check(request, call)

    # -- audio ---------------------------------------------------------------------------

    async def transcriptions(
        self, request: web.Request, call: Received, behaviour: Behaviour
    ) -> web.StreamResponse:
        upload: Upload = call.body
        if "file" not in upload.files:
            return self.error_response(
                Failure(400, "Missing required parameter: 'file'.", param="file")
            )
        model = upload.value("model")
        if not model:
            return self.error_response(Failure(400, "you must provide a model parameter"))
        fmt = upload.value("response_format", "json") or "json"
        if fmt not in TRANSCRIPTION_FORMATS or (
            model.startswith(JSON_ONLY_TRANSCRIBERS) and fmt not in ("json", "text")
        ):
            return self.error_response(
                Failure(
                    400,
                    f"response_format '{fmt}' is not compatible with model '{model}'",
                    param="response_format",
                )
            )
        audio = upload.files["file"][2]
        if audio.startswith(b"RIFF"):  # a real WAV file: its header says how long it lasts
            with wave.open(io.BytesIO(audio)) as wav:
                duration = wav.getnframes() / wav.getframerate()
            text = WAV_TEXT
        else:
            text = audio.split(b"\0", 1)[0].decode()
            duration = len(audio) / BYTES_PER_SECOND
        seconds = math.ceil(duration)
        call.usage = {"type": "duration", "seconds": seconds}
        if model.startswith(JSON_ONLY_TRANSCRIBERS):
            # Token-billed models report tokens: 1,000 audio tokens a minute, as OpenAI's do.
            audio_tokens = math.ceil(duration * 50 / 3)
            prompt_tokens = count_tokens(upload.value("prompt", "") or "")
            output = count_tokens(text)
            call.usage = {
                "type": "tokens",
                "input_tokens": audio_tokens + prompt_tokens,
                "input_token_details": {"text_tokens": prompt_tokens, "audio_tokens": audio_tokens},
                "output_tokens": output,
                "total_tokens": audio_tokens + prompt_tokens + output,
            }
        segments = _segments(text, duration)
        if fmt == "text":
            return web.Response(text=text + "\n", content_type="text/plain")
        if fmt in ("srt", "vtt"):
            return web.Response(text=_subtitles(segments, fmt), content_type="text/plain")
        payload: dict[str, Any] = {"text": text, "usage": call.usage}
        if fmt == "verbose_json":
            payload = {
                "task": "transcribe",
                "language": upload.value("language", "english"),
                "duration": duration,
                "text": text,
                "segments": segments,
                "usage": call.usage,
            }
            if "word" in upload.fields.get("timestamp_granularities[]", []):
                payload["words"] = _words(text, duration)
        return await self.send_json(request, payload, behaviour)

    async def speech(
        self, request: web.Request, call: Received, behaviour: Behaviour
    ) -> web.StreamResponse:
        body = call.body
        text, voice = body.get("input"), body.get("voice")
        if not isinstance(text, str) or not text:
            return self.error_response(Failure(400, "Missing required parameter: 'input'."))
        if len(text) > 4096:
            return self.error_response(Failure(400, "input is longer than 4096 characters"))
        if not isinstance(voice, str) or not voice:
            return self.error_response(Failure(400, "Missing required parameter: 'voice'."))
        fmt = body.get("response_format", "mp3")
        if fmt not in SPEECH_TYPES:
            return self.error_response(Failure(400, f"Invalid response_format '{fmt}'"))
        audio = speech_audio(text, fmt)
        chunks = [audio[i : i + CHUNK] for i in range(0, len(audio), CHUNK)]
        response = web.StreamResponse(headers={"Content-Type": SPEECH_TYPES[fmt]})
        await response.prepare(request)
        for sent, chunk in enumerate(chunks):
            if sent == behaviour.cut_after:
                assert request.transport is not None
                request.transport.abort()
                return response
            if sent == behaviour.hold_after and behaviour.gate is not None:
                await behaviour.gate.enter()
            await response.write(chunk)
        await response.write_eof()
        return response

    # -- images and rerank ---------------------------------------------------------------

    async def images(
        self, request: web.Request, call: Received, behaviour: Behaviour
    ) -> web.StreamResponse:
        body = call.body
        prompt, n = body.get("prompt"), body.get("n", 1)
        if not isinstance(prompt, str) or not prompt:
            return self.error_response(Failure(400, "Missing required parameter: 'prompt'."))
        if not isinstance(n, int) or not 1 <= n <= 10:
            return self.error_response(Failure(400, "n must be between 1 and 10", param="n"))
        model = str(body["model"])
        b64 = body.get("response_format") == "b64_json" or model.startswith("gpt-image")
        data = [
            {"b64_json": base64.b64encode(PIXEL).decode()}
            if b64
            else {"url": f"{self.url}/images/{self._id('img-')}.png"}
            for _ in range(n)
        ]
        payload: dict[str, Any] = {"created": CREATED, "data": data}
        if model.startswith("gpt-image"):
            words = count_tokens(prompt)
            call.usage = {
                "input_tokens": words,
                "output_tokens": 100 * n,
                "total_tokens": words + 100 * n,
                "input_tokens_details": {"text_tokens": words, "image_tokens": 0},
            }
            payload["usage"] = call.usage
        return await self.send_json(request, payload, behaviour)

    async def rerank(
        self, request: web.Request, call: Received, behaviour: Behaviour
    ) -> web.StreamResponse:
        body = call.body
        query, documents = body.get("query"), body.get("documents")
        if not isinstance(query, str) or not isinstance(documents, list) or not documents:
            return self.error_response(Failure(400, "query and documents are required"))
        texts = [d if isinstance(d, str) else str(d.get("text", "")) for d in documents]
        words = set(query.lower().split())
        scored = sorted(
            (
                (len(words & set(t.lower().split())) / max(len(words), 1), i)
                for i, t in enumerate(texts)
            ),
            key=lambda pair: (-pair[0], pair[1]),
        )
        top_n = body.get("top_n") or len(texts)
        jina = "jina" in str(body["model"])
        results = []
        for score, index in scored[:top_n]:
            result: dict[str, Any] = {"index": index, "relevance_score": score}
            if jina or body.get("return_documents"):
                result["document"] = {"text": texts[index]}
            results.append(result)
        if jina:
            tokens = count_tokens(query) * len(texts) + sum(count_tokens(t) for t in texts)
            call.usage = {"total_tokens": tokens}
            payload = {"model": body["model"], "usage": call.usage, "results": results}
        else:
            call.usage = {"search_units": 1}
            payload = {
                "id": self._id("rerank-"),
                "results": results,
                "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}},
            }
        return await self.send_json(request, payload, behaviour)

    # -- files -----------------------------------------------------------------------------

    async def upload_file(
        self, request: web.Request, call: Received, behaviour: Behaviour
    ) -> web.StreamResponse:
        upload: Upload = call.body
        purpose = upload.value("purpose")
        if "file" not in upload.files or purpose not in ("batch", "assistants", "fine-tune"):
            return self.error_response(Failure(400, "file and a valid purpose are required"))
        filename, _, data = upload.files["file"]
        file = {
            "id": self._id("file-fake"),
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": filename or "upload",
            "purpose": purpose,
            "status": "processed",
            "expires_at": None,
        }
        with self._lock:
            self.files[file["id"]] = (file, data)
        return await self.send_json(request, file, behaviour)

    async def retrieve_file(
        self, request: web.Request, call: Received, behaviour: Behaviour
    ) -> web.StreamResponse:
        found = self.files.get(request.match_info["file_id"])
        if found is None:
            return self.error_response(Failure(404, "No such File object"))
        return await self.send_json(request, found[0], behaviour)

    async def file_content(
        self, request: web.Request, call: Received, behaviour: Behaviour
    ) -> web.StreamResponse:
        found = self.files.get(request.match_info["file_id"])
        if found is None:
            return self.error_response(Failure(404, "No such File object"))
        return web.Response(body=found[1], content_type="application/octet-stream")

    # -- batches -----------------------------------------------------------------------------

    async def create_batch(
        self, request: web.Request, call: Received, behaviour: Behaviour
    ) -> web.StreamResponse:
        body = call.body
        found = self.files.get(str(body.get("input_file_id")))
        if found is None:
            return self.error_response(Failure(400, "input_file_id does not exist"))
        if body.get("endpoint") != "/v1/chat/completions":
            return self.error_response(Failure(400, "endpoint must be /v1/chat/completions"))
        if body.get("completion_window") != "24h":
            return self.error_response(Failure(400, "completion_window must be 24h"))
        try:
            requests = [json.loads(line) for line in found[1].decode().splitlines() if line]
        except ValueError:
            return self.error_response(Failure(400, "The input file is not valid JSONL"))
        problem = _invalid_batch(requests, body["endpoint"])
        if problem is not None:
            return self.error_response(Failure(400, problem))
        now = int(time.time())
        batch = {
            "id": self._id("batch_fake"),
            "object": "batch",
            "endpoint": body["endpoint"],
            "errors": None,
            "input_file_id": body["input_file_id"],
            "completion_window": "24h",
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "in_progress_at": None,
            "expires_at": now + 86400,
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": len(requests), "completed": 0, "failed": 0},
            "metadata": body.get("metadata"),
        }
        with self._lock:
            self.batches[batch["id"]] = FakeBatch(batch, requests)
        return await self.send_json(request, batch, behaviour)

    async def list_batches(
        self, request: web.Request, call: Received, behaviour: Behaviour
    ) -> web.StreamResponse:
        with self._lock:
            ids = list(reversed(self.batches))  # newest first
            objects = [dict(self.batches[i].object) for i in ids]
        after = request.query.get("after")
        if after in ids:
            objects = objects[ids.index(after) + 1 :]
        limit = int(request.query.get("limit", "20"))
        page = objects[:limit]
        payload = {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(objects) > limit,
        }
        return await self.send_json(request, payload, behaviour)

    async def retrieve_batch(
        self, request: web.Request, call: Received, behaviour: Behaviour
    ) -> web.StreamResponse:
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return self.error_response(Failure(404, "No batch found"))
        return await self.send_json(request, batch.object, behaviour)

    async def cancel_batch(
        self, request: web.Request, call: Received, behaviour: Behaviour
    ) -> web.StreamResponse:
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return self.error_response(Failure(404, "No batch found"))
        if batch.object["status"] not in ("validating", "in_progress"):
            status = batch.object["status"]
            return self.error_response(Failure(400, f"Cannot cancel a batch that is {status}"))
        self.set_status(batch.object["id"], "cancelling")
        return await self.send_json(request, batch.object, behaviour)

    def set_status(self, batch_id: str, status: str) -> None:
        """Move a batch to `status` (no results: see `finish` for that)."""
        with self._lock:
            batch = self.batches[batch_id].object
            batch["status"] = status
            stamp = {
                "in_progress": "in_progress_at",
                "finalizing": "finalizing_at",
                "completed": "completed_at",
                "failed": "failed_at",
                "expired": "expired_at",
                "cancelling": "cancelling_at",
                "cancelled": "cancelled_at",
            }.get(status)
            if stamp is not None:
                batch[stamp] = int(time.time())

    def finish(
        self,
        batch_id: str,
        status: str = "completed",
        *,
        failures: Mapping[str, Failure] | None = None,
        done: Collection[str] | None = None,
    ) -> None:
        """Run the batch's requests (those in `done`, default all) and end it in `status`.

        Requests named in `failures` fail with that error; their lines go to the error file.
        """
        failures = failures or {}
        batch = self.batches[batch_id]
        output, errors = [], []
        for line in batch.requests:
            custom_id = line["custom_id"]
            if done is not None and custom_id not in done:
                continue
            request_id = self._id("req_fake")
            if custom_id in failures:
                failure = failures[custom_id]
                response = {
                    "status_code": failure.status,
                    "request_id": request_id,
                    "body": self.error_body(failure),
                }
                errors.append(
                    {
                        "id": self._id("batch_req_"),
                        "custom_id": custom_id,
                        "response": response,
                        "error": None,
                    }
                )
                continue
            response = {
                "status_code": 200,
                "request_id": request_id,
                "body": self._completion(line["body"]),
            }
            output.append(
                {
                    "id": self._id("batch_req_"),
                    "custom_id": custom_id,
                    "response": response,
                    "error": None,
                }
            )
        output_id = self._store(output) if output else None
        error_id = self._store(errors) if errors else None
        with self._lock:
            batch.object["request_counts"].update(completed=len(output), failed=len(errors))
            batch.object.update(output_file_id=output_id, error_file_id=error_id)
        self.set_status(batch_id, status)

    def _store(self, lines: list[dict[str, Any]]) -> str:
        data = "".join(json.dumps(line) + "\n" for line in lines).encode()
        file_id = self._id("file-out")
        file = {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": "output.jsonl",
            "purpose": "batch_output",
            "status": "processed",
        }
        with self._lock:
            self.files[file_id] = (file, data)
        return file_id

    def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        answer = self.answer(body, Behaviour(), body.get("stop"))
        prompt, completion = answer.prompt_tokens, answer.completion_tokens
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0},
        }
        message = {"role": "assistant", "content": answer.text, "refusal": None}
        return {
            "id": self._id("chatcmpl-fake"),
            "object": "chat.completion",
            "created": CREATED,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self.FINISH[answer.stop],
                }
            ],
            "usage": usage,
        }


def parse_form(content_type: str, raw: bytes) -> Upload:
    """A multipart/form-data body, parsed with the standard library's MIME parser."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
    upload = Upload({}, {})
    for part in message.iter_parts():
        disposition = part.get("content-disposition", "")
        named = re.search(r'name="([^"]*)"', disposition)
        if named is None:
            continue
        data = part.get_payload(decode=True) or b""
        if "filename=" in disposition:
            upload.files[named.group(1)] = (part.get_filename(), part.get_content_type(), data)
        else:
            upload.fields.setdefault(named.group(1), []).append(data.decode())
    return upload


def _invalid_batch(requests: list[Any], endpoint: str) -> str | None:
    """What the real API would refuse in a batch input file, or None."""
    seen: set[str] = set()
    models = set()
    for number, line in enumerate(requests, 1):
        if not isinstance(line, dict) or set(line) != {"custom_id", "method", "url", "body"}:
            return f"line {number}: expected exactly custom_id, method, url and body"
        if line["method"] != "POST" or line["url"] != endpoint:
            return f"line {number}: method must be POST and url {endpoint}"
        if line["custom_id"] in seen:
            return f"line {number}: duplicate custom_id {line['custom_id']}"
        seen.add(line["custom_id"])
        if not isinstance(line["body"], dict) or not line["body"].get("model"):
            return f"line {number}: body.model is required"
        models.add(line["body"]["model"])
    return "a batch file must use a single model" if len(models) > 1 else None


def _segments(text: str, duration: float) -> list[dict[str, Any]]:
    """Sentences with start and end times in proportion to their place in the text."""
    pieces = re.findall(r"[^.!?]+[.!?]*", text) or [text]
    segments, offset = [], 0
    for index, piece in enumerate(pieces):
        start = duration * offset / max(len(text), 1)
        offset += len(piece)
        end = duration * offset / max(len(text), 1)
        segments.append(
            {
                "id": index,
                "seek": 0,
                "start": round(start, 2),
                "end": round(end, 2),
                "text": piece,
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": -0.1,
                "compression_ratio": 1.0,
                "no_speech_prob": 0.0,
            }
        )
    return segments


def _words(text: str, duration: float) -> list[dict[str, Any]]:
    words = text.split()
    step = duration / max(len(words), 1)
    return [
        {"word": w, "start": round(i * step, 2), "end": round((i + 1) * step, 2)}
        for i, w in enumerate(words)
    ]


def _subtitles(segments: list[dict[str, Any]], fmt: str) -> str:
    separator = "," if fmt == "srt" else "."

    def stamp(seconds: float) -> str:
        millis = round(seconds * 1000)
        return (
            f"{millis // 3_600_000:02d}:{millis // 60_000 % 60:02d}:"
            f"{millis // 1000 % 60:02d}{separator}{millis % 1000:03d}"
        )

    cues = [f"{stamp(s['start'])} --> {stamp(s['end'])}\n{s['text'].strip()}\n" for s in segments]
    if fmt == "srt":
        return "\n".join(f"{i}\n{cue}" for i, cue in enumerate(cues, 1))
    return "WEBVTT\n\n" + "\n".join(cues)


class MediaGateway(Gateway):
    """A gateway whose provider "media" is a FakeMedia (and "claude" a FakeAnthropic)."""

    @property
    def media(self) -> FakeMedia:
        assert isinstance(self.openai_fake, FakeMedia)
        return self.openai_fake

    def set_price(self, model_key: str, **prices: str) -> None:
        """A price entry with any pricing fields (values as exact decimal strings)."""
        prices.setdefault("input_price_per_million", "0")
        prices.setdefault("output_price_per_million", "0")
        fields = ", ".join(
            f'"{name}": {value}' if name != "unit" else f'"unit": "{value}"'
            for name, value in prices.items()
        )
        response = self.admin.post(
            "/v1/pricing",
            content=f'{{"model_key": "{model_key}", {fields}}}',
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 200, response.text


@contextmanager
def media_gateway(
    database_url: str, fake: FakeMedia | None = None, **overrides: Any
) -> Iterator[MediaGateway]:
    """A live gateway on `database_url` in front of a FakeMedia named "media".

    Pass `fake` (started, with api_key=MEDIA_KEY) to keep one provider across gateways.
    """
    with ExitStack() as stack:
        if fake is None:
            fake = stack.enter_context(FakeMedia(api_key=MEDIA_KEY))
        claude = stack.enter_context(FakeAnthropic(api_key=ANTHROPIC_KEY))
        providers = {
            "media": {"type": "openai", "base_url": fake.base_url, "api_key": MEDIA_KEY},
            "claude": {"type": "anthropic", "base_url": claude.base_url, "api_key": ANTHROPIC_KEY},
        }
        settings = make_settings(
            database_url, providers=providers, usage_flush_interval=0.05, **overrides
        )
        url = stack.enter_context(running(settings))
        admin = stack.enter_context(httpx.Client(base_url=url, headers=MASTER, timeout=30))
        gateway = MediaGateway(url, fake, claude, admin)
        stack.callback(gateway.close)
        yield gateway

"""Fake provider servers on loopback, speaking the real OpenAI and Anthropic wire formats.

Each fake runs an aiohttp server in a background thread with its own event loop, bound to
127.0.0.1 on a free port, so the code under test (in this process or another) talks to it over
real sockets. Script what the next calls do with `push(...)`, or every call with `default`;
inspect what arrived in `requests`.

    with FakeOpenAI() as fake:
        fake.push(text="Hi there")
        fake.push(error=Failure(429, "Slow down", type="rate_limit_error"))
        client = openai.OpenAI(base_url=fake.base_url, api_key="k")

Usage is deterministic: prompt tokens are the words in the request's message texts (and
system), completion tokens the words answered plus, per tool call, the words of its name and
JSON arguments; `count_tokens` is the word counter and each `Received.usage` the reported usage.

A new endpoint is a handler added in `routes`; the scripted behaviours apply to it for free:

    class FakeReranker(FakeOpenAI):
        def routes(self):
            return [*super().routes(), ("POST", "/v1/rerank", self.rerank)]

        async def rerank(self, request, call, behaviour):
            return await self.send_json(request, {"results": []}, behaviour)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import struct
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import pytest
from aiohttp import web

from tests.support.loopback import LoopbackServer

DEFAULT_TEXT = "Hello from the fake provider"
FLAG_MARKER = "[flag]"  # moderation input containing this is flagged
CREATED = 1_700_000_000

Handler = Callable[[web.Request, "Received", "Behaviour"], Awaitable[web.StreamResponse]]


def count_tokens(text: str) -> int:
    """The fakes' tokenizer: whitespace-separated words."""
    return len(text.split())


@dataclass(frozen=True)
class ToolCall:
    """A tool call the fake model makes."""

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments, separators=(",", ":"))

    @property
    def tokens(self) -> int:
        return count_tokens(self.name) + count_tokens(self.arguments_json)


@dataclass(frozen=True)
class Failure:
    """An error the fake answers with, in its provider's error shape."""

    status: int
    message: str
    type: str | None = None  # default: the provider's usual type for the status
    code: str | None = None
    param: str | None = None
    headers: Mapping[str, str] | None = None  # sent with the error (Retry-After, ...)


class Gate:
    """Holds requests until released; counts arrivals so tests wait without sleeping."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()
        self._arrived = 0
        self._condition = threading.Condition()

    @property
    def arrived(self) -> int:
        """How many requests reached the gate so far."""
        with self._condition:
            return self._arrived

    def wait_for(self, count: int = 1, timeout: float = 10.0) -> None:
        """Block the test until `count` requests are held (or passed) here."""
        with self._condition:
            if not self._condition.wait_for(lambda: self._arrived >= count, timeout):
                raise TimeoutError(f"{self._arrived} of {count} requests reached the gate")

    def release(self) -> None:
        """Let every held request, and any later one, through."""
        self._loop.call_soon_threadsafe(self._event.set)

    async def enter(self) -> None:
        with self._condition:
            self._arrived += 1
            self._condition.notify_all()
        await self._event.wait()


@dataclass(frozen=True)
class Behaviour:
    """What the fake does with one call. The defaults answer DEFAULT_TEXT at once."""

    text: str | None = None  # None: DEFAULT_TEXT, or nothing when tool_calls are given
    tool_calls: tuple[ToolCall, ...] = ()
    error: Failure | None = None  # answer with this error instead
    error_after: int | None = None  # streams: send `error` as an event after this many events
    delay: float = 0.0  # seconds before answering (cancelled when the client goes away)
    gate: Gate | None = None  # hold until the gate is released
    hold_after: int | None = None  # streams: wait at the gate after this many events instead
    interval: float = 0.0  # streams: seconds between events
    cut_after: int | None = None  # drop the connection after this many events (JSON: half body)
    malformed: bool = False  # answer 200 with a broken JSON body (streams: a broken event)
    finish_reason: str | None = None  # override the computed one (wire-format value)
    body: Mapping[str, Any] | None = None  # answer exactly this JSON
    thinking: str | None = None  # Anthropic: a signed thinking block before the answer
    redacted_thinking: str | None = None  # Anthropic: then a redacted_thinking block (its data)
    interleave: bool = False  # OpenAI streams: parallel calls' argument deltas interleaved
    # Report these counts verbatim (streams too), merged over the computed usage: a
    # misbehaving provider's `-5`, `"12.5"` or 10**40.
    usage: Mapping[str, Any] | None = None


@dataclass
class Received:
    """One request as the fake saw it, and the usage it reported back."""

    method: str
    path: str
    headers: dict[str, str]  # keys lower-cased
    query: dict[str, str]
    body: Any  # decoded JSON, or None
    raw: bytes
    usage: dict[str, Any] | None = None


@dataclass(frozen=True)
class Answer:
    """The fake model's reply to one request, before it is put in a wire format."""

    pieces: tuple[str, ...]  # the text, one word (with its leading space) per token
    tool_calls: tuple[ToolCall, ...]
    prompt_tokens: int
    stop: str  # "stop", "length", "tool_calls" or "stop_sequence"
    stop_sequence: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def completion_tokens(self) -> int:
        return len(self.pieces) + sum(call.tokens for call in self.tool_calls)


class FakeServer(LoopbackServer):
    """Base of the fake providers: one loopback application; subclasses add `routes`."""

    name = "fake"
    tool_prefix = "call_"  # how the provider's tool call ids begin

    def __init__(self, *, api_key: str | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        self.requests: list[Received] = []
        self.default = Behaviour()
        self._queue: deque[Behaviour] = deque()
        self._lock = threading.Lock()
        self._counter = 0

    def application(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for method, path, handler in self.routes():
            app.router.add_route(method, path, self._endpoint(handler))
        return app

    @property
    def base_url(self) -> str:
        """The API root clients are given, ending in /v1."""
        return f"{self.url}/v1"

    # -- scripting -------------------------------------------------------------------------

    def push(self, behaviour: Behaviour | None = None, **fields: Any) -> None:
        """Queue what the next unscripted call does (fields as in `Behaviour`)."""
        queued = replace(behaviour or Behaviour(), **fields)
        with self._lock:
            self._queue.append(queued)

    def fail(self, status: int, message: str, **fields: Any) -> None:
        """Queue an error answer (type, code and param as in `Failure`)."""
        self.push(error=Failure(status, message, **fields))

    def gate(self) -> Gate:
        """A gate for `Behaviour(gate=...)`, released by the test."""
        return Gate(self._loop)

    @property
    def last(self) -> Received:
        """The most recent request."""
        return self.requests[-1]

    def reset(self) -> None:
        """Forget recorded requests and queued behaviours."""
        with self._lock:
            self._queue.clear()
            self.requests.clear()
            self.default = Behaviour()

    def _next(self) -> Behaviour:
        with self._lock:
            return self._queue.popleft() if self._queue else self.default

    def _id(self, prefix: str) -> str:
        with self._lock:
            self._counter += 1
            return f"{prefix}{self._counter:06d}"

    # -- request handling ------------------------------------------------------------------

    def routes(self) -> list[tuple[str, str, Handler]]:
        """(method, path, handler) for every endpoint; subclasses extend the list."""
        return []

    def check(self, request: web.Request, call: Received) -> web.Response | None:
        """Authentication and validation, as the real API does them; None when fine."""
        return None

    def error_body(self, failure: Failure) -> dict[str, Any]:
        """The provider's JSON error shape."""
        raise NotImplementedError

    def _endpoint(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            raw = await request.read()
            call = Received(
                method=request.method,
                path=request.path,
                headers={key.lower(): value for key, value in request.headers.items()},
                query=dict(request.query),
                body=_decode(raw),
                raw=raw,
            )
            self.requests.append(call)
            if (problem := self.check(request, call)) is not None:
                return problem
            behaviour = self._next()
            if behaviour.gate is not None and behaviour.hold_after is None:
                await behaviour.gate.enter()
            if behaviour.delay:
                await asyncio.sleep(behaviour.delay)
            if behaviour.error is not None and behaviour.error_after is None:
                return self.error_response(behaviour.error)
            if behaviour.malformed and not _streaming(call):
                return web.Response(body=b'{"id": "broken", "choices": [', content_type=JSON)
            if behaviour.body is not None:
                return await self.send_json(request, dict(behaviour.body), behaviour)
            return await handler(request, call, behaviour)

        return endpoint

    def error_response(self, failure: Failure) -> web.Response:
        return web.json_response(
            self.error_body(failure), status=failure.status, headers=failure.headers
        )

    async def send_json(
        self, request: web.Request, payload: Mapping[str, Any], behaviour: Behaviour
    ) -> web.StreamResponse:
        """Answer JSON; with `cut_after`, send half of it and drop the connection."""
        data = json.dumps(payload).encode()
        if behaviour.cut_after is None:
            return web.Response(body=data, content_type=JSON)
        response = web.StreamResponse(headers={"Content-Type": JSON})
        response.content_length = len(data)
        await response.prepare(request)
        await response.write(data[: len(data) // 2])
        return _drop(request, response)

    async def send_events(
        self,
        request: web.Request,
        events: list[bytes],
        behaviour: Behaviour,
        failure: Callable[[Failure], bytes],
    ) -> web.StreamResponse:
        """Stream pre-encoded SSE events, honouring the stream behaviours."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await response.prepare(request)
        for sent, event in enumerate(events):
            if sent == behaviour.error_after and behaviour.error is not None:
                await response.write(failure(behaviour.error))
                break
            if sent == behaviour.cut_after:
                return _drop(request, response)
            if sent == behaviour.hold_after and behaviour.gate is not None:
                await behaviour.gate.enter()
            if sent == 1 and behaviour.malformed:
                await response.write(b'data: {"id": "broken", "choices": [\n\n')
            if behaviour.interval and sent:
                await asyncio.sleep(behaviour.interval)
            await response.write(event)
        await response.write_eof()
        return response

    def answer(self, body: Mapping[str, Any], behaviour: Behaviour, stop: object = None) -> Answer:
        """The reply to `body`: text cut at stop sequences and at the token limit."""
        text = behaviour.text
        if text is None:
            text = "" if behaviour.tool_calls else DEFAULT_TEXT
        reason, matched = "stop", None
        for sequence in _sequences(stop):
            at = text.find(sequence)
            if at >= 0:
                text, reason, matched = text[:at], "stop_sequence", sequence
        pieces = tuple(re.findall(r"\s*\S+", text))
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if isinstance(limit, int) and len(pieces) > limit:
            pieces, reason, matched = pieces[:limit], "length", None
        elif behaviour.tool_calls:
            reason = "tool_calls"
        return Answer(
            pieces=pieces,
            tool_calls=tuple(
                replace(call, id=call.id or self._id(self.tool_prefix))
                for call in behaviour.tool_calls
            ),
            prompt_tokens=_prompt_tokens(body),
            stop=reason,
            stop_sequence=matched,
        )


class FakeOpenAI(FakeServer):
    """An OpenAI-compatible API: chat completions (JSON and SSE), embeddings, moderations, models.

    With `api_key` set, requests must carry `Authorization: Bearer <api_key>`.
    """

    name = "fake-openai"
    names_stop_string = False  # vLLM names the matched stop string as the choice's stop_reason
    FINISH: ClassVar[Mapping[str, str]] = {
        "stop": "stop",
        "stop_sequence": "stop",
        "length": "length",
        "tool_calls": "tool_calls",
    }
    ERROR_TYPES: ClassVar[Mapping[int, str]] = {
        401: "invalid_request_error",
        429: "rate_limit_error",
        500: "server_error",
    }

    def __init__(self, *, api_key: str | None = None, models: tuple[str, ...] = ("gpt-4o-mini",)):
        super().__init__(api_key=api_key)
        self.models = models

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("POST", "/v1/chat/completions", self.chat_completions),
            ("POST", "/v1/embeddings", self.embeddings),
            ("POST", "/v1/moderations", self.moderations),
            ("GET", "/v1/models", self.list_models),
        ]

    def error_body(self, failure: Failure) -> dict[str, Any]:
        kind = failure.type or self.ERROR_TYPES.get(failure.status, "invalid_request_error")
        error = {"message": failure.message, "type": kind, "param": failure.param}
        return {"error": {**error, "code": failure.code}}

    def check(self, request: web.Request, call: Received) -> web.Response | None:
        authorization = call.headers.get("authorization", "")
        if self.api_key is not None and authorization != f"Bearer {self.api_key}":
            message = "Incorrect API key provided." if authorization else "No API key provided."
            return self.error_response(Failure(401, message, code="invalid_api_key"))
        if request.method == "POST" and not isinstance(call.body, dict):
            return self.error_response(Failure(400, "We could not parse the JSON body."))
        if request.method == "POST" and not call.body.get("model"):
            return self.error_response(Failure(400, "you must provide a model parameter"))
        return None

    async def chat_completions(
        self, request: web.Request, call: Received, behaviour: Behaviour
    ) -> web.StreamResponse:
        body = call.body
        if not isinstance(body.get("messages"), list):
            missing = "Missing required parameter: 'messages'."
            failure = Failure(400, missing, param="messages", code="missing_required_parameter")
            return self.error_response(failure)
        answer = self.answer(body, behaviour, body.get("stop"))
        usage = _openai_usage(answer.prompt_tokens, answer.completion_tokens)
        usage.update(behaviour.usage or {})
        call.usage = usage
        finish = behaviour.finish_reason or self.FINISH[answer.stop]
        completion_id = self._id("chatcmpl-fake")
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            chunks = _openai_chunks(
                answer,
                finish,
                usage if include_usage else None,
                interleave=behaviour.interleave,
                stop_reason=self._stop_reason(answer),
            )
            envelope = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": body["model"],
                "system_fingerprint": "fp_fake",
            }
            if include_usage:
                envelope["usage"] = None  # OpenAI puts a null usage on every other chunk
            events = [_sse({**envelope, **chunk}) for chunk in chunks] + [b"data: [DONE]\n\n"]
            return await self.send_events(request, events, behaviour, self._stream_error)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": answer.text if answer.pieces or not answer.tool_calls else None,
            "refusal": None,
            "annotations": [],
        }
        if answer.tool_calls:
            message["tool_calls"] = [_openai_call(call) for call in answer.tool_calls]
        n = body.get("n") or 1
        choice = {"message": message, "logprobs": None, "finish_reason": finish}
        if self.names_stop_string:
            choice["stop_reason"] = self._stop_reason(answer)
        payload = {
            "id": completion_id,
            "object": "chat.completion",
            "created": CREATED,
            "model": body["model"],
            "choices": [{"index": i, **choice} for i in range(n)],
            "usage": usage,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }
        return await self.send_json(request, payload, behaviour)

    async def embeddings(
        self, request: web.Request, call: Received, behaviour: Behaviour
    ) -> web.StreamResponse:
        inputs = call.body.get("input")
        texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
        dimensions = call.body.get("dimensions") or 8
        data = []
        for index, text in enumerate(texts):
            vector = _vector(str(text), dimensions)
            encoded: Any = vector
            if call.body.get("encoding_format") == "base64":
                packed = struct.pack(f"<{len(vector)}f", *vector)
                encoded = base64.b64encode(packed).decode()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(count_tokens(str(text)) for text in texts)
        call.usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        payload = {"object": "list", "data": data, "model": call.body["model"], "usage": call.usage}
        return await self.send_json(request, payload, behaviour)

    async def moderations(
        self, request: web.Request, call: Received, behaviour: Behaviour
    ) -> web.StreamResponse:
        inputs = call.body.get("input")
        texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
        results = []
        for text in texts:
            flagged = FLAG_MARKER in str(text)
            categories = {name: flagged and name == "violence" for name in MODERATION_CATEGORIES}
            scores = {name: 0.99 if hit else 0.0001 for name, hit in categories.items()}
            results.append(
                {"flagged": flagged, "categories": categories, "category_scores": scores}
            )
        payload = {"id": self._id("modr-fake"), "model": call.body["model"], "results": results}
        return await self.send_json(request, payload, behaviour)

    async def list_models(
        self, request: web.Request, call: Received, behaviour: Behaviour
    ) -> web.StreamResponse:
        data = [
            {"id": model, "object": "model", "created": CREATED, "owned_by": "fake"}
            for model in self.models
        ]
        return await self.send_json(request, {"object": "list", "data": data}, behaviour)

    def _stream_error(self, failure: Failure) -> bytes:
        return _sse(self.error_body(failure))

    def _stop_reason(self, answer: Answer) -> str | None:
        return answer.stop_sequence if self.names_stop_string else None


class FakeAnthropic(FakeServer):
    """The Anthropic Messages API: /v1/messages (JSON and SSE), count_tokens, models.

    Requires a key, as `x-api-key` or a bearer token (equal to `api_key` when set), and
    `anthropic-version`; refuses unknown top-level fields as the real API does.
    """

    name = "fake-anthropic"
    tool_prefix = "toolu_fake"
    STOP: ClassVar[Mapping[str, str]] = {
        "stop": "end_turn",
        "stop_sequence": "stop_sequence",
        "length": "max_tokens",
    }
    ERROR_TYPES: ClassVar[Mapping[int, str]] = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        500: "api_error",
        529: "overloaded_error",
    }
    FIELDS = frozenset(
        {
            "model",
            "messages",
            "max_tokens",
            "system",
            "stop_sequences",
            "stream",
            "temperature",
            "top_p",
            "top_k",
            "tools",
            "tool_choice",
            "metadata",
            "thinking",
            "service_tier",
            "container",
            "mcp_servers",
            "context_management",
        }
    )

    def __init__(self, *, api_key: str | None = None, models: tuple[str, ...] = ("claude-fake",)):
        super().__init__(api_key=api_key)
        self.models = models

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("POST", "/v1/messages", self.messages),
            ("POST", "/v1/messages/count_tokens", self.count_tokens),
            ("GET", "/v1/models", self.list_models),
        ]

    def error_body(self, failure: Failure) -> dict[str, Any]:
        kind = failure.type or self.ERROR_TYPES.get(failure.status, "api_error")
        return {
            "type": "error",
            "error": {"type": kind, "message": failure.message},
            "request_id": "req_fake",
        }

    def check(self, request: web.Request, call: Received) -> web.Response | None:
        # API keys come as `x-api-key`; recent SDKs send them as a bearer token instead.
        bearer = call.headers.get("authorization", "").removeprefix("Bearer ")
        key = call.headers.get("x-api-key") or bearer or None
        if key is None:
            return self.error_response(Failure(401, "x-api-key header is required"))
        if self.api_key is not None and key != self.api_key:
            return self.error_response(Failure(401, "invalid x-api-key"))
        if "anthropic-version" not in call.headers:
            return self.error_response(Failure(400, "anthropic-version: header is required"))
        if request.method != "POST":
            return None
        if not isinstance(call.body, dict):
            return self.error_response(Failure(400, "There was an issue with your request body"))
        return self._invalid(call.body, request.path.endswith("/count_tokens"))

    def _invalid(self, body: dict[str, Any], counting: bool) -> web.Response | None:
        required = ("model", "messages") if counting else ("model", "messages", "max_tokens")
        problems = [f"{key}: Field required" for key in required if key not in body]
        problems += [
            f"{key}: Extra inputs are not permitted" for key in body if key not in self.FIELDS
        ]
        for i, message in enumerate(body.get("messages") or ()):
            if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
                problems.append(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        temperature = body.get("temperature")
        if isinstance(temperature, int | float) and not 0 <= temperature <= 1:
            problems.append("temperature: Input should be less than or equal to 1")
        problems += _thinking_problems(body)
        return self.error_response(Failure(400, problems[0])) if problems else None

    async def messages(
        self, request: web.Request, call: Received, behaviour: Behaviour
    ) -> web.StreamResponse:
        body = call.body
        answer = self.answer(body, behaviour, body.get("stop_sequences"))
        usage = {
            "input_tokens": answer.prompt_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": answer.completion_tokens,
            "service_tier": "standard",
        }
        thinking = _thinking_content(behaviour)
        usage["output_tokens"] += sum(count_tokens(b.get("thinking", "")) for b in thinking)
        usage.update(behaviour.usage or {})
        call.usage = usage
        stop_reason = behaviour.finish_reason or (
            "tool_use" if answer.stop == "tool_calls" else self.STOP[answer.stop]
        )
        message = {
            "id": self._id("msg_fake"),
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": thinking + _anthropic_content(answer),
            "stop_reason": stop_reason,
            "stop_sequence": answer.stop_sequence,
            "usage": usage,
        }
        if not body.get("stream"):
            return await self.send_json(request, message, behaviour)
        events = [(event["type"], event) for event in _anthropic_events(message, answer)]
        encoded = [_sse(data, name) for name, data in events]
        return await self.send_events(request, encoded, behaviour, self._stream_error)

    async def count_tokens(
        self, request: web.Request, call: Received, behaviour: Behaviour
    ) -> web.StreamResponse:
        payload = {"input_tokens": _prompt_tokens(call.body)}
        return await self.send_json(request, payload, behaviour)

    async def list_models(
        self, request: web.Request, call: Received, behaviour: Behaviour
    ) -> web.StreamResponse:
        data = [
            {
                "type": "model",
                "id": model,
                "display_name": model,
                "created_at": "2025-01-01T00:00:00Z",
            }
            for model in self.models
        ]
        payload = {
            "data": data,
            "has_more": False,
            "first_id": self.models[0] if self.models else None,
            "last_id": self.models[-1] if self.models else None,
        }
        return await self.send_json(request, payload, behaviour)

    def _stream_error(self, failure: Failure) -> bytes:
        return _sse(self.error_body(failure), "error")


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A running FakeOpenAI for one test."""
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    """A running FakeAnthropic for one test."""
    with FakeAnthropic() as fake:
        yield fake


JSON = "application/json"

MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)


def _openai_usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _openai_call(call: ToolCall) -> dict[str, Any]:
    function = {"name": call.name, "arguments": call.arguments_json}
    return {"id": call.id, "type": "function", "function": function}


def _openai_chunks(
    answer: Answer,
    finish: str,
    usage: dict[str, Any] | None,
    *,
    interleave: bool = False,
    stop_reason: str | None = None,
) -> list[dict[str, Any]]:
    """The chunk bodies of an OpenAI stream, without the shared id/model envelope."""

    def choice(delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
        return {
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}]
        }

    chunks = [choice({"role": "assistant", "content": "", "refusal": None})]
    chunks += [choice({"content": piece}) for piece in answer.pieces]
    heads, parts = [], []
    for index, call in enumerate(answer.tool_calls):
        function = {"name": call.name, "arguments": ""}
        head = {"index": index, "id": call.id, "type": "function", "function": function}
        heads.append([choice({"tool_calls": [head]})])
        parts.append(
            [
                choice({"tool_calls": [{"index": index, "function": {"arguments": part}}]})
                for part in _fragments(call.arguments_json)
            ]
        )
    if interleave:  # every call started, then their arguments in turns
        chunks += [chunk for head in heads for chunk in head]
        for turn in range(max((len(p) for p in parts), default=0)):
            chunks += [p[turn] for p in parts if turn < len(p)]
    else:
        chunks += [
            chunk for head, part in zip(heads, parts, strict=True) for chunk in [*head, *part]
        ]
    chunks.append(choice({}, finish))
    if stop_reason is not None:
        chunks[-1]["choices"][0]["stop_reason"] = stop_reason
    if usage is not None:
        chunks.append({"choices": [], "usage": usage})
    return chunks


def _anthropic_content(answer: Answer) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = []
    if answer.pieces:
        content.append({"type": "text", "text": answer.text})
    for call in answer.tool_calls:
        block = {
            "type": "tool_use",
            "id": call.id,
            "name": call.name,
            "input": dict(call.arguments),
        }
        content.append(block)
    return content


def _anthropic_events(message: dict[str, Any], answer: Answer) -> list[dict[str, Any]]:
    """The exact event sequence of an Anthropic stream for `message`."""
    usage = message["usage"]
    start_usage = {**usage, "output_tokens": 1}
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {**start, "usage": start_usage}}
    ]
    for index, block in enumerate(message["content"]):
        opened: dict[str, Any]
        if block["type"] == "text":
            opened = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": piece} for piece in answer.pieces]
        elif block["type"] == "thinking":
            opened = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [
                {"type": "thinking_delta", "thinking": piece}
                for piece in re.findall(r"\s*\S+", block["thinking"])
            ]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        elif block["type"] == "redacted_thinking":
            opened, deltas = block, []  # whole at its start
        else:
            opened = {**block, "input": {}}
            # A call without arguments streams one empty fragment and nothing else.
            arguments = json.dumps(block["input"], separators=(",", ":")) if block["input"] else ""
            fragments = ["", *_fragments(arguments)]
            deltas = [{"type": "input_json_delta", "partial_json": part} for part in fragments]
        events.append({"type": "content_block_start", "index": index, "content_block": opened})
        if index == 0:
            events.append({"type": "ping"})
        events += [{"type": "content_block_delta", "index": index, "delta": d} for d in deltas]
        events.append({"type": "content_block_stop", "index": index})
    if not message["content"]:
        events.append({"type": "ping"})
    stop = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
    events.append(
        {"type": "message_delta", "delta": stop, "usage": {"output_tokens": usage["output_tokens"]}}
    )
    events.append({"type": "message_stop"})
    return events


def thinking_signature(thinking: str) -> str:
    """The fake's signature of a thinking text (the real API's is opaque and checked too)."""
    return "sig-" + hashlib.sha256(thinking.encode()).hexdigest()[:24]


def _thinking_content(behaviour: Behaviour) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if behaviour.thinking is not None:
        blocks.append(
            {
                "type": "thinking",
                "thinking": behaviour.thinking,
                "signature": thinking_signature(behaviour.thinking),
            }
        )
    if behaviour.redacted_thinking is not None:
        blocks.append({"type": "redacted_thinking", "data": behaviour.redacted_thinking})
    return blocks


def _thinking_problems(body: Mapping[str, Any]) -> list[str]:
    """What the real API refuses about thinking blocks: a forged signature, and (thinking on)
    a last assistant turn with tool_use that does not start with its thinking."""
    problems = []
    messages = [m for m in body.get("messages") or () if isinstance(m, dict)]
    for i, message in enumerate(messages):
        content = message.get("content")
        for j, block in enumerate(content if isinstance(content, list) else ()):
            if (
                isinstance(block, dict)
                and block.get("type") == "thinking"
                and block.get("signature") != thinking_signature(str(block.get("thinking")))
            ):
                problems.append(
                    f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block"
                )
    if (body.get("thinking") or {}).get("type") != "enabled":
        return problems
    turns = [(i, m) for i, m in enumerate(messages) if m.get("role") == "assistant"]
    if turns and isinstance(turns[-1][1].get("content"), list):
        i, last = turns[-1]
        kinds = [block.get("type") for block in last["content"] if isinstance(block, dict)]
        if "tool_use" in kinds and kinds[0] not in ("thinking", "redacted_thinking"):
            problems.append(
                f"messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, but "
                f"found `{kinds[0]}`. When `thinking` is enabled, a final `assistant` message "
                "must start with a thinking block"
            )
    return problems


def _fragments(text: str, size: int = 7) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _sse(data: Mapping[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _drop(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """Close the connection mid-answer, as a crashing upstream would."""
    assert request.transport is not None
    request.transport.abort()
    return response


def _prompt_tokens(body: Mapping[str, Any]) -> int:
    texts = _texts(body.get("system")) + _texts(body.get("messages"))
    return sum(count_tokens(text) for text in texts)


def _texts(value: object) -> list[str]:
    """Every text in messages, content parts and blocks (tool results included)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [text for item in value for text in _texts(item)]
    if isinstance(value, Mapping):
        found = [value["text"]] if isinstance(value.get("text"), str) else []
        return found + _texts(value.get("content"))
    return []


def _sequences(stop: object) -> list[str]:
    if isinstance(stop, str):
        return [stop]
    return [s for s in stop if isinstance(s, str) and s] if isinstance(stop, list) else []


def _streaming(call: Received) -> bool:
    return isinstance(call.body, dict) and bool(call.body.get("stream"))


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _vector(text: str, dimensions: int) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    while len(digest) < dimensions:
        digest += hashlib.sha256(digest).digest()
    return [(byte - 128) / 128 for byte in digest[:dimensions]]


__all__ = [
    "CREATED",
    "DEFAULT_TEXT",
    "FLAG_MARKER",
    "Behaviour",
    "Failure",
    "FakeAnthropic",
    "FakeOpenAI",
    "FakeServer",
    "Gate",
    "Received",
    "ToolCall",
    "count_tokens",
    "fake_anthropic",
    "fake_openai",
    "thinking_signature",
]

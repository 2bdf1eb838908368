"""A fake OpenAI server that also serves the Responses API, as OpenAI sends it.

`FakeOpenAIResponses` is a `FakeOpenAI` with `POST /v1/responses`: a `response` object as JSON,
or with `stream: true` the typed SSE events, each with its `event:` line and sequence number:

    response.created, response.in_progress,
    per text:      response.output_item.added, response.content_part.added,
                   response.output_text.delta..., response.output_text.done,
                   response.content_part.done, response.output_item.done
    per tool call: response.output_item.added, response.function_call_arguments.delta...,
                   response.function_call_arguments.done, response.output_item.done
    response.completed (response.incomplete when max_output_tokens cut the answer)

Responses are stored as OpenAI stores them (unless `store: false`): GET and DELETE
/v1/responses/{id}, GET /v1/responses/{id}/input_items and POST /v1/responses/{id}/cancel
(which, as at OpenAI, refuses responses not created with `background: true`). Stored state is
billed as OpenAI bills it: `previous_response_id` adds the previous response's input and output
tokens to the input tokens, and `conversation` adds the tokens set in `conversations[id]`;
unknown ids are 404.

The scripted behaviours of tests.support.fakes apply: `error_after` sends OpenAI's stream `error`
event. Usage follows the fakes' word counting: input tokens are the words of `instructions` and
of every text in `input`; `cached_tokens` (settable per fake) of them are reported as cached.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from aiohttp import web

from tests.support.fakes import (
    CREATED,
    Answer,
    Behaviour,
    Failure,
    FakeOpenAI,
    Handler,
    Received,
    _fragments,
    _texts,
    count_tokens,
)


class FakeOpenAIResponses(FakeOpenAI):
    """FakeOpenAI plus the Responses API (JSON and typed SSE events)."""

    name = "fake-openai-responses"

    def __init__(self, *, api_key: str | None = None, models: tuple[str, ...] = ("gpt-4o-mini",)):
        super().__init__(api_key=api_key, models=models)
        self.cached_tokens = 0  # of the input tokens, how many the next answers call cached
        self.stored: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
        self.conversations: dict[str, int] = {}  # conversation id -> tokens it bills as input

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            *super().routes(),
            ("POST", "/v1/responses", self.responses),
            ("GET", "/v1/responses/{response_id}", self.retrieve),
            ("DELETE", "/v1/responses/{response_id}", self.delete),
            ("GET", "/v1/responses/{response_id}/input_items", self.input_items),
            ("POST", "/v1/responses/{response_id}/cancel", self.cancel),
        ]

    def check(self, request: web.Request, call: Received) -> web.Response | None:
        if request.path.endswith("/cancel"):
            authorization = call.headers.get("authorization", "")
            if self.api_key is not None and authorization != f"Bearer {self.api_key}":
                return self.error_response(
                    Failure(401, "Incorrect API key provided.", code="invalid_api_key")
                )
            return None
        return super().check(request, call)

    def _stored(self, request: web.Request) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        with self._lock:
            return self.stored.get(request.match_info["response_id"])

    def _missing(self, request: web.Request) -> web.Response:
        return self.error_response(
            Failure(
                404,
                f"Response with id '{request.match_info['response_id']}' not found.",
                param="response_id",
            )
        )

    async def retrieve(
        self, request: web.Request, call: Received, behaviour: Behaviour
    ) -> web.StreamResponse:
        found = self._stored(request)
        if found is None:
            return self._missing(request)
        return await self.send_json(request, found[0], behaviour)

    async def delete(
        self, request: web.Request, call: Received, behaviour: Behaviour
    ) -> web.StreamResponse:
        response_id = request.match_info["response_id"]
        with self._lock:
            found = self.stored.pop(response_id, None)
        if found is None:
            return self._missing(request)
        return await self.send_json(
            request, {"id": response_id, "object": "response.deleted", "deleted": True}, behaviour
        )

    async def input_items(
        self, request: web.Request, call: Received, behaviour: Behaviour
    ) -> web.StreamResponse:
        found = self._stored(request)
        if found is None:
            return self._missing(request)
        items = found[1]
        if call.query.get("order", "desc") == "desc":
            items = items[::-1]
        limit = int(call.query.get("limit", "20"))
        page = items[:limit]
        return await self.send_json(
            request,
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(items) > limit,
            },
            behaviour,
        )

    async def cancel(
        self, request: web.Request, call: Received, behaviour: Behaviour
    ) -> web.StreamResponse:
        found = self._stored(request)
        if found is None:
            return self._missing(request)
        if not found[0].get("background"):
            return self.error_response(
                Failure(400, "Only responses created with background=true can be cancelled.")
            )
        return await self.send_json(request, {**found[0], "status": "cancelled"}, behaviour)

    async def responses(
        self, request: web.Request, call: Received, behaviour: Behaviour
    ) -> web.StreamResponse:
        body = call.body
        if body.get("input") is None and body.get("previous_response_id") is None:
            missing = "Missing required parameter: 'input'."
            return self.error_response(Failure(400, missing, param="input"))
        limit = body.get("max_output_tokens")
        answer = self.answer({"max_tokens": limit}, behaviour)
        prompt = responses_prompt_tokens(body)
        previous, conversation = body.get("previous_response_id"), body.get("conversation")
        if isinstance(conversation, dict):
            conversation = conversation.get("id")
        if previous is not None:
            with self._lock:
                earlier = self.stored.get(previous)
            if earlier is None:
                return self.error_response(
                    Failure(
                        404,
                        f"Previous response with id '{previous}' not found.",
                        param="previous_response_id",
                    )
                )
            # The stored context is billed again as input, as OpenAI bills it.
            prompt += earlier[0]["usage"]["input_tokens"] + earlier[0]["usage"]["output_tokens"]
        if conversation is not None:
            if conversation not in self.conversations:
                return self.error_response(
                    Failure(
                        404,
                        f"Conversation with id '{conversation}' not found.",
                        param="conversation",
                    )
                )
            prompt += self.conversations[conversation]
        usage = {
            "input_tokens": prompt,
            "input_tokens_details": {
                "cached_tokens": min(self.cached_tokens, prompt),
                "cache_write_tokens": 0,
            },
            "output_tokens": answer.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + answer.completion_tokens,
        }
        call.usage = usage
        response = self._envelope(body)
        message_id, calls = self._id("msg_fake"), [self._id("fc_fake") for _ in answer.tool_calls]
        output = _output(answer, message_id, calls, "completed")
        if answer.stop == "length":
            for item in output:
                item["status"] = "incomplete"
            final = {
                **response,
                "status": "incomplete",
                "incomplete_details": {"reason": "max_output_tokens"},
            }
        else:
            final = {**response, "status": "completed", "completed_at": CREATED + 1}
        final.update(output=output, usage=usage, background=bool(body.get("background")))
        if body.get("store", True) is not False:
            with self._lock:
                self.stored[final["id"]] = (final, _input_items(body.get("input")))
        if not body.get("stream"):
            return await self.send_json(request, final, behaviour)
        events = _events(response, final, answer, message_id, calls)
        encoded = [_event(event, sequence) for sequence, event in enumerate(events)]

        def failure(problem: Failure) -> bytes:
            error = {
                "type": "error",
                "code": problem.code or "server_error",
                "message": problem.message,
                "param": problem.param,
            }
            return _event(error, behaviour.error_after or 0)

        return await self.send_events(request, encoded, behaviour, failure)

    def _envelope(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The response object as created: the request's settings, status in_progress."""
        reasoning = body.get("reasoning") or {}
        return {
            "id": self._id("resp_fake"),
            "object": "response",
            "created_at": CREATED,
            "status": "in_progress",
            "background": False,
            "billing": {"payer": "developer"},
            "completed_at": None,
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "max_tool_calls": body.get("max_tool_calls"),
            "model": body["model"],
            "output": [],
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "prompt_cache_key": body.get("prompt_cache_key"),
            "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
            "safety_identifier": body.get("safety_identifier"),
            "service_tier": "auto",
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_logprobs": body.get("top_logprobs", 0),
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"),
            "usage": None,
            "user": body.get("user"),
            "metadata": body.get("metadata") or {},
        }


def _input_items(given: Any) -> list[dict[str, Any]]:
    """The input as stored input items (a string is one user message), each with an id."""
    items = (
        [{"type": "message", "role": "user", "content": given}]
        if isinstance(given, str)
        else list(given or ())
    )
    return [
        {
            "id": f"msg_in{index}",
            **item,
            **(
                {"content": [{"type": "input_text", "text": item["content"]}]}
                if isinstance(item.get("content"), str)
                else {}
            ),
        }
        for index, item in enumerate(items)
    ]


def responses_prompt_tokens(body: Mapping[str, Any]) -> int:
    """The fake's input tokens: words of the instructions and of every input text."""
    texts = _texts(body.get("instructions")) + _texts(body.get("input"))
    for item in body.get("input") or ():
        if isinstance(item, Mapping) and item.get("type") == "function_call_output":
            texts += _texts(item.get("output"))
    return sum(count_tokens(text) for text in texts)


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _output(
    answer: Answer, message_id: str, call_ids: list[str], status: str
) -> list[dict[str, Any]]:
    output: list[dict[str, Any]] = []
    if answer.pieces:
        output.append(
            {
                "id": message_id,
                "type": "message",
                "status": status,
                "content": [_text_part(answer.text)],
                "role": "assistant",
            }
        )
    for item_id, call in zip(call_ids, answer.tool_calls, strict=True):
        output.append(
            {
                "id": item_id,
                "type": "function_call",
                "status": status,
                "arguments": call.arguments_json,
                "call_id": call.id,
                "name": call.name,
            }
        )
    return output


def _events(
    response: dict[str, Any],
    final: dict[str, Any],
    answer: Answer,
    message_id: str,
    call_ids: list[str],
) -> list[dict[str, Any]]:
    """Every event of the stream, in order, without sequence numbers."""
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": response},
        {"type": "response.in_progress", "response": response},
    ]
    index = 0
    if answer.pieces:
        where = {"item_id": message_id, "output_index": index, "content_index": 0}
        opened = {
            "id": message_id,
            "type": "message",
            "status": "in_progress",
            "content": [],
            "role": "assistant",
        }
        events += [
            {"type": "response.output_item.added", "output_index": index, "item": opened},
            {"type": "response.content_part.added", **where, "part": _text_part("")},
        ]
        events += [
            {
                "type": "response.output_text.delta",
                **where,
                "delta": piece,
                "logprobs": [],
                "obfuscation": "fake",
            }
            for piece in answer.pieces
        ]
        events += [
            {"type": "response.output_text.done", **where, "text": answer.text, "logprobs": []},
            {"type": "response.content_part.done", **where, "part": _text_part(answer.text)},
            {
                "type": "response.output_item.done",
                "output_index": index,
                "item": final["output"][index],
            },
        ]
        index += 1
    for item_id, call in zip(call_ids, answer.tool_calls, strict=True):
        where = {"item_id": item_id, "output_index": index}
        opened = {
            "id": item_id,
            "type": "function_call",
            "status": "in_progress",
            "arguments": "",
            "call_id": call.id,
            "name": call.name,
        }
        events.append({"type": "response.output_item.added", "output_index": index, "item": opened})
        events += [
            {
                "type": "response.function_call_arguments.delta",
                **where,
                "delta": fragment,
                "obfuscation": "fake",
            }
            for fragment in _fragments(call.arguments_json)
        ]
        events += [
            {
                "type": "response.function_call_arguments.done",
                **where,
                "arguments": call.arguments_json,
            },
            {
                "type": "response.output_item.done",
                "output_index": index,
                "item": final["output"][index],
            },
        ]
        index += 1
    events.append({"type": f"response.{final['status']}", "response": final})
    return events


def _event(data: dict[str, Any], sequence: int) -> bytes:
    payload = {
        "type": data["type"],
        "sequence_number": sequence,
        **{k: v for k, v in data.items() if k != "type"},
    }
    return f"event: {data['type']}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


@pytest.fixture
def fake_openai_responses() -> Iterator[FakeOpenAIResponses]:
    """A running FakeOpenAIResponses for one test."""
    with FakeOpenAIResponses() as fake:
        yield fake


__all__ = ["FakeOpenAIResponses", "fake_openai_responses", "responses_prompt_tokens"]

#!/usr/bin/env python3
"""The harness's fake upstream (bench/harness/mock_upstream.py), plus Anthropic's Messages API.

Serves everything mock_upstream.py serves (OpenAI chat completions, JSON and SSE) and:

  POST /v1/messages   stream false/absent -> one `message` JSON with usage
                      stream true         -> Anthropic's event sequence, one write per
                      event: message_start (usage.input_tokens), ping, content_block_start
                      (text), MOCK_STREAM_CHUNKS content_block_delta (text_delta, the same
                      words as the OpenAI stream), content_block_stop, message_delta
                      (stop_reason "end_turn", usage.output_tokens), message_stop

so one process on CPU 0 answers both provider types. Same environment as mock_upstream.py
(MOCK_PORT, MOCK_API_KEY: also accepted as `x-api-key`, Anthropic's header).

    MOCK_PORT=18000 MOCK_API_KEY=sk-... python bench/anthropic_upstream.py
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "harness"))

import mock_upstream as base  # the harness, kept as given

MESSAGE_ID = "msg_01Mock000000000000000001"


def _event(name, payload):
    data = b"event: " + name.encode() + b"\ndata: " + base._dumps(payload) + b"\n\n"
    return base._http_chunk(data)


def _message(model, content, stop_reason, output_tokens):
    return {
        "id": MESSAGE_ID,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": base.PROMPT_TOKENS,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output_tokens,
            "service_tier": "standard",
        },
    }


def message_bytes(model):
    return base._dumps(
        _message(
            model, [{"type": "text", "text": base.CONTENT}], "end_turn", base.COMPLETION_TOKENS
        )
    )


def message_events(model):
    evs = [
        _event("message_start", {"type": "message_start", "message": _message(model, [], None, 1)}),
        _event("ping", {"type": "ping"}),
        _event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
    ]
    evs += [
        _event(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": piece},
            },
        )
        for piece in base.PIECES
    ]
    evs += [
        _event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": base.COMPLETION_TOKENS},
            },
        ),
        _event("message_stop", {"type": "message_stop"}),
        b"0\r\n\r\n",
    ]
    return evs


_events_cache = {}


class MessagesProto(base.HttpProto):
    __slots__ = ()

    def on_header(self, name, value):
        if base.API_KEY is None:
            return
        key = base.API_KEY.encode()
        lower = name.lower()
        if (lower == b"authorization" and value.strip() == b"Bearer " + key) or (
            lower == b"x-api-key" and value.strip() == key
        ):
            self.auth_ok = True

    def on_message_complete(self):
        if self.url.split(b"?", 1)[0] != b"/v1/messages" or self.parser.get_method() != b"POST":
            return super().on_message_complete()
        base.REQUESTS += 1
        keep = self.parser.should_keep_alive()
        if not self.auth_ok:
            return self._send(base._resp(b"401 Unauthorized", base.UNAUTH, keep=keep), keep)
        try:
            req = base._loads(b"".join(self.body))
            model = req.get("model") or "mock-model"
            stream = req.get("stream") is True
        except Exception:
            return self._send(base._resp(b"400 Bad Request", base.BAD_JSON, keep=keep), keep)
        if not isinstance(model, str):
            model = "mock-model"
        if not stream:
            return self._send(base._resp(b"200 OK", message_bytes(model), keep=keep), keep)
        evs = _events_cache.get(model)
        if evs is None:
            evs = _events_cache[model] = message_events(model)
        head = base.SSE_HEAD + (b"\r\n" if keep else b"Connection: close\r\n\r\n")
        self._stream_fast(head, evs, keep)


if __name__ == "__main__":
    base.HttpProto = base.AuthHttpProto = MessagesProto  # main() picks one of the two
    runner = base.uvloop.run if base.uvloop is not None else base.asyncio.run
    runner(base.main())

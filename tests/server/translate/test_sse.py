"""The incremental SSE parser and serializer."""

from __future__ import annotations

import random

import pytest

from otari_server.providers.scrub import is_secret, scrub_bytes, scrub_text
from otari_server.translate.sse import DONE_EVENT, Event, SSEParser, encode
from otari_server.translate.streams import ChatPassThrough

ANTHROPIC_STREAM = (
    b"event: message_start\n"
    b'data: {"type":"message_start","message":{"id":"msg_1"}}\n\n'
    b"event: ping\n"
    b'data: {"type": "ping"}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"h\xc3\xa9"}}\n\n'
    b": keep-alive comment\n\n"
    b"event: message_stop\n"
    b'data: {"type":"message_stop"}\n\n'
)

OPENAI_STREAM = (
    b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n'
    b'data: {"choices":[{"delta":{"content":" there"}}]}\n\n'
    b"data: [DONE]\n\n"
)


def parse_all(chunks: list[bytes]) -> list[Event]:
    parser = SSEParser()
    events = [event for chunk in chunks for event in parser.feed(chunk)]
    return events + parser.close()


def splits(data: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    chunks, at = [], 0
    while at < len(data):
        size = rng.choice([1, 1, 2, 3, 5, 8, 13, 64])
        chunks.append(data[at : at + size])
        at += size
    return chunks


def test_whole_stream_in_one_chunk() -> None:
    events = parse_all([ANTHROPIC_STREAM])
    assert [e.event for e in events] == [
        "message_start",
        "ping",
        "content_block_delta",
        "message_stop",
    ]
    assert events[2].json()["delta"]["text"] == "hé"


def test_openai_stream_and_done() -> None:
    events = parse_all([OPENAI_STREAM])
    assert [e.event for e in events] == [None, None, None]
    assert [e.done for e in events] == [False, False, True]
    assert events[1].json() == {"choices": [{"delta": {"content": " there"}}]}


@pytest.mark.parametrize("stream", [ANTHROPIC_STREAM, OPENAI_STREAM])
def test_byte_by_byte_equals_whole(stream: bytes) -> None:
    assert parse_all([bytes([b]) for b in stream]) == parse_all([stream])


@pytest.mark.parametrize("seed", range(25))
@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_random_splits_and_line_endings(seed: int, newline: bytes) -> None:
    stream = ANTHROPIC_STREAM.replace(b"\n", newline)
    assert parse_all(splits(stream, seed)) == parse_all([ANTHROPIC_STREAM])


def test_crlf_split_between_cr_and_lf_is_one_line_ending() -> None:
    events = parse_all([b"data: a\r", b"\n\r", b"\ndata: b\r\n", b"\r\n"])
    assert [e.data for e in events] == ["a", "b"]


def test_every_split_point_of_a_crlf_stream() -> None:
    stream = OPENAI_STREAM.replace(b"\n", b"\r\n")
    expected = parse_all([stream])
    for at in range(len(stream)):
        assert parse_all([stream[:at], stream[at:]]) == expected


def test_multibyte_character_split_across_chunks() -> None:
    data = 'data: {"t":"日本"}\n\n'.encode()
    cut = data.index("本".encode()) + 1
    assert parse_all([data[:cut], data[cut:]])[0].json() == {"t": "日本"}


def test_multiline_data_fields_and_ids() -> None:
    events = parse_all([b"id: 7\nevent: x\ndata: one\ndata:two\ndata\n\n"])
    assert events == [Event(data="one\ntwo\n", event="x", id="7")]


def test_comments_and_events_without_data_dispatch_nothing() -> None:
    assert parse_all([b": ping\n\nevent: lonely\n\nretry: 100\n\n"]) == []


def test_blank_line_runs_and_leading_byte_order_mark() -> None:
    stream = b"\xef\xbb\xbfdata: a\n\n\n\ndata: b\n\n"
    assert [e.data for e in parse_all(splits(stream, 3))] == ["a", "b"]


def test_unterminated_last_event_waits_for_close() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: complete\n\ndata: partial") == [Event(data="complete")]
    assert parser.close() == [Event(data="partial")]
    assert parser.close() == []


def test_field_without_space_and_value_with_colons() -> None:
    assert parse_all([b"data:a: b\n\n"]) == [Event(data="a: b")]


def test_encode_round_trips() -> None:
    payload = {"type": "content_block_delta", "delta": {"text": "a\nb"}}
    encoded = encode(payload, event="content_block_delta")
    assert encoded.startswith(b'event: content_block_delta\ndata: {"type":')
    assert encoded.endswith(b"}\n\n")
    assert parse_all([encoded]) == [
        Event(data=encoded.split(b"data: ")[1].strip().decode(), event="content_block_delta")
    ]
    assert parse_all([encoded])[0].json() == payload


def test_encode_multiline_strings_and_done() -> None:
    assert encode("a\nb") == b"data: a\ndata: b\n\n"
    assert DONE_EVENT == b"data: [DONE]\n\n"
    assert parse_all([encode("a\nb")]) == [Event(data="a\nb")]


# -- the relay's translators (pure) and the scrubbing rule ------------------------------------


def test_scrubbing_only_touches_secrets_on_token_boundaries() -> None:
    assert [
        is_secret(key) for key in ("x", "k", "EMPTY", "ollama", "aaaaaaaaaaaaaaaaaaaa", None)
    ] == [False] * 6
    secret = "sk-proj-Zt8vQ2mW9xLr4KpA"
    assert is_secret(secret)
    line = f'data: {{"object":"x","text":"Six experts box {secret}, a{secret}"}}\n\n'
    assert scrub_bytes("x", line.encode()) == line.encode()
    assert scrub_text(secret, line) == line.replace(f" {secret},", " [redacted],")
    assert (
        scrub_bytes(secret, line.encode()) == line.replace(f" {secret},", " [redacted],").encode()
    )


def test_chat_pass_through_flushes_skips_and_strips_in_any_split() -> None:
    stream = (
        b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":null}\n\n'
        b'data: {"choices": [\n\n'
        b'data: {"choices":[{"index":0,"delta":{}}],"usage":{"prompt_tokens":2,'
        b'"completion_tokens":1},"cost":1}\n\n'
        b"data: [DONE]"
    )  # the last event lacks its blank line
    for size in (1, 7, len(stream)):
        relay = ChatPassThrough(strip_usage=True)
        out = b"".join(relay.feed(stream[i : i + size]) for i in range(0, len(stream), size))
        out += relay.finish()
        assert out == (b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n' + DONE_EVENT)
        assert relay.malformed == 1 and relay.done
        used = relay.used()
        assert used is not None and (used.prompt_tokens, used.completion_tokens) == (2, 1)


# -- the pass-through's plain runs: relayed as they came, exactly as parsing would relay them ----

_CONTENT = b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"%s"}}],"usage":null}\n\n'
# Every kind of event a provider may put between plain content events.
_ODD_EVENTS = [
    b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2}}\n\n',
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"x"}}],'
    b'"usage": {"prompt_tokens":1}}\n\n',
    b'data: {"error":{"message":"overloaded","type":"server_error"}}\n\n',
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"error"}}]}\n\n',
    b"data: [DONE]\n\n",
    b": keep-alive\n\n",
    b'event: chunk\ndata: {"id":"c1","choices":[]}\n\n',
    b'id: 7\ndata: {"id":"c1","choices":[]}\n\n',
    b'data: {"id":"c1",\ndata: "choices":[]}\n\n',
    b'data:{"id":"c1","choices":[]}\n\n',
    b"data: not json\n\n",
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"\xff\xfe"}}]}\n\n',
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"h\xc3\xa9"}}]}\n\n',
    b'data: {"id":"c1","choices":[]}\r\n\r\n',
    b"\n\n\n",
]


def _parsed_relay(stream: bytes, strip: bool) -> tuple[bytes, ChatPassThrough]:
    """What the pass-through relays when every event goes through the parser."""
    relay = ChatPassThrough(strip_usage=strip)
    parser = SSEParser()
    out = relay._relay(parser.feed(stream)) + relay.finish()
    return out, relay


@pytest.mark.parametrize("seed", range(60))
def test_plain_runs_relay_exactly_what_parsing_relays(seed: int) -> None:
    rng = random.Random(seed)
    parts = [_CONTENT % f"w{i}".encode() for i in range(rng.randint(0, 30))]
    for _ in range(rng.randint(0, 4)):
        parts.insert(rng.randint(0, len(parts)), rng.choice(_ODD_EVENTS))
    stream = b"".join(parts)
    strip = rng.random() < 0.5
    expected, reference = _parsed_relay(stream, strip)
    relay = ChatPassThrough(strip_usage=strip)
    pieces = [stream] if seed % 3 == 0 else splits(stream, seed)
    out = b"".join(relay.feed(piece) for piece in pieces) + relay.finish()
    assert out == expected
    assert (relay.chunks, relay.deltas, relay.malformed, relay.error, relay.done) == (
        reference.chunks,
        reference.deltas,
        reference.malformed,
        reference.error,
        reference.done,
    )
    assert relay.used() == reference.used()


def test_a_plain_run_is_relayed_as_it_came_and_counted() -> None:
    words = [_CONTENT % f"w{i}".encode() for i in range(5)]
    usage = _ODD_EVENTS[0]
    relay = ChatPassThrough(strip_usage=False)
    assert relay.feed(b"".join(words)) == b"".join(words)
    assert relay.deltas == 5 and relay.output_tokens == 4
    assert relay.feed(usage + b"data: [DONE]\n\n") == usage + DONE_EVENT
    used = relay.used()
    assert relay.done and used is not None and used.completion_tokens == 2


def test_the_usual_shapes_parse_as_the_general_rule_does() -> None:
    # One line of data, or an event name then one line of data: parsed without the loop;
    # the same events as the field order or extra spaces the general rule handles.
    assert parse_all([b'data: {"a":1}\n\n']) == parse_all([b'data:{"a":1}\n\n'])
    assert parse_all([b"event: ping\ndata: {}\n\n"]) == parse_all([b"data: {}\nevent: ping\n\n"])
    assert parse_all([b"event: \ndata: x\n\n"]) == [Event(data="x")]
    assert parse_all([b"data: h\xc3\xa9 \xff\n\n"]) == [Event(data="hé \ufffd")]


def test_encode_writes_utf8_and_falls_back_for_what_orjson_cannot_write() -> None:
    assert encode({"text": "hé"}) == 'data: {"text":"hé"}\n\n'.encode()
    assert encode({"n": 2**70}, "big") == b'event: big\ndata: {"n":1180591620717411303424}\n\n'
    assert encode({1: "a"}) == b'data: {"1":"a"}\n\n'
    # Half of an emoji split across two events: escaped, not a UnicodeEncodeError mid-stream.
    assert encode({"text": "A \ud83d"}) == b'data: {"text":"A \\ud83d"}\n\n'

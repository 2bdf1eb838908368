"""Generation endpoints as data: what differs between them is a small frozen record."""

from __future__ import annotations

from dataclasses import dataclass

from otari_server.accounting.prices import AUDIO_SECONDS, CHARACTERS, IMAGES, REQUESTS, TOKENS


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One generation endpoint: its public path, upstream path and metering rule."""

    path: str
    upstream_path: str
    # What it is billed by (prices.TOKENS, IMAGES, ...): decides the price it requires.
    billing: str = TOKENS
    # Body fields that cap output tokens, first present wins.
    output_limits: tuple[str, ...] = ()
    # Body fields the request cannot do without (beyond "model").
    required: tuple[str, ...] = ()


CHAT = Endpoint(
    "/v1/chat/completions",
    "/chat/completions",
    output_limits=("max_completion_tokens", "max_tokens"),
    required=("messages",),
)
MESSAGES = Endpoint(
    "/v1/messages", "/messages", output_limits=("max_tokens",), required=("messages", "max_tokens")
)
RESPONSES = Endpoint(
    "/v1/responses", "/responses", output_limits=("max_output_tokens",), required=("input",)
)
EMBEDDINGS = Endpoint("/v1/embeddings", "/embeddings", required=("input",))
MODERATIONS = Endpoint("/v1/moderations", "/moderations", billing=REQUESTS, required=("input",))
RERANK = Endpoint("/v1/rerank", "/rerank", billing=REQUESTS, required=("query", "documents"))
IMAGES_GENERATIONS = Endpoint(
    "/v1/images/generations", "/images/generations", billing=IMAGES, required=("prompt",)
)
TRANSCRIPTIONS = Endpoint(
    "/v1/audio/transcriptions", "/audio/transcriptions", billing=AUDIO_SECONDS
)
SPEECH = Endpoint(
    "/v1/audio/speech", "/audio/speech", billing=CHARACTERS, required=("input", "voice")
)
BATCHES = Endpoint("/v1/batches", "/batches")

# Every generation endpoint served straight from ASGI, listed once: the fast path
# (`edge.hotpath`) serves these, `generation.routes` documents them in /openapi.json, and
# connected mode serves the CONNECTED subset. tests/server/edge/test_endpoints.py checks all
# three agree. Batches are not here: they are resource routes (create, list, get, cancel).
GENERATION: tuple[Endpoint, ...] = (
    CHAT,
    MESSAGES,
    RESPONSES,
    EMBEDDINGS,
    MODERATIONS,
    RERANK,
    IMAGES_GENERATIONS,
    TRANSCRIPTIONS,
    SPEECH,
)
CONNECTED: tuple[Endpoint, ...] = (CHAT,)

# The otari client SDK prefixes its calls with /api; both spellings are served.
PREFIXES = ("", "/api")


def served_paths(endpoints: tuple[Endpoint, ...]) -> frozenset[str]:
    """Every request path that reaches `endpoints`: each public path, bare and /api-prefixed."""
    return frozenset(prefix + endpoint.path for endpoint in endpoints for prefix in PREFIXES)

"""Generation endpoints as data: what differs between them is a small frozen record."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One generation endpoint: its public path, upstream path and metering rules."""

    path: str
    upstream_path: str
    # Body fields that cap output tokens, first present wins.
    output_limits: tuple[str, ...] = ()
    streams: bool = False


CHAT = Endpoint("/v1/chat/completions", "/chat/completions",
                output_limits=("max_completion_tokens", "max_tokens"), streams=True)

"""Upstream error bodies: what failed, whatever the provider's error shape."""

from __future__ import annotations

from collections.abc import Mapping


def error_details(body: object) -> tuple[str | None, str | None]:
    """(type, message) of an upstream error body, (None, None) when it holds neither.

    Understands OpenAI's `{"error": {"message", "type", ...}}`, Anthropic's
    `{"type": "error", "error": {"type", "message"}}`, the bare `{"error": "..."}` of Ollama
    and llama.cpp, vLLM's flat `{"message", "type", ...}` and FastAPI's `{"detail": ...}`.
    """
    if not isinstance(body, Mapping):
        return None, None
    error = body.get("error")
    if isinstance(error, Mapping):
        return _text(error.get("type")), _text(error.get("message"))
    if isinstance(error, str):
        return None, error or None
    if message := _text(body.get("message")):
        return _text(body.get("type")), message  # vLLM's flat OpenAI-like shape
    return None, _text(body.get("detail"))


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None

"""create_connected_app(settings): placeholder until connected mode is built (issue 7)."""

from __future__ import annotations

from fastapi import FastAPI

from otari_server.settings import ConfigError, Settings


def create_connected_app(settings: Settings) -> FastAPI:
    """Refuse to start: connected mode is not implemented yet."""
    raise ConfigError("platform: connected mode is not available in this build yet")

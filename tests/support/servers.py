"""A real otari server on a loopback port, in a background thread, for SDK-driven tests."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from otari_server import settings as settings_module
from otari_server.app import create_app
from otari_server.settings import Settings

MASTER_KEY = "sk-test-master-key-0123456789"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings for a test gateway: no config file, no environment, a known master key."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "master_key": MASTER_KEY,
        "bootstrap_api_key": False,
    }
    values.update(overrides)
    return settings_module.load(None, values, environ={})


@contextmanager
def running(settings: Settings) -> Iterator[str]:
    """Serve the app until the block ends; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    started = threading.Event()

    def wait_started() -> None:
        while thread.is_alive() and not server.started:
            started.wait(0.01)

    wait_started()
    if not server.started:
        raise RuntimeError("test gateway failed to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)

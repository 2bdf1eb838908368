"""A real otari server on a loopback port, in a background thread, for SDK-driven tests."""

from __future__ import annotations

import os
import random
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
    """A TCP port nobody listens on right now, from this test worker's own range.

    The ranges lie below the kernel's ephemeral ports (32768 and up), so a port handed out
    here is never the one another xdist worker, or an outgoing connection, gets next; with
    bind(0) two workers could be given the same freed port and race to listen on it.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    base = 20000 + (int(worker) % 6 if worker.isdigit() else 0) * 2000
    for _ in range(500):
        port = base + random.randrange(2000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use, or still in TIME_WAIT
            return port
    raise RuntimeError(f"no free port in {base}-{base + 1999}")


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
    # The listening socket is bound here and handed to uvicorn: no window in which another
    # test could take the port.
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = int(listener.getsockname()[1])
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
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
        listener.close()

"""Run the daemon in the foreground (what `otari serve` calls)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import uvicorn

from otari_server import logs, settings
from otari_server.app import create_app
from otari_server.db import redact

__all__ = ["ConfigError", "run"]
ConfigError = settings.ConfigError


def run(config_path: Path | None, overrides: Mapping[str, Any]) -> None:
    """Resolve settings and serve until SIGINT/SIGTERM; exit non-zero if start-up fails."""
    resolved = settings.load(config_path, overrides)
    logs.configure(resolved.log_level)
    # The ledger's writer thread shares the GIL with the event loop; a shorter switch
    # interval than the default 5 ms keeps a request from waiting behind a batch write.
    sys.setswitchinterval(0.0005)
    config = uvicorn.Config(
        create_app(resolved),
        host=resolved.host,
        port=resolved.port,
        log_level=logs.level_number(resolved.log_level),
        log_config=None,
        timeout_graceful_shutdown=int(resolved.shutdown_timeout),
        server_header=False,
        access_log=False,
    )
    server = uvicorn.Server(config)
    print(f"otari: serving on http://{resolved.host}:{resolved.port} "
          f"(database {redact(resolved.database_url)})", file=sys.stderr, flush=True)
    server.run()
    if not server.started:
        raise SystemExit(1)

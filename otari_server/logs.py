"""Logging set-up: one format, a level given by name or number."""

from __future__ import annotations

import logging


def level_number(level: str) -> int:
    """'info' or '20' to 20; 'trace' maps to a level below debug, as uvicorn has it."""
    if level.isdigit():
        return int(level)
    if level == "trace":
        return 5
    return logging.getLevelNamesMapping()[level.upper()]


def configure(level: str) -> None:
    """Send otari's and uvicorn's logs to stderr at the given level."""
    logging.basicConfig(level=level_number(level),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    # Client libraries log every request at info; the gateway's own log says what matters.
    for name in ("httpx", "httpx2", "mcp", "aiohttp.access"):
        logging.getLogger(name).setLevel(max(logging.WARNING, level_number(level)))

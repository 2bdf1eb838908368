"""Logging set-up: one format, a level given by name or number."""

from __future__ import annotations

import logging
from typing import Any


def level_number(level: str) -> int:
    """'info' or '20' to 20; 'trace' maps to a level below debug, as uvicorn has it."""
    if level.isdigit():
        return int(level)
    if level == "trace":
        return 5
    return logging.getLevelNamesMapping()[level.upper()]


class JSONFormatter(logging.Formatter):
    """One JSON object per line, for log shippers: time, level, logger, message, and the
    access line's fields; money as plain decimal numbers."""

    def format(self, record: logging.LogRecord) -> str:
        from otari_server import jsonio

        entry: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            entry.update(access)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return jsonio.dumps(entry)


def configure(level: str, log_format: str = "text", access_log: bool = True) -> None:
    """Send otari's and uvicorn's logs to stderr at the given level, as text or JSON."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        JSONFormatter()
        if log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=level_number(level), handlers=[handler], force=True)
    if not access_log:
        logging.getLogger("otari.access").setLevel(logging.WARNING)
    # Client libraries log every request at info; the gateway's own log says what matters.
    for name in ("httpx", "httpx2", "mcp", "aiohttp.access"):
        logging.getLogger(name).setLevel(max(logging.WARNING, level_number(level)))

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


# Characters that would end or rewrite a log line: C0 controls (newline, carriage return,
# escape, NUL), DEL, C1 controls and the Unicode line and paragraph separators.
_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))} | {
    0x0A: "\\n",
    0x0D: "\\r",
    0x09: "\\t",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def one_line(text: str) -> str:
    """`text` with every control character written as an escape (`\\n`, `\\x1b`): what a
    client put in a URL, a model name or a header cannot forge a log line, move the cursor
    or make the log file binary for `grep`."""
    return text if text.isprintable() else text.translate(_CONTROLS)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message`, the message on one line (see one_line); a traceback
    follows on its own lines as usual."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = record.message
        record.message = one_line(message)
        try:
            return super().formatMessage(record)
        finally:
            record.message = message


def configure(level: str, log_format: str = "text", access_log: bool = True) -> None:
    """Send otari's and uvicorn's logs to stderr at the given level, as text or JSON."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        JSONFormatter()
        if log_format == "json"
        else TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=level_number(level), handlers=[handler], force=True)
    if not access_log:
        logging.getLogger("otari.access").setLevel(logging.WARNING)
    # Client libraries log every request at info; the gateway's own log says what matters.
    for name in ("httpx", "httpx2", "mcp", "aiohttp.access"):
        logging.getLogger(name).setLevel(max(logging.WARNING, level_number(level)))

"""Files holding secrets: created with mode 0600 from the start, never wider."""

from __future__ import annotations

import os
from pathlib import Path


def write(path: Path, content: str) -> None:
    """Write `content` to `path` readable and writable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # O_CREAT with 0600 avoids a window in which the file exists with wider permissions.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, content.encode("utf-8"))
    finally:
        os.close(fd)

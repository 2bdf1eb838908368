"""Fixtures: an isolated HOME/XDG tree per test, and a scripted fake gateway."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from otari_cli.config import Dirs
from tests.cli.fakes import Script, fake_gateway

ISOLATED = ("OTARI_URL", "OTARI_MASTER_KEY", "OTARI_CONTEXT", "OTARI_CONFIG", "OTARI_HOST",
            "OTARI_PORT", "OTARI_DATABASE_URL", "OTARI_LOG_LEVEL", "OTARI_AUTO_MIGRATE",
            "OTARI_TIMEOUT")


def isolated_env(root: Path) -> dict[str, str]:
    """HOME and XDG variables pointing into `root` (platformdirs honours them on Linux)."""
    return {
        "HOME": str(root / "home"),
        "XDG_CONFIG_HOME": str(root / "config"),
        "XDG_STATE_HOME": str(root / "state"),
        "XDG_DATA_HOME": str(root / "data"),
        "XDG_CACHE_HOME": str(root / "cache"),
    }


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own HOME and XDG directories, with no OTARI_* variables set."""
    for name, value in isolated_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    for name in ISOLATED:
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture
def dirs(home: Path) -> Dirs:
    """The platform directories inside the isolated HOME."""
    found = Dirs.from_platform()
    assert str(found.config).startswith(str(home))
    return found


@pytest.fixture
def fake() -> Iterator[tuple[str, Script]]:
    """A scripted loopback HTTP server: (url, script)."""
    with fake_gateway() as served:
        yield served

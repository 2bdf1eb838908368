"""Fixtures: an isolated HOME/XDG tree per test, and a scripted fake gateway."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from otari_cli.config import Dirs
from tests.cli.fakes import Script, fake_gateway
from tests.support.servers import free_port as free_port  # below the ephemeral ports

ISOLATED = (
    "OTARI_URL",
    "OTARI_MASTER_KEY",
    "OTARI_CONTEXT",
    "OTARI_CONFIG",
    "OTARI_HOST",
    "OTARI_PORT",
    "OTARI_DATABASE_URL",
    "OTARI_LOG_LEVEL",
    "OTARI_AUTO_MIGRATE",
    "OTARI_TIMEOUT",
)


def isolated_env(root: Path) -> dict[str, str]:
    """HOME and XDG variables pointing into `root` (platformdirs honours them on Linux)."""
    return {
        "HOME": str(root / "home"),
        "XDG_CONFIG_HOME": str(root / "config"),
        "XDG_STATE_HOME": str(root / "state"),
        "XDG_DATA_HOME": str(root / "data"),
        "XDG_CACHE_HOME": str(root / "cache"),
    }


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists and is neither a zombie nor dead (Linux /proc)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


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


@dataclass
class Result:
    """What one `otari` invocation did."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        """stdout parsed as JSON, money as Decimal."""
        return json.loads(self.out, parse_float=Decimal)


class Executable:
    """Runs the installed `otari` executable with its own HOME and XDG directories."""

    def __init__(self, root: Path) -> None:
        exe = shutil.which("otari")
        assert exe is not None, "the otari console script is not installed (pip install -e .)"
        self.exe = exe
        self.root = root
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("OTARI_")}
        self.env.update(isolated_env(root))
        self.dirs = Dirs(
            config=root / "config" / "otari",
            state=root / "state" / "otari",
            log=root / "state" / "otari" / "log",
        )

    def __call__(
        self,
        *args: str,
        input: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 90,
    ) -> Result:
        done = subprocess.run(
            [self.exe, *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**self.env, **(env or {})},
        )
        return Result(done.returncode, done.stdout, done.stderr)


class InProcess:
    """Runs the Typer app in this process (CliRunner) against a gateway URL."""

    def __init__(self, url: str, master_key: str) -> None:
        self.url = url
        self.master_key = master_key

    def __call__(
        self,
        *args: str,
        input: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 90,
    ) -> Result:
        from typer.testing import CliRunner

        from otari_cli.main import app

        result = CliRunner().invoke(
            app,
            ["--url", self.url, "--master-key", self.master_key, *args],
            input=input,
            env=env,
        )
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return Result(result.exit_code, result.stdout, result.stderr)


Cli = Executable | InProcess

FAKE_MODEL = "fakeai:gpt-test"
COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-test",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
}


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    """A fake OpenAI-compatible provider for the daemon to forward to: its base URL."""
    with fake_gateway() as (url, script):
        script.answer("POST", "/v1/chat/completions", 200, COMPLETION)
        yield f"{url}/v1"


def provider_table(base_url: str) -> str:
    """The config TOML that points provider `fakeai` at the fake."""
    return f'\n[providers.fakeai]\ntype = "openai"\nbase_url = "{base_url}"\napi_key = "x"\n'


@pytest.fixture(scope="module")
def daemon_cli(tmp_path_factory: pytest.TempPathFactory, provider: str) -> Iterator[Executable]:
    """`otari init && otari start` in a fresh HOME (module-wide); stopped afterwards."""
    cli = Executable(tmp_path_factory.mktemp("daemon"))
    init = cli("init", "--port", str(free_port()))
    assert init.code == 0, init.err
    with cli.dirs.config_file.open("a") as config:
        config.write(provider_table(provider))
    started = cli("start")
    assert started.code == 0, started.err
    yield cli
    stopped = cli("stop")
    assert stopped.code == 0, stopped.err


@pytest.fixture(scope="module")
def inprocess_cli(tmp_path_factory: pytest.TempPathFactory, provider: str) -> Iterator[InProcess]:
    """The CLI in this process against a real gateway app served from a thread."""
    from tests.support.servers import MASTER_KEY, make_settings, running

    db = tmp_path_factory.mktemp("inproc") / "otari.db"
    settings = make_settings(
        f"sqlite:///{db}",
        providers={"fakeai": {"type": "openai", "base_url": provider, "api_key": "x"}},
    )
    with running(settings) as url:
        yield InProcess(url, MASTER_KEY)


@pytest.fixture(params=["inprocess", "executable"])
def cli(request: pytest.FixtureRequest) -> Cli:
    """Each test using this runs in-process (CliRunner) and through the installed executable."""
    name = "inprocess_cli" if request.param == "inprocess" else "daemon_cli"
    found: Cli = request.getfixturevalue(name)
    return found

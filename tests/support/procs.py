"""`otari serve` in a subprocess: config file, start, readiness, SIGTERM or SIGKILL, its log.

    with served(tmp_path, database_url, providers={...}) as gw:
        httpx.get(f"{gw.url}/health")
        code = gw.terminate()

Each process runs in its own session (so a `--workers N` parent and its workers can be
killed together by their group id), logs to a file in the test's directory, and inherits the
test's isolated HOME and XDG directories. Nothing here sleeps for a condition: every wait
polls with a deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import tomli_w
from sqlalchemy import select

from otari_server.storage import db
from otari_server.storage.tables import Reservation, UsageLog, User
from tests.support.servers import MASTER_KEY, free_port

MASTER = {"Authorization": f"Bearer {MASTER_KEY}"}
START_TIMEOUT = 30.0
ROOT = Path(__file__).resolve().parents[2]  # the tree under test


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.02
) -> float:
    """Poll `condition` until it holds; return the seconds it took, or fail naming `what`."""
    started = time.monotonic()
    deadline = started + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started


def write_config(
    directory: Path, database_url: str, providers: Mapping[str, Any] | None = None, **settings: Any
) -> Path:
    """A config TOML for a test gateway: fast usage flushes, quiet logs, no bootstrap key."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "master_key": MASTER_KEY,
        "bootstrap_api_key": False,
        "usage_flush_interval": 0.05,
        "log_level": "warning",
        **settings,
    }
    if providers:
        values["providers"] = {name: dict(table) for name, table in providers.items()}
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"otari-{uuid.uuid4().hex[:8]}.toml"
    path.write_text(tomli_w.dumps(values), encoding="utf-8")
    return path


def otari_command() -> list[str]:
    """The `otari` command of the tree under test (what the console script runs).

    Not whatever `otari` is first on PATH: an editable install may point at another checkout.
    """
    return [sys.executable, "-m", "otari_cli"]


def otari_env() -> dict[str, str]:
    """This process's environment (isolated HOME/XDG) without OTARI_* settings, importing
    the tree under test first."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("OTARI_") or k == "OTARI_TEST_DATABASE_URL"
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@dataclass
class ServeProcess:
    """One `otari serve` process and its log file."""

    config: Path
    port: int
    log_path: Path
    args: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = START_TIMEOUT) -> ServeProcess:
        """Start and return once /health/readiness answers 200."""
        command = [
            *otari_command(),
            "serve",
            "--config",
            str(self.config),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *self.args,
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=otari_env(),
                start_new_session=True,
            )
        self.wait_ready(timeout)
        return self

    def ready(self) -> bool:
        """Whether readiness answers 200 right now (failing loudly if the process died)."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"otari serve exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return httpx.get(f"{self.url}/health/readiness", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def wait_ready(self, timeout: float = START_TIMEOUT) -> float:
        """Seconds until readiness answered 200."""
        return wait_until(self.ready, timeout, f"{self.url} to be ready")

    def accepting(self) -> bool:
        """Whether the port still accepts new connections."""
        try:
            httpx.get(f"{self.url}/health/liveness", timeout=1)
        except httpx.ConnectError:
            return False
        except httpx.TransportError:
            return True
        return True

    def log(self) -> str:
        """Everything the process wrote so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def signal(self, signum: int) -> None:
        """Send `signum` to the process (uvicorn forwards it to its workers)."""
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """The exit code, waiting at most `timeout` seconds."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful) and the exit code."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the process and every worker it started (its own process group)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def cleanup(self) -> None:
        """Make sure nothing this test started outlives it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.kill()
        else:
            # Workers of a dead parent would keep the port: take the group down too.
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)


@contextmanager
def served(
    directory: Path,
    database_url: str,
    *,
    port: int | None = None,
    args: tuple[str, ...] = (),
    config: Path | None = None,
    providers: Mapping[str, Any] | None = None,
    **settings: Any,
) -> Iterator[ServeProcess]:
    """An `otari serve` subprocess, ready when the block starts, gone when it ends."""
    path = config or write_config(directory, database_url, providers, **settings)
    chosen = port or free_port()
    process = ServeProcess(
        path, chosen, directory / f"serve-{chosen}-{uuid.uuid4().hex[:8]}.log", args
    )
    try:
        process.start()
        yield process
    finally:
        process.cleanup()


def fake_provider(base_url: str, api_key: str) -> dict[str, dict[str, str]]:
    """The providers table for one fake OpenAI-compatible provider named `fake`."""
    return {"fake": {"type": "openai", "base_url": base_url, "api_key": api_key}}


def admin(url: str) -> httpx.Client:
    """A client with the master key (closed by the caller)."""
    return httpx.Client(base_url=url, headers=MASTER, timeout=30)


def create(client: httpx.Client, path: str, body: str | dict[str, Any]) -> dict[str, Any]:
    """POST a management resource (a str body is sent verbatim: exact decimals) and return it."""
    if isinstance(body, str):
        response = client.post(path, content=body, headers={"content-type": "application/json"})
    else:
        response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    created: dict[str, Any] = response.json()
    return created


def budgeted_key(
    client: httpx.Client,
    user_id: str,
    max_budget: str,
    model_key: str = "fake:gpt-4o-mini",
    output_price: str | None = None,
) -> str:
    """A user on a budget of `max_budget`, an API key for them, and (optionally) a price."""
    if output_price is not None:
        create(
            client,
            "/v1/pricing",
            f'{{"model_key": "{model_key}", '
            f'"input_price_per_million": 0, "output_price_per_million": {output_price}}}',
        )
    budget = create(client, "/v1/budgets", f'{{"max_budget": {max_budget}}}')
    create(client, "/v1/users", {"user_id": user_id, "budget_id": budget["budget_id"]})
    return str(create(client, "/v1/keys", {"user_id": user_id, "key_name": user_id})["key"])


@dataclass(frozen=True)
class Books:
    """What the database says about one user: settled spend, holds, usage rows."""

    spend: Decimal
    reserved: Decimal
    holds: list[tuple[str, Decimal]]  # (instance, amount) per reservation row
    usage: list[UsageRow]


@dataclass(frozen=True)
class UsageRow:
    """The columns of a usage row these tests look at."""

    id: str
    status: str
    cost: Decimal | None
    request_id: str | None
    error_message: str | None
    status_code: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


def books(database_url: str, user_id: str) -> Books:
    """Read the user's ledger straight from the database (no gateway in between)."""
    engine = db.create_db_engine(database_url)
    try:
        with engine.connect() as conn:
            user = conn.execute(
                select(User.spend, User.reserved).where(User.user_id == user_id)
            ).one()
            holds = [
                (str(r.instance_id), r.amount)
                for r in conn.execute(
                    select(Reservation.instance_id, Reservation.amount).where(
                        Reservation.user_id == user_id
                    )
                )
            ]
            usage = [
                UsageRow(
                    r.id,
                    r.status,
                    r.cost,
                    r.request_id,
                    r.error_message,
                    r.status_code,
                    r.prompt_tokens,
                    r.completion_tokens,
                )
                for r in conn.execute(
                    select(
                        UsageLog.id,
                        UsageLog.status,
                        UsageLog.cost,
                        UsageLog.request_id,
                        UsageLog.error_message,
                        UsageLog.status_code,
                        UsageLog.prompt_tokens,
                        UsageLog.completion_tokens,
                    ).where(UsageLog.user_id == user_id)
                )
            ]
    finally:
        engine.dispose()
    return Books(user.spend, user.reserved, holds, usage)

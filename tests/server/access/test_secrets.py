"""No secret leaks: a whole session through the `otari` CLI and the API, then a grep.

init, start, manage keys, users, budgets and pricing, proxy chat calls to a fake provider,
provoke errors (unknown key, a provider 401 and 500 that echo the provider's key, a budget
refusal), stop; then the daemon's log, every CLI output, every HTTP answer, every usage row
and the database file itself are searched for the master key, each API key and the provider
key. Files holding secrets must be mode 0600.
"""

from __future__ import annotations

import json
import secrets
import stat
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomli_w
from sqlalchemy import create_engine, text

from otari_server import settings as settings_module
from otari_server.runtime import resolve_master_key
from tests.support.fakes import Failure, FakeAnthropic, FakeOpenAI
from tests.support.procs import MASTER, otari_command, otari_env, wait_until
from tests.support.servers import free_port, make_settings, running

MODEL = "fake:gpt-4o-mini"


@dataclass
class Session:
    """Runs `otari` like a user would and keeps everything it printed."""

    captured: list[tuple[str, str]] = field(default_factory=list)  # (what, text)

    def __call__(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*otari_command(), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=90,
            env=otari_env(),
        )
        self.captured += [
            (f"otari {' '.join(args)} (stdout)", done.stdout),
            (f"otari {' '.join(args)} (stderr)", done.stderr),
        ]
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json").stdout)

    def saw(self, what: str, response: httpx.Response) -> httpx.Response:
        """Keep an HTTP answer (status line, headers and body) for the grep."""
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        self.captured.append((what, f"{response.status_code}\n{headers}\n{response.text}"))
        return response


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def chat(url: str, key: str, **extra: Any) -> httpx.Response:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 5,
        **extra,
    }
    return httpx.post(
        f"{url}/v1/chat/completions",
        json=body,
        timeout=30,
        headers={"Authorization": f"Bearer {key}"},
    )


def test_a_whole_session_leaks_no_secret(isolated_home: Path) -> None:
    provider_key = "sk-provider-" + secrets.token_urlsafe(24)
    bad_key = "gw-" + secrets.token_urlsafe(32)
    otari = Session()
    config_dir, state_dir = isolated_home / ".config" / "otari", isolated_home / ".state" / "otari"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with FakeOpenAI(api_key=provider_key) as fake:
        otari("init", "--port", str(port))
        config_file = config_dir / "config.toml"
        config = tomllib.loads(config_file.read_text())
        master_key = config["master_key"]
        config["providers"] = {
            "fake": {"type": "openai", "base_url": fake.base_url, "api_key": provider_key}
        }
        config["usage_flush_interval"] = 0.05
        config_file.write_text(tomli_w.dumps(config))
        otari("start", "--log-level", "debug")
        try:
            bootstrap_file = state_dir / "bootstrap_api_key"
            bootstrap_key = bootstrap_file.read_text().strip()
            otari("status")

            budget = otari.json("budgets", "create", "--max", "0.02")  # two calls
            otari("users", "create", "alice", "--budget", budget["budget_id"])
            otari("pricing", "set", MODEL, "--input-price", "0", "--output-price", "2000")
            alice = otari.json("keys", "create", "--user", "alice", "--name", "alice-laptop")
            spare = otari.json("keys", "create", "--name", "spare")
            otari("keys", "update", spare["id"], "--name", "renamed", "-m", "team=ml")
            otari("keys", "list")
            otari(
                "context",
                "add",
                "elsewhere",
                "--url",
                "http://127.0.0.1:9",
                "--key-stdin",
                input=master_key + "\n",
            )

            assert otari.saw("chat", chat(url, alice["key"])).status_code == 200
            assert otari.saw("stream", chat(url, alice["key"], stream=True)).status_code == 200
            assert otari.saw("unknown key", chat(url, bad_key)).status_code == 401
            fake.push(error=Failure(401, f"Incorrect API key provided: {provider_key}"))
            assert otari.saw("provider 401", chat(url, spare["key"])).status_code == 502
            fake.push(error=Failure(500, f"internal error for key {provider_key}"))
            assert otari.saw("provider 500", chat(url, spare["key"])).status_code == 502
            assert otari.saw("budget", chat(url, alice["key"])).status_code == 402
            assert (
                otari.saw(
                    "non-master",
                    httpx.get(
                        f"{url}/v1/keys", headers={"Authorization": f"Bearer {alice['key']}"}
                    ),
                ).status_code
                == 403
            )
            otari.saw(
                "usage",
                httpx.get(f"{url}/v1/usage", headers={"Authorization": f"Bearer {master_key}"}),
            )
            otari("usage")
            otari("keys", "revoke", spare["id"], "--yes")
        finally:
            otari("stop")

    secret_values = {
        "master key": master_key,
        "bootstrap key": bootstrap_key,
        "alice's key": alice["key"],
        "spare key": spare["key"],
        "unknown key": bad_key,
        "provider key": provider_key,
    }
    haystacks = list(otari.captured)
    # `keys create` shows its secret once, by design: take that out, then grep the rest.
    for created in (alice, spare):
        shown = [i for i, (what, hay) in enumerate(haystacks) if created["key"] in hay]
        assert len(shown) == 1 and "keys create" in haystacks[shown[0]][0], shown
        what, hay = haystacks[shown[0]]
        haystacks[shown[0]] = (what, hay.replace(created["key"], ""))
    logs = sorted((state_dir / "log").glob("*"))
    assert logs, "the daemon wrote no log"
    haystacks += [(str(p), p.read_text(errors="replace")) for p in logs]
    database = Path(settings_module.data_dir()) / "otari.db"
    engine = create_engine(f"sqlite:///{database}")
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(text("SELECT * FROM usage_logs"))]
    engine.dispose()
    assert len(rows) >= 4, rows
    assert any(row["error_message"] and "[redacted]" in row["error_message"] for row in rows)
    haystacks.append(("usage rows", json.dumps(rows, default=str)))
    for path in sorted(database.parent.glob("otari.db*")):
        haystacks.append((str(path), path.read_bytes().decode("latin-1")))

    leaks = [
        f"{name} in {what}"
        for name, value in secret_values.items()
        for what, hay in haystacks
        if value in hay
    ]
    assert not leaks, leaks

    # Every file that holds a secret is private; the expected ones are among them.
    holders = {
        path: [
            name
            for name, value in secret_values.items()
            if value in path.read_text(errors="replace")
        ]
        for path in isolated_home.rglob("*")
        if path.is_file()
    }
    holders = {path: names for path, names in holders.items() if names}
    assert {config_file, bootstrap_file} <= holders.keys(), holders
    assert any(path.is_relative_to(config_dir) and path != config_file for path in holders)
    for path in [*holders, *logs]:
        assert mode(path) == 0o600, (path, oct(mode(path)), holders.get(path))


def test_generated_master_key_file_is_private(isolated_home: Path) -> None:
    settings = settings_module.load(None, {"database_url": "sqlite://"}, environ={})
    key = resolve_master_key(settings)
    path = settings_module.master_key_path()
    assert path.read_text().strip() == key
    assert mode(path) == 0o600
    assert mode(path.parent) & 0o077 == 0
    assert resolve_master_key(settings) == key  # read back, not regenerated


def test_the_sqlite_database_and_its_wal_are_created_private(tmp_path: Path) -> None:
    # Key hashes and every user's usage live in this file: 0600 whatever the umask.
    database = tmp_path / "data" / "otari.db"
    url = f"sqlite:///{database}"
    with running(make_settings(url)) as served:
        created = httpx.post(f"{served}/v1/users", json={"user_id": "u1"}, headers=MASTER)
        assert created.status_code == 200
        files = sorted(database.parent.glob("otari.db*"))
        assert database in files and database.with_name("otari.db-wal") in files
        assert {path.name: mode(path) for path in files} == {path.name: 0o600 for path in files}


def test_an_existing_database_file_keeps_its_mode(tmp_path: Path) -> None:
    database = tmp_path / "otari.db"
    database.touch(mode=0o640)
    database.chmod(0o640)
    with running(make_settings(f"sqlite:///{database}")):
        assert mode(database) == 0o640


STREAMED_ERRORS = [
    ("fake", "/v1/chat/completions", {"model": "fake:gpt-4o-mini"}),
    ("claude", "/v1/chat/completions", {"model": "claude:claude-sonnet"}),
    ("claude", "/v1/messages", {"model": "claude:claude-sonnet", "max_tokens": 10}),
]


@pytest.mark.parametrize(
    ("provider", "path", "body"),
    STREAMED_ERRORS,
    ids=[f"{p}{path}" for p, path, _ in STREAMED_ERRORS],
)
def test_a_streamed_provider_error_is_redacted(
    sqlite_url: str, provider: str, path: str, body: dict[str, Any]
) -> None:
    provider_key = "sk-provider-" + secrets.token_urlsafe(24)
    with (
        FakeOpenAI(api_key=provider_key) as openai_fake,
        FakeAnthropic(api_key=provider_key) as anthropic_fake,
    ):
        providers = {
            "fake": {"type": "openai", "base_url": openai_fake.base_url, "api_key": provider_key},
            "claude": {
                "type": "anthropic",
                "base_url": anthropic_fake.base_url,
                "api_key": provider_key,
            },
        }
        fake = openai_fake if provider == "fake" else anthropic_fake
        fake.push(error=Failure(500, f"overloaded, key {provider_key}"), error_after=1)
        settings = make_settings(
            sqlite_url, providers=providers, require_pricing=False, usage_flush_interval=0.05
        )
        with running(settings) as url:
            answer = httpx.post(
                f"{url}{path}",
                headers=MASTER,
                timeout=30,
                json={**body, "stream": True, "messages": [{"role": "user", "content": "hi"}]},
            )
            rows: list[str] = []

            def logged() -> bool:
                rows[:] = [httpx.get(f"{url}/v1/usage", headers=MASTER).text]
                return rows[0] != "[]"

            wait_until(logged, 10, "the usage row")
    assert answer.status_code == 200
    assert "overloaded" in answer.text
    assert provider_key not in answer.text
    assert provider_key not in rows[0]

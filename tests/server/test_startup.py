"""First start (generated master key, bootstrap key), migrations, readiness."""

from __future__ import annotations

import logging
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from starlette.testclient import TestClient

from otari_server import settings
from otari_server.app import create_app
from otari_server.storage import db
from tests.support.factories import MASTER
from tests.support.procs import otari_command, otari_env
from tests.support.servers import free_port, make_settings


def test_first_start_generates_a_private_master_key(sqlite_url: str) -> None:
    resolved = settings.load(None, {"database_url": sqlite_url}, environ={})
    with TestClient(create_app(resolved)) as client:
        path = settings.master_key_path()
        key = path.read_text().strip()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert client.get("/v1/keys", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    with TestClient(create_app(resolved)) as client:  # the same key on the next start
        assert client.get("/v1/keys", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_where_the_master_key_comes_from_is_logged_once_per_start(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    generated = f"master key: from the generated key file {settings.master_key_path()}"
    configured = "master key: from the configuration (config file or OTARI_MASTER_KEY)"
    # The first start generates the key file, the second reads it, the third is given a key.
    for given, said in (({}, generated), ({}, generated), ({"master_key": "mk"}, configured)):
        caplog.clear()
        resolved = settings.load(None, {"database_url": sqlite_url, **given}, environ={})
        with caplog.at_level(logging.INFO, logger="otari"), TestClient(create_app(resolved)):
            pass
        messages = [record.getMessage() for record in caplog.records]
        assert [m for m in messages if m.startswith("master key")] == [said]


def test_bootstrap_api_key_is_minted_once_and_kept_private(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    resolved = settings.load(None, {"database_url": sqlite_url, "master_key": "mk"}, environ={})
    with TestClient(create_app(resolved)) as client:
        path = settings.state_dir() / "bootstrap_api_key"
        secret = path.read_text().strip()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert secret.startswith("gw-")
        assert secret not in caplog.text
        assert client.get("/v1/models", headers={"Otari-Key": secret}).status_code == 200
        keys = client.get("/v1/keys", headers={"Authorization": "Bearer mk"}).json()
    with TestClient(create_app(resolved)) as client:
        again = client.get("/v1/keys", headers={"Authorization": "Bearer mk"}).json()
    assert len(keys) == len(again) == 1


def test_migrations_create_the_schema_and_can_be_switched_off(database_url: str) -> None:
    with TestClient(create_app(make_settings(database_url, auto_migrate=False))) as client:
        unmigrated = client.get("/health/readiness")
        assert unmigrated.status_code == 503
        assert unmigrated.json()["database"] == "not migrated"
    engine = create_engine(db.normalize_url(database_url))
    assert "api_keys" not in inspect(engine).get_table_names()
    db.migrate(database_url)
    assert {
        "api_keys",
        "users",
        "budgets",
        "pricing",
        "usage_logs",
        "reservations",
        "alembic_version",
    } <= set(inspect(engine).get_table_names())
    engine.dispose()
    with TestClient(create_app(make_settings(database_url, auto_migrate=False))) as client:
        assert client.get("/v1/keys", headers=MASTER).status_code == 200
        assert client.get("/health/readiness").status_code == 200


def test_failed_migration_stops_start_up(sqlite_url: str) -> None:
    # A database claiming a revision we do not know cannot be upgraded safely.
    engine = create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)"))
        conn.execute(text("INSERT INTO alembic_version VALUES ('9999_from_the_future')"))
    engine.dispose()
    with (
        pytest.raises(Exception, match="9999_from_the_future"),
        TestClient(create_app(make_settings(sqlite_url))),
    ):
        pass


def test_readiness_is_503_when_the_database_is_unreachable(tmp_path: Path) -> None:
    url = f"postgresql://nobody:nothing@127.0.0.1:{free_port()}/none"
    app = create_app(make_settings(url, auto_migrate=False))
    with TestClient(app) as client:
        response = client.get("/health/readiness")
        assert response.status_code == 503
        assert response.json()["database"] == "unreachable"
        assert client.get("/health/liveness").status_code == 200
        keys = client.get("/v1/keys", headers=MASTER)
        assert keys.status_code == 503 and "database unavailable" in keys.json()["detail"]
        assert "Traceback" not in keys.text


@pytest.mark.parametrize(
    ("table", "key"),
    [
        (
            '[providers.broken]\ntype = "nope"\nbase_url = "http://127.0.0.1:9"\n',
            "providers.broken.type: must be one of openai, anthropic",
        ),
        (
            '[providers.broken]\ntype = "openai"\nbase_url = "ftp://x"\n',
            "providers.broken.base_url: must be an http:// or https:// URL",
        ),
        (
            '[providers.broken]\ntype = "openai"\nbase_url = "http://x"\ntimeout = true\n',
            "providers.broken.timeout: must be a positive number of seconds",
        ),
        ('[providers]\nbroken = "http://x"\n', "providers.broken: expected a table"),
    ],
)
def test_a_broken_provider_table_stops_start_up_with_one_line(
    tmp_path: Path, table: str, key: str
) -> None:
    config = tmp_path / "otari.toml"
    config.write_text(
        f'database_url = "sqlite:///{tmp_path}/otari.db"\n'
        f'master_key = "mk-start-up-test"\nport = {free_port()}\n{table}'
    )
    done = subprocess.run(
        [*otari_command(), "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=otari_env(),
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"error: invalid configuration: {key}"]
    assert not (tmp_path / "otari.db").exists()  # stopped before opening anything


def test_an_sqlite_gateway_without_metrics_loads_none_of_the_optional_parts(
    sqlite_url: str,
) -> None:
    # Memory (issue 17): the PostgreSQL dialect, prometheus_client, the audio reader and the
    # gateway-run tool loop are loaded when configured or first used, not by every gateway.
    # (A first start migrates the database with Alembic, which loads every dialect: the
    # database is migrated here first, as any start after the first finds it.)
    resolved = settings.load(None, {"database_url": sqlite_url}, environ={})
    with TestClient(create_app(resolved)) as client:
        assert client.get("/health/readiness").status_code == 200
    script = f"""
import sys
from starlette.testclient import TestClient
from otari_server import settings
from otari_server.app import create_app
resolved = settings.load(None, {{"database_url": {sqlite_url!r}}}, environ={{}})
with TestClient(create_app(resolved)) as client:
    assert client.get("/health/readiness").status_code == 200
optional = ("sqlalchemy.dialects.postgresql", "prometheus_client", "mutagen",
            "otari_server.tools.loop", "otari_server.tools.toolbox", "psycopg")
print(sorted(m for m in sys.modules if m.startswith(optional)))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout

"""GET /v1/providers and `otari providers list`: configured providers and enabled presets."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from otari_cli.main import app as cli
from otari_server.app import create_app
from tests.support.factories import MASTER, make_key
from tests.support.servers import MASTER_KEY, make_settings, running

LOCAL = {"local": {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-local"}}


@pytest.fixture
def env_preset(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("GROQ_API_KEY", "gsk-from-environment")
    yield


def test_providers_lists_config_and_environment_without_keys(
    sqlite_url: str, env_preset: None
) -> None:
    with TestClient(create_app(make_settings(sqlite_url, providers=LOCAL))) as client:
        answer = client.get("/v1/providers", headers=MASTER)
        assert answer.status_code == 200
        rows = {row["name"]: row for row in answer.json()["data"]}
        assert rows["local"] == {
            "name": "local",
            "type": "openai",
            "base_url": "http://127.0.0.1:9/v1",
            "api_key_set": True,
            "source": "config",
        }
        assert rows["groq"]["source"] == "environment (GROQ_API_KEY)"
        assert rows["groq"]["api_key_set"] is True
        assert "sk-local" not in answer.text and "gsk-from-environment" not in answer.text
        api_key = make_key(client)["key"]
        assert client.get("/v1/providers", headers={"Otari-Key": api_key}).status_code == 403


def test_start_up_warns_when_no_provider_is_configured(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.INFO, logger="otari"),
        TestClient(create_app(make_settings(sqlite_url))),
    ):
        pass
    assert any("no providers configured" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with (
        caplog.at_level(logging.INFO, logger="otari"),
        TestClient(create_app(make_settings(sqlite_url, providers=LOCAL))),
    ):
        pass
    assert any(r.getMessage() == "providers: local (openai, config)" for r in caplog.records)


def test_cli_providers_list(sqlite_url: str) -> None:
    with running(make_settings(sqlite_url, providers=LOCAL)) as url:
        result = CliRunner().invoke(cli, ["--url", url, "--master-key", MASTER_KEY, "providers"])
    assert result.exit_code == 0, result.stderr
    assert [row["name"] for row in json.loads(result.stdout)] == ["local"]

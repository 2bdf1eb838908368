"""Configuration precedence, interpolation, one-line errors, zero-config defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from otari_server import settings
from otari_server.settings import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_zero_config_defaults(isolated_home: Path) -> None:
    resolved = settings.load(None, {}, environ={})
    assert (resolved.host, resolved.port) == ("127.0.0.1", 8000)
    assert resolved.database_url.startswith("sqlite:///")
    assert resolved.database_url.endswith("/otari/otari.db")
    assert str(isolated_home) in resolved.database_url
    assert resolved.master_key is None and resolved.auto_migrate is True


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    path = write(tmp_path, 'port = 9001\nhost = "0.0.0.0"\nlog_level = "debug"\n')
    from_file = settings.load(path, {}, environ={})
    assert (from_file.port, from_file.host, from_file.log_level) == (9001, "0.0.0.0", "debug")
    from_env = settings.load(path, {}, environ={"OTARI_PORT": "9002"})
    assert from_env.port == 9002 and from_env.host == "0.0.0.0"
    from_flags = settings.load(path, {"port": 9003}, environ={"OTARI_PORT": "9002"})
    assert from_flags.port == 9003
    assert from_flags.sources["port"] == "flags"
    assert from_flags.sources["host"].startswith("file")


def test_config_path_from_env_and_default_location(tmp_path: Path, isolated_home: Path) -> None:
    path = write(tmp_path, "port = 9100\n")
    assert settings.load(None, {}, environ={"OTARI_CONFIG": str(path)}).port == 9100
    settings.default_config_path().parent.mkdir(parents=True, exist_ok=True)
    settings.default_config_path().write_text("port = 9200\n")
    assert settings.load(None, {}, environ={}).port == 9200


def test_interpolation(tmp_path: Path) -> None:
    path = write(tmp_path, 'master_key = "${MK}"\n[providers.openai]\napi_key = "k-${KEY}"\n')
    resolved = settings.load(path, {}, environ={"MK": "secret", "KEY": "abc"})
    assert resolved.master_key == "secret"
    assert resolved.providers["openai"]["api_key"] == "k-abc"
    with pytest.raises(ConfigError, match=r"providers\.openai\.api_key: environment var"):
        settings.load(path, {}, environ={"MK": "secret"})


@pytest.mark.parametrize(
    ("text", "environ", "key"),
    [
        ("port = 'eighty'\n", {}, "port"),
        ("port = -1\n", {}, "port"),
        ("auto_migrate = 'maybe'\n", {}, "auto_migrate"),
        ("log_level = 'loud'\n", {}, "log_level"),
        ("colour = 'blue'\n", {}, "colour"),
        ("", {"OTARI_PORT": "x"}, "port"),
        ("providers = 3\n", {}, "providers"),
        ("cors_allow_origins = ['https://app.example.com/path']\n", {}, "cors_allow_origins"),
        ("cors_allow_origins = 'ftp://x'\n", {}, "cors_allow_origins"),
    ],
)
def test_invalid_values_name_the_key_in_one_line(
    tmp_path: Path, text: str, environ: dict[str, str], key: str
) -> None:
    with pytest.raises(ConfigError) as info:
        settings.load(write(tmp_path, text), {}, environ=environ)
    assert str(info.value).startswith(f"{key}:")
    assert "\n" not in str(info.value)


def test_broken_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        settings.load(write(tmp_path, "port = = 1"), {}, environ={})
    with pytest.raises(ConfigError, match="not found"):
        settings.load(tmp_path / "absent.toml", {}, environ={})


def test_example_config_is_valid_and_documents_every_key() -> None:
    example = Path(__file__).resolve().parents[2] / "config.example.toml"
    text = example.read_text()
    for name in settings._PARSERS:
        assert f"# {name} =" in text or f"\n{name} =" in text, name
    # It starts as shipped: no environment variable needed.
    resolved = settings.load(example, {}, environ={})
    assert resolved.port == 8000


def test_context_windows_are_per_model_with_a_default() -> None:
    resolved = settings.load(
        None,
        {"context_windows": {"openai:gpt-4o": 128000}, "default_context_window": 200000},
        environ={},
    )
    assert resolved.context_window("openai:gpt-4o") == 128000
    assert resolved.context_window("openai:gpt-4.1") == 200000
    assert settings.load(None, {}, environ={}).context_window("x:y") == 1_048_576
    for bad in (0, -5, True, "128k", 1.5):
        with pytest.raises(settings.ConfigError) as caught:
            settings.load(None, {"context_windows": {"openai:gpt-4o": bad}}, environ={})
        assert str(caught.value) == (
            f"context_windows.openai:gpt-4o: expected a positive "
            f"number of tokens, got {bad!r} (from flags)"
        )

"""Which gateway: flags and env > contexts > local daemon; files at mode 0600."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from otari_cli.config import (
    Context,
    Contexts,
    Dirs,
    LocalSettings,
    Selection,
    config_file_path,
    is_loopback,
    load_contexts,
    local_settings,
    local_url,
    resolve_target,
    save_contexts,
    write_private,
)
from otari_cli.errors import UsageError

LOCAL = LocalSettings(None, "127.0.0.1", 8000, "local-key", "generated key file")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_dirs_follow_xdg(dirs: Dirs, home: Path) -> None:
    assert dirs.config_file == home / "config" / "otari" / "config.toml"
    assert dirs.contexts_file.parent == dirs.config
    assert dirs.pidfile.parent == home / "state" / "otari"
    assert str(dirs.logfile).startswith(str(home / "state"))


def test_write_private_is_0600_even_over_a_readable_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "secret.toml"
    target.parent.mkdir()
    target.write_text("old")
    target.chmod(0o644)
    write_private(target, "new")
    assert target.read_text() == "new"
    assert mode(target) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["secret.toml"]


def test_contexts_round_trip(dirs: Dirs) -> None:
    contexts = Contexts(
        current="prod",
        entries={
            "prod": Context("prod", "https://gw.example.com", key_env="PROD_KEY"),
            "lab": Context("lab", "http://10.0.0.5:8000", key="sk-lab"),
        },
    )
    save_contexts(dirs.contexts_file, contexts)
    assert mode(dirs.contexts_file) == 0o600
    assert load_contexts(dirs.contexts_file) == contexts


def test_missing_contexts_file_is_empty(dirs: Dirs) -> None:
    assert load_contexts(dirs.contexts_file) == Contexts()


def test_broken_contexts_file_is_a_usage_error(dirs: Dirs) -> None:
    dirs.config.mkdir(parents=True)
    dirs.contexts_file.write_text("current = [")
    with pytest.raises(UsageError, match="invalid TOML"):
        load_contexts(dirs.contexts_file)


def test_local_settings_precedence(dirs: Dirs, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('host = "0.0.0.0"\nport = 9001\nmaster_key = "from-file"\n')
    from_file = local_settings(config, {}, {}, dirs)
    assert (from_file.url, from_file.master_key) == ("http://127.0.0.1:9001", "from-file")
    env = {"OTARI_PORT": "9002", "OTARI_MASTER_KEY": "from-env"}
    from_env = local_settings(config, {}, env, dirs)
    assert (from_env.port, from_env.master_key) == (9002, "from-env")
    flags = local_settings(config, {"port": 9003, "master_key": "from-flag"}, env, dirs)
    assert (flags.port, flags.master_key) == (9003, "from-flag")


def test_local_master_key_falls_back_to_the_generated_file(dirs: Dirs) -> None:
    assert local_settings(None, {}, {}, dirs).master_key is None
    dirs.state.mkdir(parents=True)
    dirs.master_key_file.write_text("sk-generated\n")
    found = local_settings(None, {}, {}, dirs)
    assert found.master_key == "sk-generated"
    assert found.url == "http://127.0.0.1:8000"


def test_config_file_master_key_interpolates_env(dirs: Dirs, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('master_key = "${MY_KEY}"\n')
    assert local_settings(config, {}, {"MY_KEY": "sk-x"}, dirs).master_key == "sk-x"
    with pytest.raises(UsageError, match="MY_KEY"):
        local_settings(config, {}, {}, dirs)


def test_config_file_path_order(dirs: Dirs, tmp_path: Path) -> None:
    explicit = tmp_path / "x.toml"
    assert config_file_path(explicit, {"OTARI_CONFIG": "/e.toml"}, dirs) == explicit
    assert config_file_path(None, {"OTARI_CONFIG": "/e.toml"}, dirs) == Path("/e.toml")
    assert config_file_path(None, {}, dirs) is None
    write_private(dirs.config_file, "")
    assert config_file_path(None, {}, dirs) == dirs.config_file


def test_local_url_for_wildcards_and_ipv6() -> None:
    assert local_url("0.0.0.0", 80) == "http://127.0.0.1:80"
    assert local_url("::", 80) == "http://[::1]:80"
    assert local_url("example.internal", 81) == "http://example.internal:81"


def test_loopback_detection() -> None:
    assert is_loopback("http://127.0.0.1:8000")
    assert is_loopback("http://localhost")
    assert is_loopback("http://[::1]:9")
    assert not is_loopback("https://gw.example.com")
    assert not is_loopback("http://10.1.2.3")


def resolve(
    chosen: Selection,
    contexts: Contexts = Contexts(),
    daemon_url: str | None = None,
    env: dict[str, str] | None = None,
) -> tuple[str, str | None, str]:
    target = resolve_target(chosen, contexts, lambda: LOCAL, daemon_url, env or {})
    return target.url, target.master_key, target.url_source


PROD = Contexts(
    current="prod",
    entries={
        "prod": Context("prod", "https://prod.example.com/", key_env="PROD_KEY"),
        "lab": Context("lab", "https://lab.example.com", key="sk-lab"),
    },
)


def test_default_is_the_local_daemon() -> None:
    assert resolve(Selection()) == ("http://127.0.0.1:8000", "local-key", "default")


def test_running_daemon_url_wins_over_the_default() -> None:
    url, key, source = resolve(Selection(), daemon_url="http://127.0.0.1:9999")
    assert (url, key) == ("http://127.0.0.1:9999", "local-key")
    assert "pidfile" in source


def test_current_context_is_used_with_its_env_key() -> None:
    url, key, source = resolve(Selection(), PROD, env={"PROD_KEY": "sk-prod"})
    assert (url, key, source) == ("https://prod.example.com", "sk-prod", "context prod")


def test_context_flag_overrides_current_and_stored_key_is_used() -> None:
    assert resolve(Selection(context="lab"), PROD)[:2] == ("https://lab.example.com", "sk-lab")


def test_local_pseudo_context_means_the_daemon() -> None:
    assert resolve(Selection(context="local"), PROD)[0] == "http://127.0.0.1:8000"


def test_context_env_key_missing_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"\$PROD_KEY"):
        resolve(Selection(), PROD)


def test_unknown_context_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="no context named 'nope'"):
        resolve(Selection(context="nope"), PROD)


def test_url_and_key_flags_override_everything() -> None:
    chosen = Selection(url="https://other.example.com", master_key="sk-flag", context="lab")
    assert resolve(chosen, PROD)[:2] == ("https://other.example.com", "sk-flag")
    assert resolve(Selection(master_key="sk-flag"), PROD)[1] == "sk-flag"


def test_local_key_is_never_sent_to_a_remote_url() -> None:
    assert resolve(Selection(url="https://remote.example.com"))[1] is None
    # Another port on loopback may be a tunnel to another gateway: not the local key either.
    assert resolve(Selection(url="http://127.0.0.1:8123"))[1] is None
    assert resolve(Selection(url="http://localhost:8000/"))[1] == "local-key"
    assert (
        resolve(Selection(url="http://127.0.0.1:9999"), daemon_url="http://127.0.0.1:9999")[1]
        == "local-key"
    )


def test_a_context_key_goes_only_to_its_context_url() -> None:
    chosen = Selection(url="https://elsewhere.example.com", context="lab")
    assert resolve(chosen, PROD)[:2] == ("https://elsewhere.example.com", None)


def test_selection_reads_env_when_no_flags() -> None:
    env = {"OTARI_URL": "http://e:1", "OTARI_MASTER_KEY": "k", "OTARI_CONTEXT": "c"}
    assert Selection.from_flags(None, None, None, env) == Selection("http://e:1", "k", "c")
    assert Selection.from_flags("http://f:1", None, None, env).url == "http://f:1"


def test_an_sdk_style_base_url_means_the_gateway() -> None:
    assert resolve(Selection(url="https://gw.example.com/v1/"))[0] == "https://gw.example.com"
    assert resolve(Selection(url="https://gw.example.com/api/v1"))[0] == "https://gw.example.com"
    assert resolve(Selection(url="https://h.example.com/otari"))[0] == "https://h.example.com/otari"


def test_bad_url_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="invalid gateway URL"):
        resolve(Selection(url="gw.example.com"))


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999", "http://127.0.0.1:abc"])
def test_bad_port_in_url_is_a_usage_error(url: str) -> None:
    # Was an "unexpected ValueError" with exit 1 (the code of an API refusal).
    with pytest.raises(UsageError, match="invalid gateway URL"):
        resolve(Selection(url=url))

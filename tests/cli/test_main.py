"""The root app in-process (CliRunner) against a scripted gateway: options, exit codes, output."""

from __future__ import annotations

import json
import stat
import tomllib
from decimal import Decimal
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from otari_cli.config import Dirs
from otari_cli.errors import ExitCode
from otari_cli.main import app, hoist
from otari_cli.params import money
from tests.cli.conftest import free_port
from tests.cli.fakes import Script

runner = CliRunner()
KEY: dict[str, object] = {
    "id": "k1",
    "key_name": "ci",
    "user_id": None,
    "created_at": "2025-01-01T00:00:00",
    "last_used_at": None,
    "expires_at": None,
    "is_active": True,
    "metadata": {},
}


def otari(
    url: str, *args: str, key: str = "sk-master", stdin: str | None = None
) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--url", url, "--master-key", key, *args], input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_hoist_moves_output_options_to_the_front() -> None:
    assert hoist(["keys", "list", "-o", "json", "-q"]) == ["-o", "json", "-q", "keys", "list"]
    assert hoist(["keys", "list", "--output=csv"]) == ["--output=csv", "keys", "list"]
    assert hoist(["keys", "create", "--name", "x", "--", "-q"]) == [
        "keys",
        "create",
        "--name",
        "x",
        "--",
        "-q",
    ]
    own = frozenset({"--url"})
    assert hoist(["context", "add", "p", "--url", "u"], own) == [
        "context",
        "add",
        "p",
        "--url",
        "u",
    ]


def test_help_documents_the_exit_codes() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for line in (
        "0  ok",
        "1  the API refused",
        "2  bad usage",
        "3  gateway unreachable",
        "4  authentication failed",
        "5  server error",
    ):
        assert line in result.stdout


def test_list_is_json_when_piped_with_api_field_names(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answer("GET", "/v1/keys", 200, [KEY])
    code, out, err = otari(url, "keys", "list")
    assert (code, err) == (0, "")
    assert json.loads(out) == [KEY]
    assert script.seen[0].headers["Authorization"] == "Bearer sk-master"


def test_list_is_the_default_verb(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answer("GET", "/v1/keys", 200, [KEY])
    code, out, _ = otari(url, "keys", "-q")
    assert (code, out) == (0, "k1\n")


def test_output_options_work_after_the_subcommand(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answer("GET", "/v1/keys", 200, [KEY])
    code, out, _ = otari(url, "keys", "list", "-o", "table")
    assert code == 0
    assert "NAME" in out and "ci" in out and not out.lstrip().startswith("[")
    code, out, _ = otari(url, "keys", "list", "-o", "csv")
    assert out.splitlines()[0].startswith("id,key_name")


@pytest.mark.parametrize(
    ("status", "body", "code", "message"),
    [
        (401, {"detail": "Invalid or missing credential"}, ExitCode.AUTH, "HTTP 401"),
        (403, {"detail": "Master key required"}, ExitCode.AUTH, "Master key required"),
        (404, {"detail": "Key not found"}, ExitCode.REFUSED, "HTTP 404: Key not found"),
        (
            422,
            {"detail": [{"loc": ["path", "key_id"], "msg": "bad"}]},
            ExitCode.REFUSED,
            "key_id: bad",
        ),
        (500, {"detail": "boom"}, ExitCode.SERVER, "HTTP 500: boom"),
    ],
)
def test_http_errors_map_to_exit_codes(
    fake: tuple[str, Script], status: int, body: object, code: int, message: str
) -> None:
    url, script = fake
    script.answer("GET", "/v1/keys/k1", status, body)
    exit_code, out, err = otari(url, "keys", "get", "k1")
    assert exit_code == code
    assert out == ""
    assert message in err and err.startswith("error: ")
    assert "Traceback" not in err


def test_unreachable_gateway_exits_3() -> None:
    code, _out, err = otari(f"http://127.0.0.1:{free_port()}", "users", "list")
    assert code == ExitCode.UNREACHABLE
    assert "cannot reach the gateway" in err and "Traceback" not in err


def test_debug_shows_a_traceback() -> None:
    result = runner.invoke(app, ["--debug", "--url", f"http://127.0.0.1:{free_port()}", "health"])
    assert result.exit_code == ExitCode.UNREACHABLE
    assert "Traceback" in result.stderr


def test_server_text_is_not_interpreted_as_markup(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answer("GET", "/v1/keys/k1", 404, {"detail": "no [bold]such[/bold] key"})
    _, _, err = otari(url, "keys", "get", "k1")
    assert "no [bold]such[/bold] key" in err


def test_bad_usage_exits_2_before_any_request(fake: tuple[str, Script]) -> None:
    url, script = fake
    for args in (
        ["keys", "create", "--expires", "soon"],
        ["budgets", "create", "--max", "lots"],
        ["budgets", "create", "--period", "0d"],
        ["keys", "update", "k1"],
        ["keys", "create", "--metadata", "novalue"],
        ["nosuchcommand"],
    ):
        code, _, err = otari(url, *args)
        assert code == ExitCode.USAGE, args
        assert "Traceback" not in err
    assert script.seen == []


def test_destructive_command_without_a_terminal_needs_yes(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answer("DELETE", "/v1/keys/k1", 204, "")
    code, _, err = otari(url, "keys", "revoke", "k1")
    assert code == ExitCode.USAGE and "--yes" in err
    assert script.seen == []
    code, out, _ = otari(url, "keys", "revoke", "k1", "--yes")
    assert code == 0
    assert json.loads(out) == [{"id": "k1", "status": "revoked"}]
    assert [(s.method, s.path) for s in script.seen] == [("DELETE", "/v1/keys/k1")]


def test_budget_money_and_period_are_sent_exactly(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answer(
        "POST",
        "/v1/budgets",
        200,
        '{"budget_id": "b1", "max_budget": 25.00, '
        '"budget_duration_sec": 2592000, "created_at": "x", "updated_at": "x"}',
    )
    code, out, _ = otari(url, "budgets", "create", "--max", "25.00", "--period", "30d")
    assert code == 0
    assert json.loads(script.seen[0].body, parse_float=Decimal) == {
        "max_budget": Decimal("25.00"),
        "budget_duration_sec": 2592000,
    }
    assert '"max_budget":25.00' in script.seen[0].body
    assert '"max_budget": 25.00' in out


def test_key_create_sends_expiry_and_metadata(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answer("POST", "/v1/keys", 200, {**KEY, "key": "gw-secret"})
    script.answer("GET", "/v1/users/u1", 200, {"user_id": "u1"})  # --user: an id, not an alias
    code, out, _ = otari(
        url,
        "keys",
        "create",
        "--name",
        "ci",
        "--user",
        "u1",
        "--expires",
        "2030-01-02",
        "-m",
        "team=ml",
        "-m",
        "env=prod",
    )
    assert code == 0 and json.loads(out)["key"] == "gw-secret"
    assert [(s.method, s.path) for s in script.seen] == [
        ("GET", "/v1/users/u1"),
        ("POST", "/v1/keys"),
    ]
    body = json.loads(script.seen[1].body)
    assert body == {
        "key_name": "ci",
        "user_id": "u1",
        "expires_at": "2030-01-02T00:00:00+00:00",
        "metadata": {"team": "ml", "env": "prod"},
    }


def test_usage_filters_and_paging(fake: tuple[str, Script]) -> None:
    url, script = fake
    rows = [{"id": f"u{i}"} for i in range(2500)]

    def page(query: dict[str, list[str]]) -> object:
        skip, limit = int(query["skip"][0]), int(query["limit"][0])
        return rows[skip : skip + limit]

    script.answer_with("GET", "/v1/usage", page)
    code, out, _ = otari(
        url,
        "usage",
        "--user",
        "alice",
        "--since",
        "2025-01-01",
        "--until",
        "2025-02-01T12:00:00Z",
        "--limit",
        "5",
    )
    assert code == 0 and len(json.loads(out)) == 5
    assert next(s for s in script.seen if s.path == "/v1/usage").query == {
        "user_id": ["alice"],
        "start_date": ["2025-01-01T00:00:00+00:00"],
        "end_date": ["2025-02-01T12:00:00+00:00"],
        "skip": ["0"],
        "limit": ["6"],  # one past the limit: tells whether the listing stopped early
    }
    # It stopped early, so it asked how many match (this fake gateway does not say).
    assert [s for s in script.seen if s.path == "/v1/usage"][1].query["include_total"] == ["true"]
    code, out, _ = otari(url, "usage", "--all", "-q")
    assert out.split() == [r["id"] for r in rows]
    listed = [s for s in script.seen if s.path == "/v1/usage"]
    assert [s.query["skip"][0] for s in listed[2:]] == ["0", "1000", "2000"]


def test_model_keys_are_url_encoded(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answer("GET", "/v1/pricing/openrouter%3Ameta%2Fllama/history", 200, [])
    code, out, _ = otari(url, "pricing", "history", "openrouter:meta/llama")
    assert (code, json.loads(out)) == (0, [])


def test_health_not_ready_exits_5(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answer("GET", "/health", 200, {"status": "healthy", "version": "0.1.0"})
    script.answer("GET", "/health/readiness", 503, {"status": "not ready"})
    code, out, err = otari(url, "health")
    assert code == ExitCode.SERVER
    assert json.loads(out)["ready"] is False and "not ready" in err
    script.answer("GET", "/health/readiness", 200, {"status": "ready"})
    code, out, _ = otari(url, "health")
    assert code == 0 and json.loads(out) == {"status": "healthy", "version": "0.1.0", "ready": True}


def test_init_writes_a_private_config_and_refuses_to_overwrite(dirs: Dirs) -> None:
    result = runner.invoke(app, ["init", "--port", "8123"])
    assert result.exit_code == 0, result.stderr
    settings = tomllib.loads(dirs.config_file.read_text())
    assert settings["port"] == 8123 and settings["master_key"].startswith("sk-otari-")
    assert stat.S_IMODE(dirs.config_file.stat().st_mode) == 0o600
    assert settings["master_key"] not in result.output
    assert str(dirs.config_file) in result.stdout and "otari start" in result.stderr
    again = runner.invoke(app, ["init"])
    assert again.exit_code == ExitCode.USAGE and "--force" in again.stderr
    assert tomllib.loads(dirs.config_file.read_text()) == settings
    forced = runner.invoke(app, ["init", "--force"])
    assert forced.exit_code == 0
    assert tomllib.loads(dirs.config_file.read_text())["master_key"] != settings["master_key"]


def test_init_reuses_the_master_key_serve_generated(dirs: Dirs) -> None:
    from otari_server.runtime import resolve_master_key
    from otari_server.settings import load

    generated = resolve_master_key(load())  # what `otari serve` does with no config
    assert dirs.master_key_file.read_text().strip() == generated
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 0, result.stderr
    assert tomllib.loads(dirs.config_file.read_text())["master_key"] == generated
    assert "generated earlier" in result.stderr and generated not in result.output


def test_contexts_add_use_list_show_remove(fake: tuple[str, Script], dirs: Dirs) -> None:
    url, script = fake
    script.answer("GET", "/v1/users", 200, [])
    add = runner.invoke(app, ["context", "add", "prod", "--url", url, "--key-env", "PROD_KEY"])
    assert add.exit_code == 0, add.stderr
    stored = runner.invoke(
        app,
        ["context", "add", "lab", "--url", "https://lab.example.com", "--key-stdin"],
        input="sk-lab-secret\n",
    )
    assert stored.exit_code == 0
    assert stat.S_IMODE(dirs.contexts_file.stat().st_mode) == 0o600
    assert runner.invoke(app, ["context", "use", "prod"]).exit_code == 0

    listed = runner.invoke(app, ["context", "list"])
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["prod"]["current"] and not rows["local"]["current"]
    assert rows["lab"]["master_key"] == "stored" and "sk-lab-secret" not in listed.output

    missing = runner.invoke(app, ["users", "list"])
    assert missing.exit_code == ExitCode.USAGE and "$PROD_KEY" in missing.stderr
    used = runner.invoke(app, ["users", "list"], env={"PROD_KEY": "sk-prod"})
    assert used.exit_code == 0, used.stderr
    assert script.seen[-1].headers["Authorization"] == "Bearer sk-prod"

    shown = json.loads(runner.invoke(app, ["context", "show"], env={"PROD_KEY": "x"}).stdout)
    assert shown == {
        "context": "prod",
        "url": url,
        "url_source": "context prod",
        "master_key": "set",
        "master_key_source": "context prod (env $PROD_KEY)",
    }
    local = json.loads(runner.invoke(app, ["--context", "local", "context", "show"]).stdout)
    assert local["url"] == "http://127.0.0.1:8000"

    assert runner.invoke(app, ["context", "remove", "prod"]).exit_code == 0
    assert runner.invoke(app, ["context", "use", "prod"]).exit_code == ExitCode.USAGE
    assert "prod" not in dirs.contexts_file.read_text()


def test_status_when_not_running_exits_3_and_cleans_a_stale_pidfile(dirs: Dirs) -> None:
    dirs.state.mkdir(parents=True)
    dirs.pidfile.write_text('{"pid": 1, "url": "http://127.0.0.1:1", "started": "0"}')
    result = runner.invoke(app, ["status"])
    assert result.exit_code == ExitCode.UNREACHABLE
    assert json.loads(result.stdout)["running"] is False
    assert "stale" in result.stderr
    assert not dirs.pidfile.exists()
    stop = runner.invoke(app, ["stop"])
    assert stop.exit_code == 0 and "not running" in stop.stderr


def test_logs_prints_the_last_lines(dirs: Dirs) -> None:
    dirs.log.mkdir(parents=True)
    dirs.logfile.write_text("".join(f"line {i}\n" for i in range(100)))
    result = runner.invoke(app, ["logs", "-n", "3"])
    assert (result.exit_code, result.stdout) == (0, "line 97\nline 98\nline 99\n")


def test_serve_rejects_a_bad_log_level_without_importing_the_server(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", "--log-level", "loud"])
    assert result.exit_code == ExitCode.USAGE


def test_global_options_work_after_the_subcommand(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answer("GET", "/v1/keys", 200, [KEY])
    result = runner.invoke(
        app, ["keys", "list", "--url", url, "--master-key", "sk-late", "--timeout", "5"]
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == [KEY]
    assert script.seen[0].headers["Authorization"] == "Bearer sk-late"
    assert hoist(["keys", "list", "--context", "prod"]) == ["--context", "prod", "keys", "list"]


def test_a_subcommand_keeps_its_own_option_of_a_global_name() -> None:
    from otari_cli.main import own_options

    group = typer.main.get_group(app)
    with group.make_context("otari", ["context", "add", "p", "--url", "u"]) as ctx:
        own = own_options(group, ctx, ["context", "add", "p", "--url", "u"])
    assert "--url" in own
    assert hoist(["context", "add", "p", "--url", "u"], own) == [
        "context",
        "add",
        "p",
        "--url",
        "u",
    ]


def test_keys_create_quiet_prints_the_secret(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answer("POST", "/v1/keys", 200, {**KEY, "key": "gw-secret-once"})
    code, out, _ = otari(url, "keys", "create", "--name", "ci", "-q")
    assert (code, out) == (0, "gw-secret-once\n")


def test_keys_delete_is_revoke(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answer("DELETE", "/v1/keys/k1", 204, "")
    code, out, _ = otari(url, "keys", "delete", "k1", "--yes", "-q")
    assert (code, out) == (0, "k1\n")
    assert [(s.method, s.path) for s in script.seen] == [("DELETE", "/v1/keys/k1")]


def test_without_a_key_for_a_remote_url_the_message_says_which_key_to_give(
    fake: tuple[str, Script],
) -> None:
    url, script = fake
    script.answer("GET", "/v1/keys", 200, [])
    # The fake listens on loopback but is not the local gateway: no local key goes there,
    # and a management request is not sent at all without a key (it would answer 200 here).
    for args in (
        ["--url", url, "keys", "list"],
        ["keys", "list", "--url", url + "/v1"],
        ["--url", url, "usage", "summary"],
        ["--url", url, "providers", "list"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == ExitCode.AUTH, (args, result.stderr)
        assert "--master-key" in result.stderr and "OTARI_MASTER_KEY" in result.stderr
    assert script.seen == []


@pytest.mark.parametrize("verb", ["create", "update"])
def test_pricing_create_and_update_point_to_set(fake: tuple[str, Script], verb: str) -> None:
    url, script = fake
    code, out, err = otari(url, "pricing", verb, "openai:gpt-4o", "--input-price", "1")
    assert code == ExitCode.USAGE and out == ""
    assert "otari pricing set MODEL --input-price X --output-price Y" in err
    assert script.seen == []


def test_version_and_bare_otari_prints_help() -> None:
    from importlib.metadata import version

    shown = runner.invoke(app, ["--version"])
    assert (shown.exit_code, shown.stdout) == (0, f"otari {version('otari-gateway')}\n")
    bare = runner.invoke(app, [])
    assert bare.exit_code == 0
    assert "Usage: otari" in bare.stdout and "keys" in bare.stdout


def test_money_finer_than_ten_places_is_a_usage_error() -> None:
    assert money("0.0000000001") == Decimal("0.0000000001")
    assert money("1.50000000000") == Decimal("1.5")
    with pytest.raises(typer.BadParameter, match="more than 10 decimal places"):
        money("0.00000000001")


def test_usage_says_when_it_stopped_early_and_filters_by_model_and_key(
    fake: tuple[str, Script],
) -> None:
    url, script = fake
    rows = [{"id": f"u{i}", "cost": "0.1"} for i in range(3)]
    script.answer("GET", "/v1/usage", 200, rows)
    code, out, err = otari(url, "usage", "--limit", "2", "--model", "openai:gpt-4o", "--key", "k1")
    assert code == 0
    assert [row["id"] for row in json.loads(out)] == ["u0", "u1"]
    assert "showing the newest 2 rows; more match (use --all, or --limit N)" in err
    query = next(seen.query for seen in script.seen if seen.path == "/v1/usage")
    assert query["model"] == ["openai:gpt-4o"] and query["api_key_id"] == ["k1"]
    assert query["limit"] == ["3"]
    script.answer("GET", "/v1/usage", 200, rows[:2])
    code, out, err = otari(url, "usage", "--limit", "2")
    assert code == 0 and "showing" not in err


def test_usage_for_an_unknown_user_says_so(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answer("GET", "/v1/usage", 200, [])
    script.answer("GET", "/v1/users/nobody", 404, {"detail": "User 'nobody' not found"})
    code, out, err = otari(url, "usage", "--user", "nobody")
    assert (code, json.loads(out)) == (0, [])
    assert "no user named 'nobody'" in err
    script.answer("GET", "/v1/users/alice", 200, {"user_id": "alice"})
    code, out, err = otari(url, "usage", "--user", "alice")
    assert code == 0 and "no user named" not in err


def test_usage_filters_accept_a_users_alias_and_a_keys_name(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answer("GET", "/v1/usage", 200, [])
    script.answer(
        "GET",
        "/v1/users",
        200,
        [{"user_id": "u-1", "alias": "Alice"}, {"user_id": "u-2", "alias": "Bob"}],
    )
    script.answer("GET", "/v1/keys", 200, [{"id": "k-9", "key_name": "laptop"}])
    script.answer("GET", "/v1/users/u-1", 200, {"user_id": "u-1", "alias": "Alice"})
    script.answer("GET", "/v1/keys/k-9", 200, {"id": "k-9", "key_name": "laptop"})
    code, _, err = otari(url, "usage", "--user", "Alice", "--key", "laptop")
    assert code == 0 and "no user named" not in err
    query = next(seen.query for seen in script.seen if seen.path == "/v1/usage")
    assert query["user_id"] == ["u-1"] and query["api_key_id"] == ["k-9"]
    # An id is used as it is: no listing is read.
    script.seen.clear()
    script.answer("GET", "/v1/users/u-2", 200, {"user_id": "u-2"})
    code, _, err = otari(url, "usage", "--user", "u-2")
    assert code == 0
    assert [seen.path for seen in script.seen] == ["/v1/users/u-2", "/v1/usage"]


def test_usage_summary_since_a_duration_counts_whole_days(fake: tuple[str, Script]) -> None:
    from datetime import UTC, datetime, timedelta

    url, script = fake
    script.answer(
        "GET",
        "/v1/usage/summary",
        200,
        {
            "groups": [],
            "total": {
                "requests": 0,
                "errors": 0,
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "cost": 0,
            },
        },
    )
    assert otari(url, "usage", "summary", "--since", "7d")[0] == 0
    start = datetime.fromisoformat(script.seen[0].query["start_date"][0])
    week_ago = datetime.now(UTC) - timedelta(days=7)
    assert start == datetime(week_ago.year, week_ago.month, week_ago.day, tzinfo=UTC)
    assert otari(url, "usage", "summary", "--since", "2026-03-01T06:00:00Z")[0] == 0
    assert script.seen[1].query["start_date"] == ["2026-03-01T06:00:00+00:00"]
    code, _, err = otari(url, "usage", "summary", "--since", "soon")
    assert code == ExitCode.USAGE and "invalid time" in err


def test_usage_all_and_limit_together_are_refused(fake: tuple[str, Script]) -> None:
    url, script = fake
    code, out, err = otari(url, "usage", "--all", "--limit", "5", "-o", "json")
    assert code == ExitCode.USAGE and out == "" and "--all and --limit" in err
    assert script.seen == []

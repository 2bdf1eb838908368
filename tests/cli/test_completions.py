"""The committed completion scripts match what the installed `otari` generates, and work."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.cli.fakes import Script

ROOT = Path(__file__).resolve().parents[2]


def test_completion_scripts_are_up_to_date() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "completions" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("otari.bash", "_otari", "otari.fish"):
        assert "_OTARI_COMPLETE" in (ROOT / "completions" / name).read_text()


def test_bash_script_is_valid_and_completes_commands() -> None:
    bash = shutil.which("bash")
    assert bash is not None
    check = subprocess.run([bash, "-n", str(ROOT / "completions" / "otari.bash")], timeout=30)
    assert check.returncode == 0
    exe = shutil.which("otari")
    assert exe is not None
    env = {
        **os.environ,
        "_OTARI_COMPLETE": "complete_bash",
        "COMP_WORDS": "otari keys re",
        "COMP_CWORD": "2",
    }
    done = subprocess.run([exe], env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["revoke"]


def test_completion_offers_key_ids_user_ids_and_context_names(
    fake: tuple[str, Script], tmp_path: Path
) -> None:
    from otari_cli.config import Context, Contexts, save_contexts
    from tests.cli.conftest import Executable

    url, script = fake
    script.answer("GET", "/v1/keys", 200, [{"id": "k-alpha"}, {"id": "k-beta"}, {"id": "x-1"}])
    script.answer("GET", "/v1/users", 200, [{"user_id": "alice"}, {"user_id": "bob"}])
    script.answer("GET", "/v1/budgets", 200, [{"budget_id": "b-team"}, {"budget_id": "c-ops"}])
    cli = Executable(tmp_path)
    save_contexts(
        cli.dirs.contexts_file, Contexts(entries={"prod": Context("prod", "https://p.example.com")})
    )

    def complete(*words: str) -> list[str]:
        line = ["otari", "--url", url, "--master-key", "sk-m", *words]
        env = {
            "_OTARI_COMPLETE": "complete_bash",
            "COMP_WORDS": " ".join(line),
            "COMP_CWORD": str(len(line) - 1),
        }
        done = cli(env=env)
        return done.out.split()

    assert complete("keys", "get", "k-") == ["k-alpha", "k-beta"]
    assert complete("users", "delete", "") == ["alice", "bob"]
    assert complete("context", "use", "pr") == ["prod"]
    assert complete("budgets", "get", "b") == ["b-team"]
    assert complete("users", "update", "alice", "--budget", "") == ["b-team", "c-ops"]
    assert complete("keys", "create", "--user", "b") == ["bob"]
    assert complete("usage", "--user", "a") == ["alice"]
    assert complete("usage", "--key", "k-") == ["k-alpha", "k-beta"]
    assert complete("usage", "summary", "--user", "") == ["alice", "bob"]
    assert complete("--context", "p") == ["prod"]
    assert script.seen[0].headers["Authorization"] == "Bearer sk-m"

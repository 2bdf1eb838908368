"""The committed completion scripts match what the installed `otari` generates, and work."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

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

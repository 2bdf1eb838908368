"""Regenerate the shell completion scripts for `otari` (or, with --check, verify them).

    python completions/generate.py           # rewrite otari.bash, _otari (zsh), otari.fish
    python completions/generate.py --check   # exit 1 if any file is out of date

The scripts ask the installed `otari` for candidates at completion time (Typer's
_OTARI_COMPLETE protocol), so they only change when the protocol or program name does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILES = {"bash": "otari.bash", "zsh": "_otari", "fish": "otari.fish"}


def script(shell: str) -> str:
    """The completion script Typer emits for `shell`."""
    exe = shutil.which("otari")
    if exe is None:
        raise SystemExit("the otari console script is not installed (pip install -e .)")
    env = {**os.environ, "_OTARI_COMPLETE": f"source_{shell}"}
    done = subprocess.run([exe], env=env, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip() + "\n"


def main(argv: list[str]) -> int:
    """Write the scripts, or report the stale ones with --check."""
    check = "--check" in argv
    stale = []
    for shell, name in FILES.items():
        path = HERE / name
        text = script(shell)
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        if check:
            stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run: python completions/generate.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

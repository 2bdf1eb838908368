"""The serving process of `otari serve`: `python -P -m otari_server serve JSON`.

`otari serve` parses its options with the CLI (Typer), then replaces itself with this entry
point (same pid, same signals and exit codes), so that the long-running daemon never holds
the CLI's libraries (Typer, Click's command tree, Rich, httpx, the CLI modules) in memory.

JSON is `{"config": path | null, "overrides": {setting: value}, "debug": bool}`; a
`--master-key` given on the command line travels in the `_OTARI_SERVE_MASTER_KEY`
environment variable instead (command lines are readable by every user), removed here at
once. Errors are reported as the CLI reports them: `error: invalid configuration: ...` with
exit status 2, any other start-up error as `error: unexpected ...` with exit status 1.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

MASTER_KEY_VARIABLE = "_OTARI_SERVE_MASTER_KEY"


def _error(text: str) -> None:
    line = f"error: {text}"
    if sys.stderr.isatty():  # what the CLI's Rich console prints: bold red
        line = f"\x1b[1;31m{line}\x1b[0m"
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def main(argv: list[str]) -> int:
    """Serve with the options in argv[1] (see the module docstring); the exit status."""
    if len(argv) != 2 or argv[0] != "serve":
        sys.stderr.write("usage: python -m otari_server serve JSON (use `otari serve`)\n")
        return 2
    request = json.loads(argv[1])
    overrides = dict(request.get("overrides") or {})
    master_key = os.environ.pop(MASTER_KEY_VARIABLE, None)
    if master_key is not None:
        overrides["master_key"] = master_key
    config = Path(request["config"]) if request.get("config") else None
    try:
        from otari_server.daemon import run
        from otari_server.settings import ConfigError

        try:
            run(config, overrides)
        except ConfigError as exc:
            _error(f"invalid configuration: {exc}")
            return 2
    except (EOFError, KeyboardInterrupt):  # as Click reports an interrupt before serving
        sys.stderr.write("\nAborted!\n")
        return 1
    except Exception as exc:  # the CLI's rendering of an unexpected error
        if request.get("debug"):
            sys.stderr.write("".join(traceback.format_exception(exc)))
        _error(f"unexpected {type(exc).__name__}: {exc} (run with --debug for details)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

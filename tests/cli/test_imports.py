"""Fast start and layering: management commands never load the server's heavy dependencies."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.cli.fakes import Script

HEAVY = ("fastapi", "sqlalchemy", "uvicorn", "starlette", "alembic", "otari_server")
CLI = Path(__file__).resolve().parents[2] / "otari_cli"

PROBE = """
import json, sys
args, heavy_roots = json.loads(sys.argv[1]), json.loads(sys.argv[2])
sys.argv = ["otari", *args]
from otari_cli.main import main
try:
    main()
except SystemExit as exit:
    code = exit.code
heavy = sorted(m for m in sys.modules if m.split(".")[0] in heavy_roots)
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


def loaded(args: list[str], env: dict[str, str] | None = None) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    report: dict[str, object] = json.loads(done.stderr.strip().splitlines()[-1])
    return report


def test_help_loads_no_server_modules() -> None:
    assert loaded(["--help"]) == {"code": 0, "heavy": []}


def test_keys_list_loads_no_server_modules(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answer("GET", "/v1/keys", 200, [])
    report = loaded(["--url", url, "--master-key", "k", "keys", "list", "-o", "json"])
    assert report == {"code": 0, "heavy": []}
    assert [s.path for s in script.seen] == ["/v1/keys"]


def test_serve_does_import_the_server_and_reports_config_errors_as_usage() -> None:
    # Also proves the probe sees heavy imports when they happen.
    report = loaded(["serve"], {"OTARI_PORT": "not-a-port"})
    assert report["code"] == 2
    assert "uvicorn" in report["heavy"] and "otari_server" in report["heavy"]  # type: ignore[operator]


def test_only_the_commands_that_run_server_code_import_it() -> None:
    # `serve` runs the daemon; `db backup|migrate` run offline tasks on the local database.
    importers = []
    for path in sorted(CLI.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(n.split(".")[0] in HEAVY for n in names):
                importers.append(f"{path.relative_to(CLI)}:{node.lineno}")
    assert sorted({i.split(":")[0] for i in importers}) == ["commands/db.py",
                                                             "commands/lifecycle.py"]


def test_daemon_module_has_no_typer_or_rich() -> None:
    tree = ast.parse((CLI / "daemon.py").read_text())
    modules = {(n.module or "") for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m.split(".")[0] for m in modules} & {"typer", "rich", "click"}

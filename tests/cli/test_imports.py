"""Fast start and layering: management commands never load the server's heavy dependencies."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.cli.fakes import Script
from tests.support.procs import served
from tests.support.servers import MASTER_KEY

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


def test_serve_reports_config_errors_as_usage() -> None:
    # `otari serve` has become the lean daemon entry by then: it still renders the error as
    # the CLI does, with the usage exit status.
    done = subprocess.run(
        [sys.executable, "-m", "otari_cli", "serve"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OTARI_PORT": "not-a-port"},
    )
    assert (done.returncode, done.stdout, done.stderr) == (
        2,
        "",
        "error: invalid configuration: port: invalid literal for int() with base 10: "
        "'not-a-port' (from environment)\n",
    )


DAEMON_PROBE = """
import json, sys
from otari_server.daemon import main
code = main(["serve", json.dumps({"config": None, "overrides": {}, "debug": False})])
print(json.dumps({"code": code, "roots": sorted({m.split(".")[0] for m in sys.modules})}),
      file=sys.stderr)
"""


def test_the_serving_process_loads_the_server_but_not_the_cli_stack() -> None:
    # The daemon entry imports everything it serves with before reading its settings, so a
    # refused configuration shows the serving process's whole import set.
    done = subprocess.run(
        [sys.executable, "-c", DAEMON_PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OTARI_PORT": "not-a-port"},
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report["code"] == 2
    assert {"uvicorn", "fastapi", "sqlalchemy", "otari_server"} <= set(report["roots"])
    # httpx is loaded only with [alerts]; Rich and Pygments came with httpx's own CLI.
    assert {"typer", "rich", "pygments", "httpx", "otari_cli"} & set(report["roots"]) == set()


def test_serve_becomes_the_daemon_entry_in_the_same_process(tmp_path: Path) -> None:
    with served(
        tmp_path, f"sqlite:///{tmp_path / 'otari.db'}", args=("--master-key", "sk-serve-master")
    ) as gateway:
        assert gateway.proc is not None
        cmdline = Path(f"/proc/{gateway.proc.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[1:5] == [b"-P", b"-m", b"otari_server.daemon", b"serve"]
        assert b"sk-serve-master" not in b" ".join(cmdline)  # a --master-key stays off argv
        answer = httpx.get(
            f"{gateway.url}/v1/keys",
            headers={"Authorization": "Bearer sk-serve-master"},
            timeout=10,
        )
        assert answer.status_code == 200
        config_key = httpx.get(
            f"{gateway.url}/v1/keys",  # the flag overrides the file's
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
            timeout=10,
        )
        assert config_key.status_code == 401
        assert gateway.terminate() == 0


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
    assert sorted({i.split(":")[0] for i in importers}) == [
        "commands/db.py",
        "commands/lifecycle.py",
    ]


def test_daemon_module_has_no_typer_or_rich() -> None:
    tree = ast.parse((CLI / "daemon.py").read_text())
    modules = {(n.module or "") for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m.split(".")[0] for m in modules} & {"typer", "rich", "click"}

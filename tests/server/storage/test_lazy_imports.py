"""A lighter daemon: what serving a migrated database never loads (issue 17, memory)."""

from __future__ import annotations

import json
import subprocess
import sys

from alembic.script import ScriptDirectory
from sqlalchemy import text

from otari_server.storage import db

# Run in a fresh interpreter: the test process has loaded everything already.
PROBE = """
import json, sys
from starlette.testclient import TestClient
from otari_server import settings
from otari_server.app import create_app
from otari_server.runtime import prepare
resolved = settings.load(None, {"database_url": sys.argv[1], "master_key": "sk-probe-master",
                                "bootstrap_api_key": False}, environ={})
prepare(resolved)
with TestClient(create_app(resolved)) as client:
    ready = client.get("/health/readiness").status_code
roots = {name.split(".")[0] for name in sys.modules}
print(json.dumps({"ready": ready, "loaded": sorted(roots & set(json.loads(sys.argv[2])))}))
"""
OPTIONAL = ["alembic", "mako"]


def test_schema_head_read_from_the_files_is_alembics() -> None:
    expected = ScriptDirectory.from_config(db.alembic_config("sqlite://")).get_current_head()
    assert db.schema_head() == expected


def test_a_migrated_database_is_served_without_alembic(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'otari.db'}"
    db.migrate(url)  # here, in the test process: the daemon below finds the schema at head
    done = subprocess.run(
        [sys.executable, "-c", PROBE, url, json.dumps(OPTIONAL)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"ready": 200, "loaded": []}


def test_a_fresh_database_is_still_migrated(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    db.migrate(url)
    engine = db.create_db_engine(url)
    try:
        assert db.ping(engine) == db.schema_head()
    finally:
        engine.dispose()


# The daemon's first start: the schema is brought to the head by a child process.
FIRST_START = """
import json, sys
from otari_server import settings
from otari_server.daemon import MigrationFailed, migrate_apart
resolved = settings.load(None, {"database_url": sys.argv[1], "master_key": "sk-probe-master"},
                         environ={})
try:
    migrate_apart(resolved)
    failed = None
except MigrationFailed as exc:
    failed = str(exc)
roots = {name.split(".")[0] for name in sys.modules}
print(json.dumps({"failed": failed, "loaded": sorted(roots & set(json.loads(sys.argv[2])))}))
"""


def first_start(url: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", FIRST_START, url, json.dumps(OPTIONAL)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def test_a_first_start_migrates_in_a_child_and_never_loads_alembic(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'first.db'}"
    assert first_start(url) == {"failed": None, "loaded": []}
    engine = db.create_db_engine(url)
    try:
        assert db.ping(engine) == db.schema_head()
    finally:
        engine.dispose()


def test_a_failed_first_start_migration_says_why_and_changes_nothing(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'future.db'}"
    engine = db.create_db_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32))"))
            conn.execute(text("INSERT INTO alembic_version VALUES ('9999_from_the_future')"))
        report = first_start(url)
        assert report["loaded"] == []
        assert "9999_from_the_future" in str(report["failed"])
        assert db.ping(engine) == "9999_from_the_future"
    finally:
        engine.dispose()

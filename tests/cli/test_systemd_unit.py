"""The systemd unit shipped in docs/ is valid (checked with systemd-analyze where installed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "docs" / "otari.service"


def test_the_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    otari = shutil.which("otari")
    assert otari is not None
    # The unit names the install location of the docs; point it at this machine's otari.
    unit = tmp_path / "otari.service"
    unit.write_text(UNIT.read_text().replace("/opt/otari/bin/otari", otari))
    done = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    text = UNIT.read_text()
    assert "UMask=0077" in text and "TimeoutStopSec=45" in text

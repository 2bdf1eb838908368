"""`otari keys rotate` against a real gateway: a new secret, the old one kept for --grace."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx

from tests.cli.conftest import InProcess


def _works(url: str, secret: str) -> bool:
    response = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code in (200, 401), response.text
    return response.status_code == 200


def test_rotate_prints_the_new_secret_once_and_honours_grace(inprocess_cli: InProcess) -> None:
    created = inprocess_cli("keys", "create", "--name", "ci")
    assert created.code == 0, created.err
    key = created.json()

    quiet = inprocess_cli("-q", "keys", "rotate", key["id"])
    assert quiet.code == 0, quiet.err
    second = quiet.out.strip()
    assert second.startswith("gw-") and second != key["key"]
    assert not _works(inprocess_cli.url, key["key"]) and _works(inprocess_cli.url, second)

    graced = inprocess_cli("keys", "rotate", key["id"], "--grace", "1h")
    assert graced.code == 0, graced.err
    rotated = graced.json()
    assert (rotated["id"], rotated["key_name"]) == (key["id"], "ci")
    ends = datetime.fromisoformat(rotated["previous_key_expires_at"])
    created_at = datetime.fromisoformat(rotated["created_at"])
    assert timedelta(minutes=59) < ends - created_at < timedelta(minutes=61)
    assert _works(inprocess_cli.url, second) and _works(inprocess_cli.url, rotated["key"])

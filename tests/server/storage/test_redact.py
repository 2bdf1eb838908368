"""Database URLs as the gateway prints them (start-up line, logs): no password anywhere."""

from __future__ import annotations

import pytest

from otari_server.storage.db import redact


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://otari:pw-9f2c@db:5432/otari", "postgresql://otari:***@db:5432/otari"),
        # libpq takes the password from the query too (a DSN copied from a secret store).
        (
            "postgresql:///otari?host=127.0.0.1&password=pw-9f2c&port=1",
            "postgresql:///otari?host=127.0.0.1&password=hidden&port=1",
        ),
        (
            "postgresql+psycopg://u:pw-9f2c@h/d?sslpassword=pw-9f2c&sslmode=require",
            "postgresql+psycopg://u:***@h/d?sslmode=require&sslpassword=hidden",
        ),
        ("postgresql://h/d?PASSWORD=pw-9f2c&auth_token=pw-9f2c", None),
        ("sqlite:////var/lib/otari/otari.db", "sqlite:////var/lib/otari/otari.db"),
    ],
)
def test_passwords_are_hidden_wherever_the_url_carries_them(url: str, shown: str | None) -> None:
    printed = redact(url)
    assert "pw-9f2c" not in printed
    if shown is not None:
        assert printed == shown

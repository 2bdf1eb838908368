"""Server test fixtures: an in-process client on a real database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from otari_server.app import create_app
from tests.support.gateway import gateway_factory_fixture, gateway_fixture
from tests.support.platform_fake import platform_fixture, provider_fixture
from tests.support.servers import make_settings


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    """The app on SQLite and on PostgreSQL (each test runs twice)."""
    with TestClient(create_app(make_settings(database_url))) as test_client:
        yield test_client


@pytest.fixture
def sqlite_client(sqlite_url: str) -> Iterator[TestClient]:
    """The app on a SQLite file only, for behaviour that does not depend on the backend."""
    with TestClient(create_app(make_settings(sqlite_url))) as test_client:
        yield test_client


# End-to-end fixtures (a live gateway before fake providers), shared by the chat tests.
gateway_factory = pytest.fixture(name="gateway_factory")(gateway_factory_fixture)
gateway = pytest.fixture(name="gateway")(gateway_fixture)

# Connected mode: a fake platform, and a fake provider it routes every request to.
platform = pytest.fixture(name="platform")(platform_fixture)
provider = pytest.fixture(name="provider")(provider_fixture)

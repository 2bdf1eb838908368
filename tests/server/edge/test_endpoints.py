"""One list of generation endpoints: the fast path, documented routes and connected mode agree."""

from __future__ import annotations

from pathlib import Path

from otari_server.app import create_app
from otari_server.connected import routes as connected_routes
from otari_server.edge import hotpath
from otari_server.generation.endpoints import CONNECTED, GENERATION, served_paths
from otari_server.settings import load
from tests.support.servers import make_settings

GENERATION_PATHS = {endpoint.path for endpoint in GENERATION}


def posted(spec: dict[str, object]) -> set[str]:
    """The paths /openapi.json documents a POST for."""
    paths = spec["paths"]
    assert isinstance(paths, dict)
    return {path for path, item in paths.items() if "post" in item}


def test_the_fast_path_serves_every_listed_endpoint_bare_and_under_api() -> None:
    assert set(hotpath.ROUTES) == served_paths(GENERATION)
    assert "/api/v1/chat/completions" in hotpath.ROUTES
    assert {endpoint for _, endpoint in hotpath.ROUTES.values()} == set(GENERATION)


# Documented POSTs that are not generation endpoints: management resources, batches (resource
# routes) and the token count utility. Everything else documented must be in GENERATION.
NOT_GENERATION = (
    "/v1/keys",
    "/v1/users",
    "/v1/budgets",
    "/v1/pricing",
    "/v1/usage",
    "/v1/alerts",
    "/v1/routes",
    "/v1/batches",
    "/v1/messages/count_tokens",
)


def test_openapi_documents_exactly_the_listed_generation_endpoints(tmp_path: Path) -> None:
    app = create_app(make_settings(f"sqlite:///{tmp_path / 'otari.db'}"))
    documented = {
        path
        for path in posted(app.openapi())
        if "{" not in path and not path.startswith(NOT_GENERATION)
    }
    assert documented == GENERATION_PATHS


def test_connected_mode_serves_and_documents_its_subset() -> None:
    # Built, not started: nothing here reaches the platform.
    platform = {"token": "gateway-token", "base_url": "http://127.0.0.1:9"}
    app = create_app(load(None, {"platform": platform}, environ={}))
    assert posted(app.openapi()) == {endpoint.path for endpoint in CONNECTED}
    assert served_paths(CONNECTED) == connected_routes.CHAT_PATHS
    assert set(CONNECTED) <= set(GENERATION)

"""/v1/routes: create, list, get, replace, delete and explain routes (master key only).

Routes from the config file are listed too, marked read_only; changing them here is a 409.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Response
from sqlalchemy import select

from otari_server.accounting.prices import TOKENS
from otari_server.deps import ReadSessionDep, RuntimeDep, SessionDep, require_master
from otari_server.errors import Conflict, InvalidRequest, NotFound
from otari_server.jsonio import ExactJSONResponse, ExactRoute
from otari_server.routing.book import from_row
from otari_server.routing.model import Route, RouteError, parse_route
from otari_server.routing.order import explain
from otari_server.routing.schemas import (
    CreateRouteRequest,
    RouteExplanation,
    RouteResponse,
    RouteSpec,
)
from otari_server.routing.survey import survey
from otari_server.runtime import Runtime
from otari_server.storage.tables import RouteDefinition, utcnow

router = APIRouter(
    prefix="/v1/routes",
    tags=["routes"],
    route_class=ExactRoute,
    dependencies=[Depends(require_master)],
)


def _public(route: Route, row: RouteDefinition | None = None) -> dict[str, Any]:
    shown = route.public()
    shown.update(
        created_at=None if row is None else row.created_at,
        updated_at=None if row is None else row.updated_at,
    )
    return shown


def _checked(runtime: Runtime, name: str, spec: RouteSpec) -> Route:
    """The route `spec` defines, or a 400 naming the bad field; 409 for a config route."""
    if name in runtime.routes.config:
        raise Conflict(
            f"Route '{name}' is defined in the config file and is read-only here: "
            "change it there and restart",
            code="route_read_only",
        )
    try:
        route = parse_route(name, spec.table(), "api")
    except RouteError as exc:
        raise InvalidRequest(f"Invalid route: {exc}", param=exc.field) from None
    for index, target in enumerate(route.targets):
        if target.provider not in runtime.providers:
            raise InvalidRequest(
                f"Invalid route: targets[{index}]: unknown provider "
                f"'{target.provider}' in '{target.model}'",
                param=f"targets[{index}]",
            )
    return route


def _store(
    session: SessionDep, runtime: Runtime, route: Route, row: RouteDefinition | None
) -> Response:
    now = utcnow()
    if row is None:
        row = RouteDefinition(name=route.name, created_at=now)
        session.add(row)
    row.strategy = route.strategy
    row.targets = [{"model": t.model, "weight": t.weight} for t in route.targets]
    row.options = route.options()
    row.updated_at = now
    session.commit()
    runtime.routes.load(session)
    return ExactJSONResponse(_public(route, row))


@router.get("", response_model=list[RouteResponse])
def list_routes(session: ReadSessionDep, runtime: RuntimeDep) -> Response:
    """Every route: the config file's (read_only) and the API's, by name."""
    rows = {row.name: row for row in session.scalars(select(RouteDefinition))}
    shown = []
    for name in sorted(set(rows) | set(runtime.routes.config)):
        if name in runtime.routes.config:
            shown.append(_public(runtime.routes.config[name]))
        else:
            try:
                shown.append(_public(from_row(rows[name]), rows[name]))
            except RouteError:
                continue  # logged when the book loads it; nothing usable to show
    return ExactJSONResponse(shown)


@router.post("", response_model=RouteResponse, status_code=201)
def create_route(body: CreateRouteRequest, session: SessionDep, runtime: RuntimeDep) -> Response:
    """Create a route; 409 if the name is taken."""
    route = _checked(runtime, body.name, body)
    if session.get(RouteDefinition, route.name) is not None:
        raise Conflict(
            f"Route '{route.name}' already exists: replace it with PUT /v1/routes/{route.name}",
            code="route_exists",
        )
    response = _store(session, runtime, route, None)
    response.status_code = 201
    return response


@router.get("/{name}", response_model=RouteResponse)
def get_route(name: str, session: ReadSessionDep, runtime: RuntimeDep) -> Response:
    """One route."""
    if name in runtime.routes.config:
        return ExactJSONResponse(_public(runtime.routes.config[name]))
    row = session.get(RouteDefinition, name)
    if row is None:
        raise NotFound(f"Route '{name}' not found", code="route_not_found")
    try:
        return ExactJSONResponse(_public(from_row(row), row))
    except RouteError as exc:
        raise InvalidRequest(f"Stored route '{name}' is not usable: {exc}") from None


@router.put("/{name}", response_model=RouteResponse)
def put_route(name: str, body: RouteSpec, session: SessionDep, runtime: RuntimeDep) -> Response:
    """Create or replace a route (every setting not given takes its default)."""
    route = _checked(runtime, name, body)
    return _store(session, runtime, route, session.get(RouteDefinition, name))


@router.delete("/{name}", status_code=204)
def delete_route(name: str, session: SessionDep, runtime: RuntimeDep) -> Response:
    """Delete a route; 409 for a config-file route."""
    if name in runtime.routes.config:
        raise Conflict(
            f"Route '{name}' is defined in the config file and is read-only here: "
            "remove it there and restart",
            code="route_read_only",
        )
    row = session.get(RouteDefinition, name)
    if row is None:
        raise NotFound(f"Route '{name}' not found", code="route_not_found")
    session.delete(row)
    session.commit()
    runtime.routes.load(session)
    return Response(status_code=204)


@router.get("/{name}/explain", response_model=RouteExplanation)
async def explain_route(name: str, runtime: RuntimeDep) -> Response:
    """The order targets would be tried right now (chat-style token billing), with each
    target's price, cooldown and why it is skipped; nothing is sent."""
    route = runtime.routes.get(name)
    if route is None:
        raise NotFound(f"Route '{name}' not found", code="route_not_found")
    found = await survey(runtime, route, TOKENS, utcnow())
    prices = {
        model: None
        if price is None
        else {
            "input_price_per_million": price.input_per_million,
            "output_price_per_million": price.output_per_million,
            "unit": price.unit,
        }
        for model, price in found.prices.items()
    }
    return ExactJSONResponse(
        explain(route, runtime.cooldowns, time.monotonic(), found.unusable, prices)
    )

"""Models, OpenAI style, built from the pricing entries in effect."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import func, select

from otari_server.api.schemas import ModelListResponse, ModelObject
from otari_server.deps import CallerDep, ReadSessionDep, RuntimeDep, SessionDep
from otari_server.errors import NotFound
from otari_server.jsonio import ExactJSONResponse
from otari_server.providers import ModelAddressError, resolve
from otari_server.runtime import Runtime
from otari_server.storage.tables import Pricing, RouteDefinition, utcnow

# owned_by of a route (a model name the gateway itself serves over several targets).
ROUTE_OWNER = "otari-route"

router = APIRouter(prefix="/v1/models", tags=["models"])


def _model(model_key: str, first_effective: int) -> ModelObject:
    return ModelObject(id=model_key, created=first_effective, owned_by=model_key.partition(":")[0])


def _priced(session: SessionDep, model_key: str | None = None) -> list[ModelObject]:
    statement = (
        select(Pricing.model_key, func.min(Pricing.effective_at))
        .where(Pricing.effective_at <= utcnow())
        .group_by(Pricing.model_key)
        .order_by(Pricing.model_key)
    )
    if model_key is not None:
        statement = statement.where(Pricing.model_key == model_key)
    return [_model(key, int(first.timestamp())) for key, first in session.execute(statement)]


def _routes(
    session: ReadSessionDep, runtime: Runtime, name: str | None = None
) -> list[ModelObject]:
    """Routes as models: created when stored (config routes: when the gateway started)."""
    names = sorted(runtime.routes.routes) if name is None else [name]
    shown = []
    for route_name in names:
        if runtime.routes.get(route_name) is None:
            continue
        row = (
            None
            if route_name in runtime.routes.config
            else session.get(RouteDefinition, route_name)
        )
        created = runtime.started_at if row is None else row.created_at
        shown.append(
            ModelObject(id=route_name, created=int(created.timestamp()), owned_by=ROUTE_OWNER)
        )
    return shown


def _model_key(model_id: str, runtime: Runtime) -> str:
    """The pricing key a model id names, resolved as chat resolves it."""
    try:
        provider, upstream = resolve(model_id, runtime.providers)
    except ModelAddressError:
        return model_id
    return f"{provider.name}:{upstream}"


@router.get("", response_model=ModelListResponse)
def list_models(_caller: CallerDep, session: ReadSessionDep, runtime: RuntimeDep) -> Response:
    """Every model with a price in effect, then every route."""
    return ExactJSONResponse(ModelListResponse(data=_priced(session) + _routes(session, runtime)))


@router.get("/{model_id:path}", response_model=ModelObject)
def get(
    model_id: str, _caller: CallerDep, session: ReadSessionDep, runtime: RuntimeDep
) -> Response:
    """One model, named as chat names it: `provider:model` or `provider/model` (answered
    with its `provider:model` id), or a route by its name."""
    found = _routes(session, runtime, model_id) or _priced(session, model_id)
    if not found and (key := _model_key(model_id, runtime)) != model_id:
        found = _priced(session, key)
    if not found:
        raise NotFound(f"Model '{model_id}' not found", code="model_not_found")
    return ExactJSONResponse(found[0])

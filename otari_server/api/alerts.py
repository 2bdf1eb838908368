"""Budget alerts: send a sample event to the configured webhook (`otari alerts test`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from otari_server.accounting.budget_alerts import sample_event
from otari_server.deps import RuntimeDep, require_master
from otari_server.errors import BadGateway, InvalidRequest
from otari_server.jsonio import ExactJSONResponse, ExactRoute
from otari_server.storage.tables import utcnow

router = APIRouter(
    prefix="/v1/alerts",
    tags=["alerts"],
    route_class=ExactRoute,
    dependencies=[Depends(require_master)],
)


@router.post("/test")
async def send_test(runtime: RuntimeDep) -> Response:
    """POST a sample budget alert (marked `"test": true`), signed like real ones.

    Returns {"delivered": true, "status": <webhook status>}; 400 when no [alerts]
    webhook_url is configured, 502 when the webhook is unreachable or answers non-2xx.
    """
    if runtime.alerts is None:
        raise InvalidRequest(
            "budget alerts are off: set [alerts] webhook_url and "
            "webhook_secret in the gateway's configuration",
            code="alerts_not_configured",
        )
    import httpx  # loaded with [alerts] only (Alerts.start); never on an unconfigured gateway

    try:
        answer = await runtime.alerts.post(sample_event(utcnow()))
    except httpx.HTTPError as exc:
        raise BadGateway(
            f"the alert webhook is unreachable ({type(exc).__name__})", code="alert_webhook_failed"
        ) from None
    if not 200 <= answer.status_code < 300:
        raise BadGateway(
            f"the alert webhook answered {answer.status_code}", code="alert_webhook_failed"
        )
    return ExactJSONResponse({"delivered": True, "status": answer.status_code})

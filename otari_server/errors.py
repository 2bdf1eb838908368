"""The OtariError tree and the one place that renders errors in each API's shape.

Every error the gateway answers on purpose is one class below; its status and its error
types (OpenAI `type`, Anthropic `error.type`) live on the class, and `render` writes the body
in the shape of the API the path belongs to (OpenAI, Anthropic, or management):

    OtariError                      500  server_error            (base; never raised bare)
    ├── InvalidRequest              400  invalid_request_error   well-formed, cannot be done
    ├── AuthenticationFailed        401  authentication_error    no credential / unknown / revoked
    ├── PermissionDenied            403  permission_error        valid credential, not allowed
    ├── NotFound                    404  not_found_error
    ├── Conflict                    409  conflict_error          duplicate, still in use
    ├── Unprocessable               422  invalid_request_error   a value we cannot accept
    ├── BudgetExceeded              402  budget_exceeded         worst case does not fit
    ├── PayloadTooLarge             413  invalid_request_error   body over max_body_bytes
    ├── RateLimited                 429  rate_limit_error        requests/tokens per minute
    ├── UpstreamError         provider's 4xx/5xx, type by status  provider refused the request
    ├── BadGateway                  502  upstream_error          provider failed or answered junk
    │   └── ProviderCredentialRejected    provider refused *our* key (operator's problem)
    ├── ServiceUnavailable          503  service_unavailable     our database is down, shutdown
    └── GatewayTimeout              504  timeout_error           provider too slow

Errors that are not answers (configuration, translation, bad provider numbers) are plain
exceptions near their module (ConfigError, TranslationError, BadCount ...) and are turned into
one of these at the boundary that knows what the client should hear. Anything else reaching
`respond` is our bug: a 500 with the request id, logged with its traceback, never its text.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response

log = logging.getLogger("otari.errors")


class OtariError(Exception):
    """Base of every error we answer on purpose; the class carries status and error type."""

    status = 500
    type = "server_error"
    anthropic_type = "api_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequest(OtariError):
    """The request is well-formed JSON but asks for something we cannot do."""

    status = 400
    type = "invalid_request_error"
    anthropic_type = "invalid_request_error"


class AuthenticationFailed(OtariError):
    """No credential, or one we do not know, or one that is no longer valid."""

    status = 401
    type = "authentication_error"
    anthropic_type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(OtariError):
    """A valid credential that may not do this."""

    status = 403
    type = "permission_error"
    anthropic_type = "permission_error"


class NotFound(OtariError):
    """The named resource does not exist."""

    status = 404
    type = "not_found_error"
    anthropic_type = "not_found_error"


class Conflict(OtariError):
    """The request conflicts with the current state (duplicate id, resource still in use)."""

    status = 409
    type = "conflict_error"
    anthropic_type = "invalid_request_error"


class Unprocessable(OtariError):
    """Well-formed JSON with a value we cannot accept."""

    status = 422
    type = "invalid_request_error"
    anthropic_type = "invalid_request_error"


class BudgetExceeded(OtariError):
    """The worst-case cost of the request does not fit the remaining budget.

    402 rather than 429: SDKs retry 429 automatically, and retrying cannot help here.
    """

    status = 402
    type = "budget_exceeded"
    anthropic_type = "billing_error"
    code = "budget_exceeded"


class PayloadTooLarge(OtariError):
    """The request body is over the configured limit."""

    status = 413
    type = "invalid_request_error"
    anthropic_type = "request_too_large"
    code = "request_too_large"


class RateLimited(OtariError):
    """A requests- or tokens-per-minute limit is reached."""

    status = 429
    type = "rate_limit_error"
    anthropic_type = "rate_limit_error"
    code = "rate_limit_exceeded"


# The error types of each provider status a refusal keeps: (OpenAI shape, Anthropic shape).
# Anthropic's types are the ones its API documents; the OpenAI shape uses the same words
# where OpenAI has none of its own (it documents codes, such as rate_limit_exceeded).
_UPSTREAM_TYPES = {
    400: ("invalid_request_error", "invalid_request_error"),
    404: ("not_found_error", "not_found_error"),
    408: ("timeout_error", "timeout_error"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_error"),
    503: ("service_unavailable", "api_error"),
    504: ("timeout_error", "timeout_error"),
    529: ("overloaded_error", "overloaded_error"),
}
_UPSTREAM_CODES = {
    429: "rate_limit_exceeded",
    413: "request_too_large",
    408: "upstream_timeout",
    504: "upstream_timeout",
    503: "upstream_unavailable",
    529: "upstream_overloaded",
}


class UpstreamError(OtariError):
    """The provider refused the request; its status, error type and retry advice are passed on.

    `code` defaults to the status's standard code (rate_limit_exceeded for 429, ...) and
    `upstream_<status>` otherwise; a provider's own code may be given instead.
    """

    type = "upstream_error"
    anthropic_type = "api_error"

    def __init__(self, message: str, status: int, **kwargs: Any) -> None:
        kwargs.setdefault("code", _UPSTREAM_CODES.get(status, f"upstream_{status}"))
        super().__init__(message, **kwargs)
        self.status = status
        default = (
            ("invalid_request_error", "invalid_request_error")
            if status < 500
            else ("upstream_error", "api_error")
        )
        self.type, self.anthropic_type = _UPSTREAM_TYPES.get(status, default)


class BadGateway(OtariError):
    """The provider failed (5xx, connection error, malformed answer)."""

    status = 502
    type = "upstream_error"
    anthropic_type = "api_error"
    code = "bad_gateway"


class ProviderCredentialRejected(BadGateway):
    """The provider answered 401/403 to the gateway's own provider key: the operator's
    problem, not the client's, so never relayed as the client's 401."""

    code = "provider_credential_rejected"

    def __init__(self, message: str, provider: str, detail: str = "", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.provider = provider
        self.detail = detail  # the provider's own words (key redacted): for the log only


class ServiceUnavailable(OtariError):
    """A dependency of ours (the database) is down; retry later."""

    status = 503
    type = "service_unavailable"
    anthropic_type = "overloaded_error"
    code = "service_unavailable"


class GatewayTimeout(OtariError):
    """The provider did not answer in time."""

    status = 504
    type = "timeout_error"
    anthropic_type = "api_error"
    code = "upstream_timeout"


# Which error shape a path answers in: the API its clients expect.
_MANAGEMENT_PREFIXES = ("/v1/keys", "/v1/users", "/v1/budgets", "/v1/pricing", "/v1/usage")


def is_management(path: str) -> bool:
    """Whether a path is a management API (keys, users, budgets, pricing, usage)."""
    if path.startswith("/api/"):
        path = path[4:]
    return path.startswith(_MANAGEMENT_PREFIXES)


def shape_for(path: str) -> str:
    """'detail' (management, FastAPI style), 'anthropic' or 'openai'."""
    if path.startswith("/api/"):
        path = path[4:]
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path.startswith(_MANAGEMENT_PREFIXES) or not path.startswith("/v1/"):
        return "detail"
    return "openai"


def error_body(
    shape: str,
    status: int,
    message: str,
    error_type: str,
    anthropic_type: str,
    code: str | None,
    param: str | None = None,
) -> dict[str, Any]:
    """The JSON body of an error in the given shape."""
    if shape == "anthropic":
        return {"type": "error", "error": {"type": anthropic_type, "message": message}}
    if shape == "openai":
        return {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return {"detail": message}


def render(request: Request, exc: OtariError) -> JSONResponse:
    """An OtariError as a response in the shape the path's clients expect."""
    if isinstance(exc, ProviderCredentialRejected):
        _credential_rejected(request, exc)
    elif exc.status >= 500:
        # Provider failures (502, 503, 504) and our own: findable by the client's request id.
        log.warning("request %s: %s", request.scope.get("otari.request_id", "-"), exc.message)
    body = error_body(
        shape_for(request.url.path),
        exc.status,
        exc.message,
        exc.type,
        exc.anthropic_type,
        exc.code,
        exc.param,
    )
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


def _credential_rejected(request: Request, exc: ProviderCredentialRejected) -> None:
    # The operator must fix the provider key: say so loudly, with the request id to find it.
    log.error(
        "request %s: %s (provider said: %s)",
        request.scope.get("otari.request_id", "-"),
        exc.message,
        exc.detail or "nothing",
    )
    runtime = getattr(request.app.state, "runtime", None)
    metrics = getattr(runtime, "metrics", None)
    if metrics is not None:
        metrics.credential_rejections.labels(exc.provider).inc()


def _validation_message(errors: list[Any]) -> str:
    parts = []
    for error in errors[:5]:
        loc = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        parts.append(f"{loc}: {error.get('msg')}" if loc else str(error.get("msg")))
    return "; ".join(parts) or "invalid request"


async def _on_otari_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OtariError)
    return render(request, exc)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    shape = shape_for(request.url.path)
    errors = [{k: v for k, v in e.items() if k in ("type", "loc", "msg")} for e in exc.errors()]
    if shape == "detail":
        return JSONResponse({"detail": errors}, status_code=422)
    body = error_body(
        shape,
        422,
        _validation_message(errors),
        "invalid_request_error",
        "invalid_request_error",
        "invalid_request",
    )
    return JSONResponse(body, status_code=422)


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.__cause__, ClientDisconnect):
        # FastAPI reads a management route's body itself and turns a hang-up into its 400
        # "There was an error parsing the body": the client is gone all the same.
        return await _on_client_gone(request, exc.__cause__)
    shape = shape_for(request.url.path)
    message = str(exc.detail)
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    body = error_body(shape, exc.status_code, message, kind, kind, None)
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _on_database_error(request: Request, exc: Exception) -> Response:
    # Connection-level failures mean the database is down: fail fast with 503 and let the
    # pool reconnect by itself once it is back.
    assert isinstance(exc, DBAPIError)
    if isinstance(exc, IntegrityError):
        # Two requests raced to create the same row: the loser learns it exists.
        return render(request, Conflict("the request conflicts with existing data"))
    if isinstance(exc, DataError):
        # A value the database cannot store (a NUL character, an out-of-range number).
        return render(request, Unprocessable("a value in the request cannot be stored"))
    if not exc.connection_invalidated and not _is_connection_error(exc):
        return await _on_unexpected(request, exc)
    log.warning(
        "database unavailable on %s %s: %s",
        request.method,
        request.url.path,
        type(exc.orig).__name__,
    )
    return render(request, ServiceUnavailable("database unavailable, retry later"))


def _is_connection_error(exc: DBAPIError) -> bool:
    name = type(exc.orig).__name__
    return name in {"OperationalError", "InterfaceError"} and "locked" not in str(exc.orig)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    # The one catch-all: log the traceback for operators, never send it to clients.
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    body = error_body(
        shape_for(request.url.path),
        500,
        "internal server error",
        "server_error",
        "api_error",
        "internal_error",
    )
    return JSONResponse(body, status_code=500)


# The status access logs give a request whose client closed the connection first (nginx's
# "client closed request"): nothing reads the answer, and it is not a server error.
CLIENT_CLOSED = 499


async def _on_client_gone(request: Request, exc: Exception) -> Response:
    # The client hung up before its body arrived (a timeout, a cancelled call, a load tool
    # stopping): nothing was reserved or written yet, and there is no traceback to show.
    log.debug(
        "client closed the connection before its request body arrived: %s %s",
        request.method,
        request.url.path,
    )
    return Response(status_code=CLIENT_CLOSED)


async def respond(request: Request, exc: Exception) -> Response:
    """The response for any exception, as the app's handlers would render it."""
    if isinstance(exc, ClientDisconnect):
        return await _on_client_gone(request, exc)
    if isinstance(exc, OtariError):
        return render(request, exc)
    if isinstance(exc, DBAPIError):
        return await _on_database_error(request, exc)
    if isinstance(exc, StarletteHTTPException):
        return await _on_http_exception(request, exc)
    return await _on_unexpected(request, exc)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into the right shape."""
    app.add_exception_handler(OtariError, _on_otari_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(DBAPIError, _on_database_error)
    app.add_exception_handler(ClientDisconnect, _on_client_gone)
    app.add_exception_handler(Exception, _on_unexpected)

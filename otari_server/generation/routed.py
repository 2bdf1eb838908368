"""Serve a request whose model is a route: hold once, then try targets until one answers.

Each endpoint gives a `dispatch(call, upstream_model)` that sends the request to
`call.provider` and returns the client's response, raising an OtariError when it fails
before the first byte reaches the client (a stream's first output is read before it
returns: see relay.open_relay). Failures after that point are the relay's, as without a
route.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from decimal import Decimal
from typing import Any

from starlette.responses import Response

from otari_server.access.auth import Caller
from otari_server.accounting.prices import Consumption, Price
from otari_server.errors import (
    BadGateway,
    GatewayTimeout,
    InvalidRequest,
    OtariError,
    UpstreamError,
)
from otari_server.generation.endpoints import Endpoint
from otari_server.generation.proxy import Call, admit, refusal_row, worst_case
from otari_server.routing.model import Route, Target
from otari_server.routing.order import plan
from otari_server.routing.policy import (
    TRANSIENT,
    Failure,
    backoff,
    classify,
    moves_on,
    parse_retry_after,
    retries_same_target,
)
from otari_server.routing.survey import survey
from otari_server.runtime import Runtime
from otari_server.storage.tables import utcnow

log = logging.getLogger("otari.routing")

Dispatch = Callable[[Call, str], Awaitable[Response]]
# Seconds by which the deadline may pass the provider's own timeout before the gateway
# guards an attempt itself (asyncio.timeout costs tens of microseconds per attempt).
_SLACK = 0.05


def failure_of(exc: OtariError) -> tuple[Failure, float | None]:
    """The routing kind of an attempt's error, and the provider's Retry-After in seconds."""
    if isinstance(exc, GatewayTimeout):
        kind = Failure.TIMEOUT
    elif isinstance(exc, UpstreamError):
        kind = classify(exc.status, exc.message)
    elif isinstance(exc, BadGateway):
        # upstream.failure: "Could not reach ..." is a connection that never answered.
        kind = Failure.CONNECTION if exc.message.startswith("Could not reach") else Failure.SERVER
    else:
        kind = Failure.REFUSED  # our own refusal (e.g. untranslatable): wrong everywhere
    headers = {k.lower(): v for k, v in exc.headers.items()}
    after = parse_retry_after(headers.get("retry-after"))
    if after is None and headers.get("retry-after-ms"):
        milliseconds = parse_retry_after(headers["retry-after-ms"])
        after = None if milliseconds is None else milliseconds / 1000
    return kind, after


def _cost(price: Price | None, used: Consumption) -> Decimal:
    return Decimal(-1) if price is None else price.cost(used)


async def routed(
    runtime: Runtime,
    caller: Caller,
    endpoint: Endpoint,
    raw: bytes,
    body: dict[str, Any],
    request_id: str | None,
    route: Route,
    dispatch: Dispatch,
    *,
    openai_only: bool = False,
) -> Response:
    """Admit a request for `route` and try its targets in plan order.

    The hold is the worst case at the dearest target that may serve (so any of them fits
    it); the serving target's price settles. Raises the last target's error (settled as
    the request's one error row) when none answers, or at once for a failure another
    target cannot fix (a 4xx other than 429 and, unless context_window_fallbacks, a
    context-length refusal). 400 `route_unavailable` when no target can serve at all.
    """
    settings = runtime.settings
    started = time.perf_counter()
    found = await survey(
        runtime, route, endpoint.billing, utcnow(), caller, endpoint.path if openai_only else None
    )
    book = runtime.routes
    laid = plan(route, runtime.cooldowns, time.monotonic(), book.rng, found.unusable)
    metrics = runtime.metrics
    if metrics is not None:
        for target, _why in laid.skipped:
            metrics.route_skips.labels(route.name, target.model, "unusable").inc()
        if laid.tries != laid.cooling:  # cooling targets were passed over
            for target in laid.cooling:
                metrics.route_skips.labels(route.name, target.model, "cooldown").inc()
    if not laid.tries:
        why = "; ".join(f"{target.model}: {reason}" for target, reason in laid.skipped)
        refused = InvalidRequest(
            f"Route '{route.name}' has no target that can serve this request ({why})",
            param="model",
            code="route_unavailable",
        )
        row = refusal_row(runtime, caller, endpoint, body, request_id, refused, started)
        runtime.ledger.record(replace(row, route=route.name, attempts=0))
        raise refused
    worst = worst_case(endpoint, raw, body, settings.default_max_tokens)
    dearest = (
        laid.tries[0]
        if len(laid.tries) == 1
        else max(laid.tries, key=lambda t: _cost(found.prices.get(t.model), worst))
    )
    if caller.allowed_models and not caller.may_use(dearest.model):
        # Survey checked the targets (a key allowed the route's name may use them all):
        # admission must not refuse the dearest one again.
        caller = replace(caller, allowed_models=())
    admitted = dict(body, model=dearest.model)
    call, _ = await admit(runtime, caller, endpoint, raw, admitted, request_id, worst)
    for name in endpoint.output_limits:  # the budget clamp may have lowered the limit
        if name in admitted:
            body[name] = admitted[name]
    call.route = route.name
    tries = laid.tries
    if call.hold.clamped is not None and call.max_output is not None:
        # Output lowered to what the dearest target's price fits: a target whose price
        # makes that output dearer still (other input/output ratio) cannot serve.
        clamped = replace(worst, completion_tokens=call.max_output)
        tries = tuple(
            t for t in tries if _cost(found.prices.get(t.model), clamped) <= call.hold.amount
        )
    return await _attempt(runtime, call, route, tries, found.prices, dispatch)


async def _attempt(
    runtime: Runtime,
    call: Call,
    route: Route,
    tries: tuple[Target, ...],
    prices: dict[str, Price | None],
    dispatch: Dispatch,
) -> Response:
    """Try `tries` in order with retries, backoff, cooldowns and the route's deadline."""
    book, metrics = runtime.routes, runtime.metrics
    timeout = route.timeout or runtime.settings.request_timeout
    deadline = time.monotonic() + timeout
    last: OtariError | None = None
    attempts = 0
    for position, target in enumerate(tries):
        call.provider = runtime.providers[target.provider]
        call.model_key = target.model
        call.price = prices.get(target.model)
        upstream_model = target.model.partition(":")[2]
        retry = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _give_up(call, route, last, timeout)
            attempts += 1
            call.attempts = attempts
            try:
                if remaining + _SLACK < call.provider.timeout:
                    async with asyncio.timeout(remaining):
                        response = await dispatch(call, upstream_model)
                else:  # the provider's own timeout ends the attempt by the deadline
                    response = await dispatch(call, upstream_model)
            except TimeoutError:  # the route's deadline: no time is left for another try
                runtime.cooldowns.failed(target.model, route, time.monotonic())
                if metrics is not None:
                    metrics.route_attempts.labels(route.name, target.model, "timeout").inc()
                raise _give_up(
                    call,
                    route,
                    GatewayTimeout(
                        f"Route '{route.name}': no answer from '{target.model}' within the "
                        f"route's {timeout:g}s deadline"
                    ),
                    timeout,
                ) from None
            except OtariError as error:
                exc = error
                kind, retry_after = failure_of(exc)
            else:
                runtime.cooldowns.succeeded(target.model)
                if metrics is not None:
                    metrics.route_attempts.labels(route.name, target.model, "success").inc()
                return response
            last = exc
            if metrics is not None:
                metrics.route_attempts.labels(route.name, target.model, kind.value).inc()
            if kind in TRANSIENT and runtime.cooldowns.failed(
                target.model, route, time.monotonic()
            ):
                log.warning(
                    "route %s: target %s cools down for %gs after %d failures",
                    route.name,
                    target.model,
                    route.cooldown_seconds,
                    route.cooldown_failures,
                )
                if metrics is not None:
                    metrics.route_cooldowns.labels(route.name, target.model).inc()
            if not moves_on(kind, route):
                call.settle("error", error=exc.message, status_code=exc.status)
                raise exc
            if retries_same_target(kind) and retry < route.retries:
                wait = backoff(retry, retry_after, route, book.rng)
                if wait is not None and time.monotonic() + wait < deadline:
                    retry += 1
                    await asyncio.sleep(wait)
                    continue
            break
        if position + 1 < len(tries):
            following = tries[position + 1].model
            log.warning(
                "request %s: route %s: %s failed (%s: %s); falling back to %s",
                call.request_id or "-",
                route.name,
                target.model,
                kind.value,
                exc.message,
                following,
            )
            if metrics is not None:
                metrics.route_fallbacks.labels(route.name, target.model, kind.value).inc()
    raise _give_up(call, route, last, timeout)


def _give_up(call: Call, route: Route, last: OtariError | None, timeout: float) -> OtariError:
    """Every target failed (or the deadline passed): settle one error row; the error."""
    error = last or GatewayTimeout(f"Route '{route.name}': its {timeout:g}s deadline passed")
    call.settle("error", error=error.message, status_code=error.status)
    return error

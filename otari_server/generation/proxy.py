"""The hot path shared by every generation endpoint: admit (price, budget), forward, settle.

Each endpoint family's module (chat, messages, responses, audio, batches) reads its body,
calls `admit`, talks to the provider and calls `Call.settle` exactly once. Endpoints whose
request and answer pass through unchanged use `forward_json` here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import orjson
from fastapi import Request
from starlette.responses import Response

from otari_server.access.auth import Caller
from otari_server.accounting import budget_rules, counts, estimates
from otari_server.accounting.counts import consumption
from otari_server.accounting.prices import (
    AUDIO_SECONDS,
    CHARACTERS,
    IMAGES,
    MAX_MONEY,
    REQUESTS,
    TOKENS,
    Consumption,
    Price,
)
from otari_server.accounting.reservations import NO_HOLD, Hold
from otari_server.accounting.settlements import Settlement
from otari_server.edge import access_log
from otari_server.errors import (
    BudgetExceeded,
    InvalidRequest,
    OtariError,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
)
from otari_server.generation.endpoints import CHAT, Endpoint
from otari_server.providers import ModelAddressError, Provider, resolve
from otari_server.providers.upstream import parse_upstream, read_upstream
from otari_server.runtime import Runtime
from otari_server.storage.tables import utcnow

JSON_HEADERS = {"content-type": "application/json"}
# The status of a served request whose provider numbers were refused (see counts.py).
INVALID_USAGE = "invalid_usage"
# The status of a request refused after authentication (budget, rate limit, model, price).
REFUSED = "refused"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


@dataclass(slots=True)
class Call:
    """Everything known about one request once it is admitted."""

    runtime: Runtime
    endpoint: Endpoint
    provider: Provider
    model_key: str
    user_id: str | None
    key_id: str | None
    price: Price | None
    hold: Hold
    request_id: str | None
    started: float
    counts: bool = True
    rate_subjects: tuple[str, ...] = ()
    # The gateway's own estimate of the prompt tokens, billed when the provider reports none.
    prompt_estimate: int = 0
    # The output tokens the hold reserved (a stream is cut past them); None: no budget hold.
    max_output: int | None = None
    # The gateway's own estimate of the request (its worst case): what an answer whose
    # numbers break the rules (counts.py) is billed from.
    estimate: Consumption | None = None
    settled: bool = False
    # A request for a route (otari_server.routing): its name and the attempts made so far;
    # provider, model_key and price are then the target being tried.
    route: str | None = None
    attempts: int | None = None

    def settle(
        self,
        status: str,
        used: Consumption | None = None,
        error: str | None = None,
        status_code: int | None = None,
    ) -> None:
        """Queue the usage row and the hold's release (never blocks).

        Only the first call counts (a request cut at shutdown may be settled by the sweep
        and by its own handler). `status_code` is what the client was answered: 200 unless
        given (a stream's status was sent before it could fail).
        """
        if self.settled:
            return
        self.settled = True
        self.runtime.calls.pop(id(self), None)
        used = used or Consumption(requests=0 if status != "success" else 1)
        cost = None if self.price is None else self.price.cost(used)
        if cost is not None and cost > MAX_MONEY and used.invalid is None:
            used = replace(used, invalid=f"cost {cost:f} is over the ceiling of {MAX_MONEY:f}")
        if used.invalid is not None:
            # Never bill from a number that breaks the rules: bill the gateway's estimate,
            # and say so on the row.
            error = (
                f"provider usage refused ({used.invalid}); billed from the gateway's "
                "estimate" + (f"; {error}" if error else "")
            )
            status = INVALID_USAGE if status == "success" else status
            used = self.estimate or Consumption(requests=used.requests)
            cost = None if self.price is None else min(self.price.cost(used), MAX_MONEY)
        if self.runtime.metrics is not None:
            self.runtime.metrics.tokens.labels("prompt").inc(used.prompt_tokens)
            self.runtime.metrics.tokens.labels("completion").inc(used.completion_tokens)
            if cost:
                self.runtime.metrics.cost.inc(float(cost))  # a gauge of money, not a ledger
        access_log.note(
            model=self.model_key, user=self.user_id, key=self.key_id, cost=cost, outcome=status
        )
        tokens_seen = used.prompt_tokens or used.completion_tokens
        self.runtime.ledger.record(
            Settlement(
                hold=self.hold,
                user_id=self.user_id,
                api_key_id=self.key_id,
                model=self.model_key,
                provider=self.provider.name,
                endpoint=self.endpoint.path,
                status=status,
                prompt_tokens=used.prompt_tokens if tokens_seen else None,
                completion_tokens=used.completion_tokens if tokens_seen else None,
                cache_read_tokens=used.cache_read_tokens or None,
                cache_write_tokens=used.cache_write_tokens or None,
                cost=cost,
                counts_toward_budget=self.counts,
                error_message=error,
                latency_ms=int((time.perf_counter() - self.started) * 1000),
                request_id=self.request_id,
                rate_subjects=self.rate_subjects,
                status_code=status_code or 200,
                price_source=None if self.price is None else self.price.source,
                route=self.route,
                attempts=self.attempts,
            )
        )


# How a usage row billed from the gateway's own numbers says so (in its error_message).
ESTIMATED = "usage estimated by the gateway"


def settle_answer(
    call: Call, usage: object, read: Callable[[dict[str, Any]], Consumption], answer_size: int
) -> None:
    """Settle a whole (non-streamed) answer from its `usage` (read by `read`); an answer
    without usage (or with one that reports no token count) is billed from the gateway's
    estimate: the prompt's, and a token per four
    bytes of the answer (at most the reserved output), the row saying it is estimated."""
    if counts.reports_tokens(usage):
        call.settle("success", read(usage))
        return
    if usage is not None and not isinstance(usage, dict):  # "lots": refused, not missing
        call.settle(
            "success", Consumption(invalid=f"usage is not an object ({type(usage).__name__})")
        )
        return
    output = -(-answer_size // 4)
    if call.max_output is not None:
        output = min(output, call.max_output)
    call.settle(
        "success",
        Consumption(prompt_tokens=call.prompt_estimate, completion_tokens=output),
        f"{ESTIMATED} (no usage in the provider's answer)",
    )


async def read_body(request: Request, limit: int) -> tuple[bytes, dict[str, Any]]:
    """The raw body and its JSON object; 413 over the limit, 400 when not a JSON object."""
    raw = await request.body()
    if len(raw) > limit:
        raise PayloadTooLarge(f"Request body is over the {limit}-byte limit")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("Request body must be a JSON object")
    return raw, body


def billed_user(caller: Caller, requested: object) -> str | None:
    """Who pays: the key's user; the master key may name any user in the `user` field."""
    if requested is not None and not isinstance(requested, str):
        raise InvalidRequest("'user' must be a string", param="user")
    if caller.is_master:
        return requested or None
    if requested and caller.user_id is not None and requested != caller.user_id:
        raise PermissionDenied(
            f"This API key belongs to user '{caller.user_id}' and cannot bill '{requested}'"
        )
    return caller.user_id


def check_fields(body: dict[str, Any], endpoint: Endpoint) -> None:
    """The fields an endpoint cannot do without, before anything is spent on it."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequest("'model' is required and must be a string", param="model")
    for name in endpoint.required:
        if body.get(name) in (None, "", []):
            raise InvalidRequest(f"'{name}' is required", param=name)
    if not isinstance(body.get("stream", False), bool):
        raise InvalidRequest("'stream' must be a boolean", param="stream")
    for name in (*endpoint.output_limits, "n"):
        value = body.get(name)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise InvalidRequest(f"'{name}' must be a positive integer", param=name)


def worst_case(
    endpoint: Endpoint, raw: bytes, body: dict[str, Any], default_max_tokens: int
) -> Consumption:
    """The most a request can consume: what the budget reservation holds."""
    n = body.get("n")
    count = n if isinstance(n, int) and n > 1 else 1
    return Consumption(
        prompt_tokens=estimates.input_tokens(raw),
        completion_tokens=(
            estimates.output_tokens(body, default_max_tokens, *endpoint.output_limits)
            if endpoint.output_limits
            else 0
        ),
        images=count if endpoint.billing == IMAGES else 0,
        characters=len(raw) if endpoint.billing == CHARACTERS else 0,
        audio_seconds=Decimal(estimates.audio_seconds_bound(len(raw)))
        if endpoint.billing == AUDIO_SECONDS
        else Decimal(0),
    )


def route(runtime: Runtime, caller: Caller, model: str) -> tuple[Provider, str, str]:
    """(provider, upstream model, model key) that `provider:model` names, if the caller may
    use it: 400 for an unknown provider, 403 outside the key's or user's allow-list."""
    try:
        provider, upstream_model = resolve(model, runtime.providers)
    except ModelAddressError as exc:
        raise InvalidRequest(str(exc), param="model", code="model_not_found") from None
    model_key = f"{provider.name}:{upstream_model}"
    if not caller.may_use(model_key):
        raise PermissionDenied(
            f"This API key may not use model '{model_key}'", code="model_not_allowed"
        )
    return provider, upstream_model, model_key


def unpriced(model_key: str, billing: str = "") -> InvalidRequest:
    """The refusal of a model without the price it needs while require_pricing is on."""
    what = f"no price per {billing}" if billing else "no price"
    return InvalidRequest(
        f"Model '{model_key}' has {what}, and require_pricing is on: set one with "
        "POST /v1/pricing (otari pricing set) or turn require_pricing off",
        param="model",
        code="model_not_priced",
    )


async def admit(
    runtime: Runtime,
    caller: Caller,
    endpoint: Endpoint,
    raw: bytes,
    body: dict[str, Any],
    request_id: str | None,
    worst: Consumption | None = None,
) -> tuple[Call, str]:
    """Resolve provider and price, then reserve the worst case; raises if it cannot run.

    When the budget clamp lowers the request's output limit, `body` is changed in place
    (max_tokens, max_completion_tokens or max_output_tokens), so what is sent upstream
    is what was reserved.

    A refusal here (400 unknown or unpriced model, 402 budget, 429 rate limit) is recorded
    as a usage row with status "refused" (queued: no extra database round trip).
    """
    started = time.perf_counter()
    try:
        return await _admit(runtime, caller, endpoint, raw, body, request_id, worst, started)
    except (BudgetExceeded, RateLimited, InvalidRequest) as exc:
        row = refusal_row(runtime, caller, endpoint, body, request_id, exc, started)
        runtime.ledger.record(row)
        access_log.note(model=row.model, user=row.user_id, key=row.api_key_id, outcome=row.status)
        raise


def refusal_row(
    runtime: Runtime,
    caller: Caller,
    endpoint: Endpoint,
    body: dict[str, Any],
    request_id: str | None,
    exc: OtariError,
    started: float,
) -> Settlement:
    """The usage row of a request refused after authentication (nothing held or spent)."""
    model = body.get("model")
    named = model.partition(":")[0] if isinstance(model, str) else ""
    provider = named if named in runtime.providers else None
    user = body.get("user")
    return Settlement(
        hold=NO_HOLD,
        user_id=user if caller.is_master and isinstance(user, str) and user else caller.user_id,
        api_key_id=caller.key_id,
        model=model if isinstance(model, str) else "",
        provider=provider,
        endpoint=endpoint.path,
        status=REFUSED,
        cost=None,
        counts_toward_budget=False,
        error_message=exc.message,
        latency_ms=int((time.perf_counter() - started) * 1000),
        request_id=request_id,
        status_code=exc.status,
    )


async def _admit(
    runtime: Runtime,
    caller: Caller,
    endpoint: Endpoint,
    raw: bytes,
    body: dict[str, Any],
    request_id: str | None,
    worst: Consumption | None,
    started: float,
) -> tuple[Call, str]:
    settings = runtime.settings
    provider, upstream_model, model_key = route(runtime, caller, body["model"])
    user_id = billed_user(caller, body.get("user"))
    price = await runtime.prices.at(model_key, utcnow())
    if settings.require_pricing and (price is None or not price.covers(endpoint.billing)):
        raise unpriced(model_key, "" if price is None else endpoint.billing)
    hold = NO_HOLD
    max_output = None
    toward_budget = not caller.exclude_from_budget
    budgeted = toward_budget and user_id is not None and (caller.is_master or caller.budgeted)
    # Pure arithmetic over the body: also what a refused provider answer is billed from.
    worst = worst or worst_case(endpoint, raw, body, settings.default_max_tokens)
    if budgeted or caller.limits:
        need = None
        if budgeted:
            need = budget_need(endpoint, body, provider, price, worst)
            if endpoint.output_limits:
                max_output = worst.completion_tokens
        hold = await runtime.ledger.reserve(
            user_id if budgeted else None,
            need.amount if need else Decimal(0),
            caller.limits,
            need,
            settings.budget_clamp,
        )
        if hold.clamped is not None:
            clamp_output(endpoint, body, provider, hold.clamped)
            # The stream cut follows what was reserved: the clamped limit, per choice.
            n = body.get("n")
            max_output = hold.clamped * (n if isinstance(n, int) and n > 1 else 1)
    call = Call(
        runtime,
        endpoint,
        provider,
        model_key,
        user_id,
        caller.key_id,
        price,
        hold,
        request_id,
        started,
        toward_budget,
        tuple(limit.subject for limit in caller.limits if limit.tpm is not None),
        estimates.estimated_prompt(raw),
        max_output,
        estimate=worst,
    )
    runtime.calls[id(call)] = call  # settled by the shutdown sweep if it never settles
    return call, upstream_model


def budget_need(
    endpoint: Endpoint,
    body: dict[str, Any],
    provider: Provider,
    price: Price | None,
    worst: Consumption,
) -> budget_rules.Need:
    """What a request holds against its budget: its worst-case cost, one request, its
    worst-case tokens, and (where output is capped by a body field) how to lower that cap."""
    output = None
    if endpoint.output_limits and worst.completion_tokens:
        n = body.get("n")
        output = budget_rules.Output(
            price,
            worst,
            n if isinstance(n, int) and n > 1 else 1,
            output_field(endpoint, body, provider),
        )
    return budget_rules.Need(
        Decimal(0) if price is None else price.cost(worst),
        1,
        worst.prompt_tokens + worst.completion_tokens,
        output,
    )


def output_field(endpoint: Endpoint, body: dict[str, Any], provider: Provider) -> str:
    """The body field that caps the request's output: the one it sent, else the one the
    gateway would set (OpenAI's own API refuses max_tokens for reasoning models; many
    other servers know only max_tokens)."""
    sent = next((name for name in endpoint.output_limits if name in body), None)
    if sent is not None:
        return sent
    if endpoint.output_limits == CHAT.output_limits and not provider.base_url.startswith(
        "https://api.openai.com/"
    ):
        return "max_tokens"
    return endpoint.output_limits[0]


def clamp_output(endpoint: Endpoint, body: dict[str, Any], provider: Provider, limit: int) -> None:
    """Lower the request's output limit to `limit` per choice (the budget clamp): every
    output-limit field it sent, or the one the provider reads when it sent none."""
    sent = [name for name in endpoint.output_limits if name in body]
    for name in sent or [output_field(endpoint, body, provider)]:
        body[name] = limit


def runtime_of(request: Request) -> Runtime:
    """The app's runtime, from a request."""
    runtime: Runtime = request.app.state.runtime
    return runtime


def openai_only(call: Call) -> None:
    """Refuse, before any provider call, an endpoint the provider's wire format lacks."""
    if call.provider.type != "openai":
        raise InvalidRequest(
            f"Provider '{call.provider.name}' ({call.provider.type}) does not offer "
            f"{call.endpoint.path}",
            param="model",
            code="unsupported_endpoint",
        )


async def exchange_json(
    request: Request,
    caller: Caller,
    endpoint: Endpoint,
    read: tuple[bytes, dict[str, Any]] | None = None,
) -> tuple[Call, bytes, dict[str, Any]]:
    """Admit a JSON request, send it to an OpenAI-type provider, return its JSON answer.

    `read` is the body when the caller has read it already. A failure is settled here; on
    success the caller settles what the answer says.
    """
    runtime = runtime_of(request)
    if read is None:
        read = await read_body(request, runtime.settings.max_body_bytes)
        check_fields(read[1], endpoint)
    raw, body = read
    call, upstream_model = await admit(
        runtime, caller, endpoint, raw, body, request.scope.get("otari.request_id")
    )
    try:
        openai_only(call)
        content, answer = await send_json(call, body, upstream_model)
        return call, content, answer
    except OtariError as exc:
        call.settle("error", error=exc.message, status_code=exc.status)
        raise


async def send_json(
    call: Call, body: dict[str, Any], upstream_model: str
) -> tuple[bytes, dict[str, Any]]:
    """POST the body to the call's provider; its JSON answer (raw and parsed)."""
    response = await call.runtime.upstream.post(
        call.provider, call.endpoint.upstream_path, dict(body, model=upstream_model)
    )
    content = await read_upstream(call.provider, response)
    return content, parse_upstream(call.provider, content)


async def forward_json(request: Request, caller: Caller, endpoint: Endpoint) -> Response:
    """An endpoint whose request and answer pass through unchanged (embeddings, ...);
    a route's targets (OpenAI-type ones) are tried in turn."""
    runtime = runtime_of(request)
    raw, body = await read_body(request, runtime.settings.max_body_bytes)
    check_fields(body, endpoint)
    model_route = runtime.routes.routes.get(body["model"])
    if model_route is not None:
        # Imported here: routing builds on this module (admit, Call).
        from otari_server.generation.routed import routed

        async def attempt(call: Call, upstream_model: str) -> Response:
            content, answer = await send_json(call, body, upstream_model)
            call.settle("success", metered(endpoint, answer))
            return Response(content, headers=JSON_HEADERS)

        return await routed(
            runtime,
            caller,
            endpoint,
            raw,
            body,
            request.scope.get("otari.request_id"),
            model_route,
            attempt,
            openai_only=True,
        )
    call, content, answer = await exchange_json(request, caller, endpoint, (raw, body))
    if endpoint.billing == TOKENS and not counts.reports_tokens(answer.get("usage")):
        # An embedding without usage: its prompt as the gateway estimates it.
        settle_answer(call, answer.get("usage"), consumption, 0)
    else:
        call.settle("success", metered(endpoint, answer))
    return Response(content, headers=JSON_HEADERS)


def metered(endpoint: Endpoint, answer: dict[str, Any]) -> Consumption:
    """What a pass-through answer says was consumed."""
    usage = answer.get("usage")
    if endpoint.billing == IMAGES:
        data = answer.get("data")
        try:
            images = counts.count(
                len(data) if isinstance(data, list) else 0, "images", counts.MAX_IMAGES
            )
        except counts.BadCount as exc:
            return Consumption(invalid=str(exc))
        return consumption(usage, images=images)
    if endpoint.billing == REQUESTS and not isinstance(usage, dict):
        meta = answer.get("meta")
        units = meta.get("billed_units") if isinstance(meta, dict) else None
        if isinstance(units, dict):  # Cohere-style rerank
            return consumption(
                {
                    "prompt_tokens": units.get("input_tokens"),
                    "completion_tokens": units.get("output_tokens"),
                }
            )
    if isinstance(usage, dict) and "total_tokens" in usage and "prompt_tokens" not in usage:
        return consumption({"prompt_tokens": usage["total_tokens"]})  # Jina-style rerank
    return consumption(usage)

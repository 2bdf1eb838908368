"""Batches through a provider's OpenAI batch API: JSONL upload, create, status, results.

A batch is created from `{model, requests: [{custom_id, body}], completion_window, metadata}`:
the gateway writes the JSONL file (one chat completion per line, the provider's model name
in each body), uploads it to the provider's /files (purpose "batch"), creates the batch and
answers with the provider's batch object unchanged; its `id` is the provider's, and every
later call names the provider with `?provider=`. The `batches` table remembers who created
each batch, which model it runs, and whether its results were metered.

A batch runs one model: a line naming another model is refused at creation.

Money: creating a batch holds the worst case of every line against the user's budget (402
when it does not fit): its money, and, where the budget sets them, its requests (one per
line) and tokens (every line's prompt estimate and output limit) against `request_limit` and
`token_limit`; in a `reservations` row of its own (instance "batches", expiring a week after
the completion window). Collecting the results (once the batch has ended)
records one usage row per result, at the model's price when the batch was created, adds
the cost to the user's spend and gives the hold back, in one transaction: once per batch,
however often the results are fetched.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from anyio import to_thread
from pydantic import ValidationError
from sqlalchemy import Connection, delete, select, update
from sqlalchemy.orm import Session

from otari_server import jsonio
from otari_server.access.auth import Caller
from otari_server.accounting import budget_rules
from otari_server.accounting.counts import consumption
from otari_server.accounting.holds import Held
from otari_server.accounting.prices import Consumption, Price
from otari_server.accounting.reservations import NO_HOLD, over_limit, refusal
from otari_server.accounting.settlements import Settlement, settle_all
from otari_server.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
)
from otari_server.generation.endpoints import BATCHES, CHAT
from otari_server.generation.proxy import INVALID_USAGE, billed_user, route, unpriced
from otari_server.generation.proxy import worst_case as proxy_worst_case
from otari_server.generation.wire import CreateBatchRequest
from otari_server.providers import Provider
from otari_server.providers.upstream import malformed, parse_upstream, read_upstream
from otari_server.runtime import Runtime
from otari_server.storage.batch_tables import BatchJob
from otari_server.storage.tables import Budget, Reservation, User, utcnow

# What every line of a batch file asks for; the only endpoint batches run here.
LINE_URL = "/v1/chat/completions"
# Once a batch is in one of these states its output and error files are final.
ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
# How long after its completion window an uncollected batch's hold lasts.
HOLD_GRACE = timedelta(days=7)
# The `instance_id` of batch holds in `reservations`: no gateway instance owns them, so no
# start-up reclaims them (instance ids are "host:port"); they expire at `_hold_until`.
HOLDER = "batches"


async def create(runtime: Runtime, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    """Upload the batch file, create the batch at the provider, remember who pays for it.

    Every line must run the batch's model (400 `model_mismatch` otherwise). The worst case
    of every line is held against the user's budget (402 when it does not fit) until the
    results are collected; a provider refusal gives it back at once.
    """
    batch = _parse(body)
    provider, upstream_model, model_key = route(runtime, caller, batch.model)
    _offers_batches(provider)
    _one_model(batch, {batch.model, upstream_model, model_key}, model_key)
    user_id = billed_user(caller, body.get("user"))
    now = utcnow()
    price = await runtime.prices.at(model_key, now)
    if runtime.settings.require_pricing and price is None:
        raise unpriced(model_key)
    counts = not caller.exclude_from_budget
    hold: str | None = None
    amount = Decimal(0)
    if counts and user_id is not None and (caller.is_master or caller.budgeted):
        need = worst_case(batch, runtime.settings.default_max_tokens, price)
        amount = need.amount
        hold = await to_thread.run_sync(
            _reserve, runtime, user_id, need, now, _hold_until(batch, now)
        )
    try:
        created = await _submit(runtime, provider, batch, upstream_model)
    except BaseException:
        if hold is not None:
            await to_thread.run_sync(_release_only, runtime, hold)
        raise
    job = BatchJob(
        provider=provider.name,
        batch_id=created["id"],
        model_key=model_key,
        user_id=user_id,
        api_key_id=caller.key_id,
        counts_toward_budget=counts,
        request_count=len(batch.requests),
        created_at=now,
        hold_id=hold,
        reserved=amount if hold is not None else Decimal(0),
    )
    await to_thread.run_sync(_insert, runtime, job)
    return created


def worst_case(
    batch: CreateBatchRequest, default_max_tokens: int, price: Price | None
) -> budget_rules.Need:
    """The most the batch can use: one request per line, every line's prompt estimate and
    output limit in tokens, and their cost in USD (0 for an unpriced model)."""
    amount, tokens = Decimal(0), 0
    for item in batch.requests:
        line = {**item.body, "model": batch.model}
        worst = proxy_worst_case(CHAT, orjson.dumps(line), line, default_max_tokens)
        tokens += worst.prompt_tokens + worst.completion_tokens
        if price is not None:
            amount += price.cost(worst)
    return budget_rules.Need(amount, requests=len(batch.requests), tokens=tokens)


async def list_batches(
    runtime: Runtime, caller: Caller, provider_name: str, after: str | None, limit: int | None
) -> dict[str, Any]:
    """The provider's list of batches; an API key sees only the batches it may see."""
    provider = _provider(runtime, provider_name)
    params = {
        name: str(value)
        for name, value in (("after", after), ("limit", limit))
        if value is not None
    }
    page = await _json(provider, await runtime.upstream.get(provider, "/batches", params))
    data = page.get("data")
    if not isinstance(data, list):
        raise malformed(provider)
    if not caller.is_master:
        ids = [
            item["id"]
            for item in data
            if isinstance(item, dict) and isinstance(item.get("id"), str)
        ]
        jobs = await to_thread.run_sync(_load, runtime, provider.name, ids)
        visible = {job.batch_id for job in jobs if _owns(caller, job)}
        page["data"] = [
            item for item in data if isinstance(item, dict) and item.get("id") in visible
        ]
    return page


async def retrieve(
    runtime: Runtime, caller: Caller, provider_name: str, batch_id: str
) -> dict[str, Any]:
    """The provider's batch object."""
    provider = _provider(runtime, provider_name)
    await _job(runtime, caller, provider, batch_id)
    return await _fetch(runtime, provider, batch_id)


async def cancel(
    runtime: Runtime, caller: Caller, provider_name: str, batch_id: str
) -> dict[str, Any]:
    """Ask the provider to cancel; results it finished before are still collected later."""
    provider = _provider(runtime, provider_name)
    await _job(runtime, caller, provider, batch_id)
    response = await runtime.upstream.post(
        provider, f"/batches/{quote(batch_id, safe='')}/cancel", {}
    )
    return await _json(provider, response)


async def results(
    runtime: Runtime, caller: Caller, provider_name: str, batch_id: str
) -> dict[str, Any]:
    """The results of an ended batch (409 before); metered on the first collection only."""
    provider = _provider(runtime, provider_name)
    job = await _job(runtime, caller, provider, batch_id)
    if job is None:
        raise NotFound(f"Batch '{batch_id}' was not created through this gateway")
    batch = await _fetch(runtime, provider, batch_id)
    status = batch.get("status")
    if status not in ENDED:
        raise Conflict(f"Batch '{batch_id}' is not yet complete (status: {status})")
    lines: list[dict[str, Any]] = []
    for key in ("output_file_id", "error_file_id"):
        if isinstance(batch.get(key), str):
            lines += await _download(runtime, provider, batch[key])
    items = [_item(line) for line in lines]
    if job.metered_at is None:
        price = await runtime.prices.at(job.model_key, job.created_at)
        settlements = [_settlement(job, price, item) for item in items]
        await to_thread.run_sync(_claim, runtime, job, settlements)
    return {"batch_id": batch_id, "status": status, "results": items}


# -- the provider -----------------------------------------------------------------------------


def jsonl(batch: CreateBatchRequest, upstream_model: str) -> bytes:
    """The batch input file: one chat completion request per line."""
    return b"".join(
        orjson.dumps(
            {
                "custom_id": item.custom_id,
                "method": "POST",
                "url": LINE_URL,
                "body": {**item.body, "model": upstream_model},
            }
        )
        + b"\n"
        for item in batch.requests
    )


async def _submit(
    runtime: Runtime, provider: Provider, batch: CreateBatchRequest, upstream_model: str
) -> dict[str, Any]:
    """Upload the input file, then create the batch from it; the provider's batch object."""
    form = aiohttp.FormData()
    form.add_field("purpose", "batch")
    form.add_field(
        "file",
        jsonl(batch, upstream_model),
        filename="otari-batch.jsonl",
        content_type="application/jsonl",
    )
    uploaded = await _json(provider, await runtime.upstream.post_form(provider, "/files", form))
    if not isinstance(uploaded.get("id"), str):
        raise malformed(provider)
    request: dict[str, Any] = {
        "input_file_id": uploaded["id"],
        "endpoint": LINE_URL,
        "completion_window": batch.completion_window,
    }
    if batch.metadata is not None:
        request["metadata"] = batch.metadata
    created = await _json(provider, await runtime.upstream.post(provider, "/batches", request))
    if not isinstance(created.get("id"), str):
        raise malformed(provider)
    return created


def _provider(runtime: Runtime, name: str) -> Provider:
    provider = runtime.providers.get(name)
    if provider is None:
        known = ", ".join(sorted(runtime.providers)) or "none"
        raise InvalidRequest(
            f"Unknown provider '{name}'; configured providers: {known}",
            param="provider",
            code="unknown_provider",
        )
    _offers_batches(provider)
    return provider


def _offers_batches(provider: Provider) -> None:
    if provider.type != "openai":
        raise InvalidRequest(
            f"Provider '{provider.name}' ({provider.type}) does not offer the OpenAI batch API",
            param="provider",
            code="unsupported_endpoint",
        )


async def _fetch(runtime: Runtime, provider: Provider, batch_id: str) -> dict[str, Any]:
    response = await runtime.upstream.get(provider, f"/batches/{quote(batch_id, safe='')}")
    return await _json(provider, response)


async def _json(provider: Provider, response: aiohttp.ClientResponse) -> dict[str, Any]:
    return parse_upstream(provider, await read_upstream(provider, response))


async def _download(runtime: Runtime, provider: Provider, file_id: str) -> list[dict[str, Any]]:
    """The lines of a batch output or error file."""
    response = await runtime.upstream.get(provider, f"/files/{quote(file_id, safe='')}/content")
    content = await read_upstream(provider, response)
    lines = []
    for raw in content.splitlines():
        if not raw.strip():
            continue
        try:
            line = jsonio.parse(raw)
        except orjson.JSONDecodeError:
            line = None
        if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
            raise malformed(provider)
        lines.append(line)
    return lines


# -- pure rules -------------------------------------------------------------------------------


def _parse(body: dict[str, Any]) -> CreateBatchRequest:
    """The create request, checked; custom ids must be unique to match results back."""
    try:
        batch = CreateBatchRequest.model_validate(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise InvalidRequest(f"{where}: {error['msg']}", param=where) from None
    seen: set[str] = set()
    for item in batch.requests:
        if item.custom_id in seen:
            raise InvalidRequest(f"Duplicate custom_id '{item.custom_id}'", param="requests")
        seen.add(item.custom_id)
    return batch


def _one_model(batch: CreateBatchRequest, names: set[str], model_key: str) -> None:
    """Refuse a line that names another model: a batch file runs one model, and the gateway
    would otherwise run that line on the batch's model without saying so."""
    for index, item in enumerate(batch.requests):
        named = item.body.get("model")
        if named is not None and named not in names:
            raise InvalidRequest(
                f"requests.{index} (custom_id '{item.custom_id}') names model {named!r}, but "
                f"this batch runs '{model_key}': a batch runs one model, so send one batch "
                "per model (or leave 'model' out of the lines)",
                param=f"requests.{index}.body.model",
                code="model_mismatch",
            )
        for name in (*CHAT.output_limits, "n"):  # what the hold is computed from
            value = item.body.get(name)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise InvalidRequest(
                    f"requests.{index}.body.{name} must be a positive integer",
                    param=f"requests.{index}.body.{name}",
                )


def _hold_until(batch: CreateBatchRequest, now: datetime) -> datetime:
    """When a batch's hold is given back if its results are never collected: the completion
    window plus HOLD_GRACE (an uncollected batch must not hold the budget forever)."""
    window = re.fullmatch(r"(\d{1,4})h", batch.completion_window)
    hours = int(window.group(1)) if window else 24
    return now + timedelta(hours=hours) + HOLD_GRACE


def _owns(caller: Caller, job: BatchJob) -> bool:
    """Whether an API key may see a batch: its own, or its user's."""
    if caller.is_master:
        return True
    if caller.user_id is not None and job.user_id == caller.user_id:
        return True
    return caller.key_id is not None and job.api_key_id == caller.key_id


def _item(line: dict[str, Any]) -> dict[str, Any]:
    """One result line as `{custom_id, result, error}`: the completion, or why it failed."""
    response = line.get("response")
    response = response if isinstance(response, dict) else {}
    code = response.get("status_code")
    body = response.get("body")
    if isinstance(code, int) and 200 <= code < 300 and isinstance(body, dict):
        return {"custom_id": line["custom_id"], "result": body, "error": None}
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = line.get("error")
    if not isinstance(error, dict):
        error = {}
    return {
        "custom_id": line["custom_id"],
        "result": None,
        "error": {
            "code": str(error.get("code") or error.get("type") or code or "batch_error"),
            "message": str(error.get("message") or "the request failed"),
        },
    }


def _settlement(job: BatchJob, price: Price | None, item: dict[str, Any]) -> Settlement:
    """The usage row of one result (no hold: nothing was reserved for a batch)."""
    result, error = item["result"], item["error"]
    used = consumption(result.get("usage")) if result else Consumption(requests=0)
    tokens_seen = used.prompt_tokens or used.completion_tokens
    status = "success" if result else "error"
    if used.invalid is not None:  # never billed from numbers that break the rules
        status, error = INVALID_USAGE, {"message": f"provider usage refused ({used.invalid})"}
    return Settlement(
        hold=NO_HOLD,
        user_id=job.user_id,
        api_key_id=job.api_key_id,
        model=job.model_key,
        provider=job.provider,
        endpoint=BATCHES.path,
        status=status,
        status_code=200,
        prompt_tokens=used.prompt_tokens if tokens_seen else None,
        completion_tokens=used.completion_tokens if tokens_seen else None,
        cache_read_tokens=used.cache_read_tokens or None,
        cost=None if price is None else price.cost(used),
        price_source=None if price is None else price.source,
        counts_toward_budget=job.counts_toward_budget,
        error_message=None if error is None else f"{item['custom_id']}: {error['message']}",
        request_id=job.batch_id[:64],
        id=uuid.uuid4().hex,
    )


# -- the database -----------------------------------------------------------------------------


def _reserve(
    runtime: Runtime,
    user_id: str,
    need: budget_rules.Need,
    now: datetime,
    expires_at: datetime,
) -> str:
    """Hold what a batch may use against the user's budget; the hold's id.

    Money is held whatever the budget (so that the user's `reserved` shows it); requests and
    tokens only where the budget limits them, as for a single request. 402 when the money
    does not fit, or nothing of it is left (a batch of an unpriced model holds 0), or the
    lines or their tokens are more than the period has left.
    """
    hold = f"batch:{uuid.uuid4().hex}"
    with runtime.sessions.begin() as session:
        user, budget = _current(session, user_id, now)
        if user is None or user.deleted_at is not None:
            raise NotFound(f"User '{user_id}' not found")
        if budget is None:
            return _hold(session, hold, user_id, Held(need.amount), now, expires_at)
        until = user.next_budget_reset_at
        left = budget_rules.Remaining(
            None if budget.max_budget is None else budget.max_budget - user.spend - user.reserved,
            None
            if budget.request_limit is None
            else budget.request_limit - user.requests - user.reserved_requests,
            None
            if budget.token_limit is None
            else budget.token_limit - user.tokens - user.reserved_tokens,
        )
        money, limit = left.money, budget.max_budget
        # Nothing left refuses even a batch that holds 0 (an unpriced model's).
        if money is not None and limit is not None and (need.amount > money or money <= 0):
            raise refusal(user_id, need.amount, money, limit, until)
        # Requests and tokens: the rule every request is admitted by.
        verdict = budget_rules.judge(need, left, clamp=False)
        if verdict.refused == "requests" and budget.request_limit is not None:
            raise over_limit(
                user_id, "requests", need.requests, left.requests or 0, budget.request_limit, until
            )
        if verdict.refused == "tokens" and budget.token_limit is not None:
            raise over_limit(
                user_id, "tokens", need.tokens, left.tokens or 0, budget.token_limit, until
            )
        held = Held(need.amount, verdict.requests, verdict.tokens)
        return _hold(session, hold, user_id, held, now, expires_at)


def _current(session: Session, user_id: str, now: datetime) -> tuple[User | None, Budget | None]:
    """The user's row, locked for this transaction, and their budget (None without one),
    the budget's period rolled over first if it has ended."""
    user = session.scalars(select(User).where(User.user_id == user_id).with_for_update()).first()
    budget = session.get(Budget, user.budget_id) if user is not None and user.budget_id else None
    if user is not None and budget is not None:
        budget_rules.roll_over(
            session, user, budget.budget_duration_sec, now, budget.reset_alignment
        )
    return user, budget


def _hold(
    session: Session, hold: str, user_id: str, held: Held, now: datetime, expires_at: datetime
) -> str:
    session.execute(
        update(User)
        .where(User.user_id == user_id)
        .values(
            reserved=User.reserved + held.amount,
            reserved_requests=User.reserved_requests + held.requests,
            reserved_tokens=User.reserved_tokens + held.tokens,
        )
    )
    session.add(
        Reservation(
            id=hold,
            user_id=user_id,
            amount=held.amount,
            requests=held.requests,
            tokens=held.tokens,
            instance_id=HOLDER,
            created_at=now,
            expires_at=expires_at,
        )
    )
    return hold


def _release(conn: Connection, hold: str) -> None:
    """Give a batch's hold back, unless it expired and was given back already."""
    rows = conn.execute(
        delete(Reservation)
        .where(Reservation.id == hold)
        .returning(
            Reservation.user_id, Reservation.amount, Reservation.requests, Reservation.tokens
        )
    ).all()
    for user_id, amount, requests, tokens in rows:
        if user_id is not None and (amount or requests or tokens):
            conn.execute(
                update(User)
                .where(User.user_id == user_id)
                .values(
                    reserved=User.reserved - amount,
                    reserved_requests=User.reserved_requests - (requests or 0),
                    reserved_tokens=User.reserved_tokens - (tokens or 0),
                )
            )


def _release_only(runtime: Runtime, hold: str) -> None:
    with runtime.engine.begin() as conn:
        _release(conn, hold)


def _insert(runtime: Runtime, job: BatchJob) -> None:
    with runtime.sessions.begin() as session:
        session.add(job)


def _load(runtime: Runtime, provider: str, batch_ids: list[str]) -> list[BatchJob]:
    if not batch_ids:
        return []
    with runtime.reads() as session:
        return list(
            session.scalars(
                select(BatchJob).where(
                    BatchJob.provider == provider, BatchJob.batch_id.in_(batch_ids)
                )
            )
        )


async def _job(
    runtime: Runtime, caller: Caller, provider: Provider, batch_id: str
) -> BatchJob | None:
    """Our record of a batch; an API key gets 404 for batches that are not its own."""
    found = await to_thread.run_sync(_load, runtime, provider.name, [batch_id])
    job = found[0] if found else None
    if not caller.is_master and (job is None or not _owns(caller, job)):
        raise NotFound(f"Batch '{batch_id}' not found")
    return job


def _roll_over(conn: Connection, user_id: str, now: datetime) -> None:
    """Start the user's next budget period first if the last one ended while the batch ran:
    its use then counts in the period it is collected in. Added to the ended period, it
    would be wiped by the next roll-over and counted in none."""
    with Session(bind=conn) as session:  # inside conn's transaction
        _current(session, user_id, now)
        session.flush()


def _claim(runtime: Runtime, job: BatchJob, settlements: list[Settlement]) -> bool:
    """Mark the batch metered, write its usage rows and spend and give its hold back, in one
    transaction; True only for the one caller that did it."""
    with runtime.engine.begin() as conn:
        claimed = conn.execute(
            update(BatchJob)
            .where(
                BatchJob.provider == job.provider,
                BatchJob.batch_id == job.batch_id,
                BatchJob.metered_at.is_(None),
            )
            .values(metered_at=utcnow())
        )
        if claimed.rowcount != 1:
            return False
        now = utcnow()
        if settlements and job.user_id is not None and job.counts_toward_budget:
            _roll_over(conn, job.user_id, now)
        if settlements:
            settle_all(conn, settlements, HOLDER, now)
        if job.hold_id is not None:
            _release(conn, job.hold_id)
        return True

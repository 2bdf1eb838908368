"""Batches through a provider's OpenAI batch API: JSONL upload, create, status, results.

A batch is created from `{model, requests: [{custom_id, body}], completion_window, metadata}`:
the gateway writes the JSONL file (one chat completion per line, the provider's model name
in each body), uploads it to the provider's /files (purpose "batch"), creates the batch and
answers with the provider's batch object unchanged; its `id` is the provider's, and every
later call names the provider with `?provider=`. The `batches` table remembers who created
each batch, which model it runs, and whether its results were metered.

Money: creating a batch only checks that the user's budget is not exhausted. Nothing is
reserved, since a batch runs for hours and its cost is unknown until it ends. Collecting the
results (once the batch has ended) records one usage row per result, at the model's price
when the batch was created, and adds the cost to the user's spend: once per batch, however
often the results are fetched.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from anyio import to_thread
from pydantic import ValidationError
from sqlalchemy import select, update

from otari_server.auth import Caller
from otari_server.batch_tables import BatchJob
from otari_server.endpoints import BATCHES
from otari_server.errors import (
    BudgetExceeded,
    Conflict,
    InvalidRequest,
    NotFound,
)
from otari_server.ledger import NO_HOLD, Settlement
from otari_server.pricing import Consumption, Price
from otari_server.providers import Provider
from otari_server.proxy import billed_user, consumption, route, unpriced
from otari_server.runtime import Runtime
from otari_server.tables import Budget, User, utcnow
from otari_server.upstream import malformed, parse_upstream, read_upstream
from otari_server.wire import CreateBatchRequest

# What every line of a batch file asks for; the only endpoint batches run here.
LINE_URL = "/v1/chat/completions"
# Once a batch is in one of these states its output and error files are final.
ENDED = frozenset({"completed", "failed", "expired", "cancelled"})


async def create(runtime: Runtime, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    """Upload the batch file, create the batch at the provider, remember who pays for it."""
    batch = _parse(body)
    provider, upstream_model, model_key = route(runtime, caller, batch.model)
    _offers_batches(provider)
    user_id = billed_user(caller, body.get("user"))
    if runtime.settings.require_pricing and await runtime.prices.at(model_key, utcnow()) is None:
        raise unpriced(model_key)
    counts = not caller.exclude_from_budget
    if counts and user_id is not None and (caller.is_master or caller.budgeted):
        await to_thread.run_sync(_check_budget, runtime, user_id)
    created = await _submit(runtime, provider, batch, upstream_model)
    job = BatchJob(provider=provider.name, batch_id=created["id"], model_key=model_key,
                   user_id=user_id, api_key_id=caller.key_id, counts_toward_budget=counts,
                   request_count=len(batch.requests), created_at=utcnow())
    await to_thread.run_sync(_insert, runtime, job)
    return created


async def list_batches(runtime: Runtime, caller: Caller, provider_name: str,
                       after: str | None, limit: int | None) -> dict[str, Any]:
    """The provider's list of batches; an API key sees only the batches it may see."""
    provider = _provider(runtime, provider_name)
    params = {name: str(value) for name, value in (("after", after), ("limit", limit))
              if value is not None}
    page = await _json(provider, await runtime.upstream.get(provider, "/batches", params))
    data = page.get("data")
    if not isinstance(data, list):
        raise malformed(provider)
    if not caller.is_master:
        ids = [item["id"] for item in data if isinstance(item, dict)
               and isinstance(item.get("id"), str)]
        jobs = await to_thread.run_sync(_load, runtime, provider.name, ids)
        visible = {job.batch_id for job in jobs if _owns(caller, job)}
        page["data"] = [item for item in data if isinstance(item, dict)
                        and item.get("id") in visible]
    return page


async def retrieve(runtime: Runtime, caller: Caller, provider_name: str,
                   batch_id: str) -> dict[str, Any]:
    """The provider's batch object."""
    provider = _provider(runtime, provider_name)
    await _job(runtime, caller, provider, batch_id)
    return await _fetch(runtime, provider, batch_id)


async def cancel(runtime: Runtime, caller: Caller, provider_name: str,
                 batch_id: str) -> dict[str, Any]:
    """Ask the provider to cancel; results it finished before are still collected later."""
    provider = _provider(runtime, provider_name)
    await _job(runtime, caller, provider, batch_id)
    response = await runtime.upstream.post(provider, f"/batches/{quote(batch_id, safe='')}"
                                                     "/cancel", {})
    return await _json(provider, response)


async def results(runtime: Runtime, caller: Caller, provider_name: str,
                  batch_id: str) -> dict[str, Any]:
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
    if await to_thread.run_sync(_claim, runtime, job):
        price = await runtime.prices.at(job.model_key, job.created_at)
        for item in items:
            runtime.ledger.record(_settlement(job, price, item))
    return {"batch_id": batch_id, "status": status, "results": items}


# -- the provider -----------------------------------------------------------------------------


def jsonl(batch: CreateBatchRequest, upstream_model: str) -> bytes:
    """The batch input file: one chat completion request per line."""
    return b"".join(orjson.dumps({"custom_id": item.custom_id, "method": "POST",
                                  "url": LINE_URL, "body": {**item.body, "model": upstream_model}})
                    + b"\n" for item in batch.requests)


async def _submit(runtime: Runtime, provider: Provider, batch: CreateBatchRequest,
                  upstream_model: str) -> dict[str, Any]:
    """Upload the input file, then create the batch from it; the provider's batch object."""
    form = aiohttp.FormData()
    form.add_field("purpose", "batch")
    form.add_field("file", jsonl(batch, upstream_model), filename="otari-batch.jsonl",
                   content_type="application/jsonl")
    uploaded = await _json(provider, await runtime.upstream.post_form(provider, "/files", form))
    if not isinstance(uploaded.get("id"), str):
        raise malformed(provider)
    request: dict[str, Any] = {"input_file_id": uploaded["id"], "endpoint": LINE_URL,
                               "completion_window": batch.completion_window}
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
        raise InvalidRequest(f"Unknown provider '{name}'; configured providers: {known}",
                             param="provider", code="unknown_provider")
    _offers_batches(provider)
    return provider


def _offers_batches(provider: Provider) -> None:
    if provider.type != "openai":
        raise InvalidRequest(
            f"Provider '{provider.name}' ({provider.type}) does not offer the OpenAI batch API",
            param="provider", code="unsupported_endpoint")


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
            line = orjson.loads(raw)
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
    return {"custom_id": line["custom_id"], "result": None, "error": {
        "code": str(error.get("code") or error.get("type") or code or "batch_error"),
        "message": str(error.get("message") or "the request failed")}}


def _settlement(job: BatchJob, price: Price | None, item: dict[str, Any]) -> Settlement:
    """The usage row of one result (no hold: nothing was reserved for a batch)."""
    result, error = item["result"], item["error"]
    used = consumption(result.get("usage")) if result else Consumption(requests=0)
    tokens_seen = used.prompt_tokens or used.completion_tokens
    return Settlement(
        hold=NO_HOLD, user_id=job.user_id, api_key_id=job.api_key_id, model=job.model_key,
        provider=job.provider, endpoint=BATCHES.path,
        status="success" if result else "error",
        prompt_tokens=used.prompt_tokens if tokens_seen else None,
        completion_tokens=used.completion_tokens if tokens_seen else None,
        cache_read_tokens=used.cache_read_tokens or None,
        cost=None if price is None else price.cost(used),
        counts_toward_budget=job.counts_toward_budget,
        error_message=None if error is None else f"{item['custom_id']}: {error['message']}",
        request_id=job.batch_id[:64], id=uuid.uuid4().hex)


# -- the database -----------------------------------------------------------------------------


def _check_budget(runtime: Runtime, user_id: str) -> None:
    """Refuse a new batch when the user's budget has nothing left."""
    now = utcnow()
    with runtime.reads() as session:
        row = session.execute(
            select(User.spend, User.reserved, User.deleted_at, User.next_budget_reset_at,
                   Budget.max_budget)
            .outerjoin(Budget, User.budget_id == Budget.budget_id)
            .where(User.user_id == user_id)).first()
    if row is None or row.deleted_at is not None:
        raise NotFound(f"User '{user_id}' not found")
    if row.max_budget is None:
        return
    renewed = row.next_budget_reset_at is not None and now >= row.next_budget_reset_at
    available = row.max_budget - (Decimal(0) if renewed else row.spend) - row.reserved
    if available <= 0:
        until = f" until {row.next_budget_reset_at.isoformat()}" if row.next_budget_reset_at \
            else ""
        raise BudgetExceeded(f"Budget exhausted for user '{user_id}': nothing of "
                             f"{row.max_budget.normalize():f} remains{until}")


def _insert(runtime: Runtime, job: BatchJob) -> None:
    with runtime.sessions.begin() as session:
        session.add(job)


def _load(runtime: Runtime, provider: str, batch_ids: list[str]) -> list[BatchJob]:
    if not batch_ids:
        return []
    with runtime.reads() as session:
        return list(session.scalars(select(BatchJob).where(
            BatchJob.provider == provider, BatchJob.batch_id.in_(batch_ids))))


async def _job(runtime: Runtime, caller: Caller, provider: Provider,
               batch_id: str) -> BatchJob | None:
    """Our record of a batch; an API key gets 404 for batches that are not its own."""
    found = await to_thread.run_sync(_load, runtime, provider.name, [batch_id])
    job = found[0] if found else None
    if not caller.is_master and (job is None or not _owns(caller, job)):
        raise NotFound(f"Batch '{batch_id}' not found")
    return job


def _claim(runtime: Runtime, job: BatchJob) -> bool:
    """Mark the batch metered; True only for the one caller that did it."""
    with runtime.engine.begin() as conn:
        claimed = conn.execute(
            update(BatchJob)
            .where(BatchJob.provider == job.provider, BatchJob.batch_id == job.batch_id,
                   BatchJob.metered_at.is_(None))
            .values(metered_at=utcnow()))
        return claimed.rowcount == 1


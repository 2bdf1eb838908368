"""Stored responses: GET/DELETE /v1/responses/{id}, its input_items and cancel.

A response created through `POST /v1/responses` lives with the provider that made it. The
gateway records, at creation, which provider that was and whom it bills (`stored_responses`
table), and sends every later call about the response there. An API key sees only the
responses of its own user (or, without a user, its own); the others are 404, as is any id
the gateway did not create. Responses the gateway made itself by translation (Anthropic-type
providers) were never stored anywhere: they answer 404 with a message that says so.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from anyio import to_thread
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from starlette.responses import Response

from otari_server.access.auth import Caller
from otari_server.errors import InvalidRequest, NotFound
from otari_server.generation.proxy import JSON_HEADERS, Call
from otari_server.providers import Provider
from otari_server.providers.upstream import parse_upstream, read_upstream
from otari_server.runtime import Runtime
from otari_server.storage.tables import StoredResponse, utcnow

log = logging.getLogger("otari.responses")

# Query parameters passed on to the provider, per operation (the OpenAI Responses API's).
RETRIEVE_PARAMS = ("include", "include[]", "starting_after", "include_obfuscation")
INPUT_ITEMS_PARAMS = ("after", "before", "limit", "order", "include", "include[]")


async def remember(call: Call, response_id: object, *, translated: bool) -> None:
    """Record who made response `response_id` and whom it bills (ids that are not strings,
    or that another response already holds, are not recorded: nothing could route them)."""
    if not isinstance(response_id, str) or not response_id or len(response_id) > 255:
        return
    row = StoredResponse(
        response_id=response_id,
        provider=call.provider.name,
        model_key=call.model_key,
        user_id=call.user_id,
        api_key_id=call.key_id,
        translated=translated,
        created_at=utcnow(),
    )
    await to_thread.run_sync(_insert, call.runtime, row)


def _insert(runtime: Runtime, row: StoredResponse) -> None:
    try:
        with runtime.sessions.begin() as session:
            session.add(row)
    except IntegrityError:
        pass  # the id is already routed; a provider reusing ids keeps its first owner
    except SQLAlchemyError as exc:
        # The answer is paid for and on its way: losing the route costs less than losing it.
        log.warning(
            "could not record response %s (%s): it cannot be fetched later",
            row.response_id,
            type(exc).__name__,
        )


async def retrieve(
    runtime: Runtime, caller: Caller, response_id: str, query: list[tuple[str, str]]
) -> Response:
    """GET /v1/responses/{id} from the provider that created it."""
    provider = await _route(runtime, caller, response_id)
    _no_stream(query)
    params = [(k, v) for k, v in query if k in RETRIEVE_PARAMS]
    return await _pass(
        provider, await runtime.upstream.get(provider, _path(response_id), _multi(params))
    )


async def input_items(
    runtime: Runtime, caller: Caller, response_id: str, query: list[tuple[str, str]]
) -> Response:
    """GET /v1/responses/{id}/input_items from the provider that created it."""
    provider = await _route(runtime, caller, response_id)
    params = [(k, v) for k, v in query if k in INPUT_ITEMS_PARAMS]
    return await _pass(
        provider,
        await runtime.upstream.get(provider, _path(response_id) + "/input_items", _multi(params)),
    )


async def cancel(runtime: Runtime, caller: Caller, response_id: str) -> Response:
    """POST /v1/responses/{id}/cancel at the provider that created it."""
    provider = await _route(runtime, caller, response_id)
    return await _pass(
        provider, await runtime.upstream.post(provider, _path(response_id) + "/cancel", {})
    )


async def remove(runtime: Runtime, caller: Caller, response_id: str) -> Response:
    """DELETE /v1/responses/{id} at the provider; the gateway forgets the id once it is gone."""
    provider = await _route(runtime, caller, response_id)
    response = await runtime.upstream.delete(provider, _path(response_id))
    content = await read_upstream(provider, response)
    parse_upstream(provider, content)
    await to_thread.run_sync(_forget, runtime, response_id)
    return Response(content, status_code=response.status, headers=JSON_HEADERS)


async def check_previous(
    runtime: Runtime, caller: Caller, provider: Provider, body: dict[str, Any]
) -> None:
    """Refuse a `previous_response_id` the caller may not reach (404, param
    previous_response_id), as GET would: every user's responses sit behind the same provider
    key, so the provider itself would hand another user's conversation to the caller.
    Only for providers that keep responses (the others refuse the field themselves)."""
    previous = body.get("previous_response_id")
    if provider.type != "openai" or not isinstance(previous, str):
        return
    row = await to_thread.run_sync(_load, runtime, previous)
    if row is None or not _owns(caller, row):
        raise NotFound(f"Response '{previous}' not found", param="previous_response_id")


async def _pass(provider: Provider, response: Any) -> Response:
    content = await read_upstream(provider, response)  # raises the provider's refusal
    parse_upstream(provider, content)  # a JSON object, or 502
    return Response(content, status_code=response.status, headers=JSON_HEADERS)


async def _route(runtime: Runtime, caller: Caller, response_id: str) -> Provider:
    """The provider that keeps `response_id`, if the caller may reach it; 404 otherwise."""
    row = await to_thread.run_sync(_load, runtime, response_id)
    if row is None or not _owns(caller, row):
        raise NotFound(f"Response '{response_id}' not found")
    provider = runtime.providers.get(row.provider)
    if row.translated:
        kind = f" ({provider.type})" if provider is not None else ""
        raise NotFound(
            f"Response '{response_id}' was made by otari from provider '{row.provider}'"
            f"{kind}, which has no Responses API and stores nothing; otari does not store it "
            "either, so it cannot be retrieved, listed, deleted or cancelled. Send the "
            "earlier turns as `input` instead of `previous_response_id`."
        )
    if provider is None:
        raise NotFound(
            f"Response '{response_id}' was created by provider '{row.provider}', "
            "which is no longer configured"
        )
    return provider


def _owns(caller: Caller, row: StoredResponse) -> bool:
    """An API key reaches the responses of its user, or (keys without one) its own."""
    if caller.is_master:
        return True
    if caller.user_id is not None:
        return row.user_id == caller.user_id
    return caller.key_id is not None and row.api_key_id == caller.key_id


def _no_stream(query: list[tuple[str, str]]) -> None:
    if any(k == "stream" and v.lower() not in ("false", "0") for k, v in query):
        raise InvalidRequest("Streaming a stored response is not supported", param="stream")


def _path(response_id: str) -> str:
    return f"/responses/{quote(response_id, safe='')}"


def _multi(params: list[tuple[str, str]]) -> Any:
    # aiohttp takes a list of pairs for repeated keys (include[]=a&include[]=b).
    return params or None


def _load(runtime: Runtime, response_id: str) -> StoredResponse | None:
    with runtime.sessions() as session:
        return session.get(StoredResponse, response_id)


def _forget(runtime: Runtime, response_id: str) -> None:
    with runtime.sessions.begin() as session:
        session.execute(delete(StoredResponse).where(StoredResponse.response_id == response_id))

"""Key management: create (secret shown once), list, get, update, rotate, revoke."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy import select

from otari_server.access import minting
from otari_server.access.minting import REVOKED_MARK, create_key, is_revoked, key_info, rotate_key
from otari_server.api.paging import Limit, Skip
from otari_server.api.schemas import (
    CreateKeyRequest,
    CreateKeyResponse,
    KeyInfo,
    RotateKeyRequest,
    RotateKeyResponse,
    UpdateKeyRequest,
)
from otari_server.deps import ReadSessionDep, RuntimeDep, SessionDep, require_master
from otari_server.errors import NotFound
from otari_server.jsonio import ExactJSONResponse, ExactRoute
from otari_server.storage.tables import APIKey, User, utcnow

router = APIRouter(
    prefix="/v1/keys", tags=["keys"], route_class=ExactRoute, dependencies=[Depends(require_master)]
)


def _get(session: SessionDep, key_id: str) -> APIKey:
    row = session.get(APIKey, key_id)
    if row is None or is_revoked(row):  # a deleted key is gone for clients
        raise NotFound(f"Key '{key_id}' not found")
    return row


@router.post("", response_model=CreateKeyResponse)
def create(body: CreateKeyRequest, session: SessionDep, runtime: RuntimeDep) -> Response:
    """Create an API key; the response is the only place its secret appears."""
    if body.user_id is not None:
        user = session.get(User, body.user_id)
        if user is None or user.deleted_at is not None:
            raise NotFound(f"User '{body.user_id}' not found")
    created = create_key(
        session,
        key_name=body.key_name,
        user_id=body.user_id,
        expires_at=body.expires_at,
        metadata=body.metadata,
        rpm_limit=body.rpm_limit,
        tpm_limit=body.tpm_limit,
        allowed_models=body.allowed_models,
        exclude_from_budget=body.exclude_from_budget,
    )
    session.commit()
    runtime.changed()
    return ExactJSONResponse(created)


@router.get("", response_model=list[KeyInfo])
def list_keys(
    session: ReadSessionDep,
    skip: Skip = 0,
    limit: Limit = 100,
    include_revoked: bool = Query(False, description="Also list keys revoked by DELETE"),
) -> Response:
    """List keys, oldest first; revoked keys only when asked."""
    query = select(APIKey)
    if not include_revoked:
        query = query.where(APIKey.key_hash.not_like(f"{REVOKED_MARK}%"))
    rows = session.scalars(query.order_by(APIKey.created_at, APIKey.id).offset(skip).limit(limit))
    return ExactJSONResponse([key_info(row) for row in rows])


@router.get("/{key_id}", response_model=KeyInfo)
def get(key_id: str, session: ReadSessionDep) -> Response:
    """One key."""
    return ExactJSONResponse(key_info(_get(session, key_id)))


@router.patch("/{key_id}", response_model=KeyInfo)
def patch(
    key_id: str, body: UpdateKeyRequest, session: SessionDep, runtime: RuntimeDep
) -> Response:
    """Change only the fields sent (name, active status, expiration, metadata, limits)."""
    row = _get(session, key_id)
    sent = body.model_dump(exclude_unset=True)
    for name in ("key_name", "expires_at", "rpm_limit", "tpm_limit", "allowed_models"):
        if name in sent:
            setattr(row, name, sent[name])
    for flag in ("is_active", "exclude_from_budget"):
        if sent.get(flag) is not None:
            setattr(row, flag, sent[flag])
    if "metadata" in sent:
        row.metadata_ = sent["metadata"] or {}
    session.commit()
    runtime.changed()
    return ExactJSONResponse(key_info(row))


@router.post("/{key_id}/rotate", response_model=RotateKeyResponse)
def rotate(
    key_id: str, session: SessionDep, runtime: RuntimeDep, body: RotateKeyRequest | None = None
) -> Response:
    """Replace the key's secret; the response is the only place the new one appears.

    The old secret works until grace_period_sec (default 0) has passed: at once on this
    instance, and on others within auth_cache_ttl of that. Raises 404 for an unknown key.
    """
    row = _get(session, key_id)
    # Lock the row so two concurrent rotations cannot both keep "their" old secret.
    session.refresh(row, with_for_update=True)
    if is_revoked(row):  # revoked meanwhile: it must never authenticate again
        raise NotFound(f"Key '{key_id}' not found")
    grace = body.grace_period_sec if body is not None else 0
    rotated = rotate_key(row, grace, utcnow())
    session.commit()
    runtime.changed()
    return ExactJSONResponse(rotated)


@router.delete("/{key_id}", status_code=204)
def revoke(key_id: str, session: SessionDep, runtime: RuntimeDep) -> Response:
    """Revoke a key: it stops working at once and is gone from GET (404) and from the list
    (unless include_revoked=true); its usage rows keep their api_key_id."""
    minting.revoke(_get(session, key_id))
    session.commit()
    runtime.changed()
    return Response(status_code=204)

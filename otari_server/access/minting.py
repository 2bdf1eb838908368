"""API keys: minting (secret shown once, hash stored) and their wire form."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from otari_server.access.auth import generate_key, hash_token
from otari_server.api.schemas import CreateKeyResponse, KeyInfo, RotateKeyResponse
from otari_server.storage.tables import APIKey


def create_key(
    session: Session,
    *,
    key_name: str | None,
    user_id: str | None,
    expires_at: datetime | None,
    metadata: dict[str, Any],
    rpm_limit: int | None = None,
    tpm_limit: int | None = None,
    allowed_models: list[str] | None = None,
    exclude_from_budget: bool = False,
) -> CreateKeyResponse:
    """Insert a new key and return it with its plaintext secret (the only time it exists)."""
    secret = generate_key()
    row = APIKey(
        id=str(uuid.uuid4()),
        key_hash=hash_token(secret),
        key_prefix=secret[:7],
        key_name=key_name,
        user_id=user_id,
        expires_at=expires_at,
        metadata_=metadata,
        is_active=True,
        rpm_limit=rpm_limit,
        tpm_limit=tpm_limit,
        allowed_models=allowed_models,
        exclude_from_budget=exclude_from_budget,
    )
    session.add(row)
    session.flush()
    return CreateKeyResponse(**key_info(row).model_dump(), key=secret)


# A revoked key's hash is replaced by this mark and random hex: no secret hashes to it, so
# it can never authenticate or be re-enabled, and `key_hash LIKE '~%'` finds revoked keys
# without a column of their own. Its id, name and usage rows (by api_key_id) stay.
REVOKED_MARK = "~"


def revoke(row: APIKey) -> None:
    """Revoke a key for good: inactive, its hash gone (see REVOKED_MARK)."""
    row.is_active = False
    row.key_hash = REVOKED_MARK + secrets.token_hex(32)[1:]
    row.previous_key_hash = None  # a secret in a rotation's grace period goes too
    row.previous_key_expires_at = None


def is_revoked(row: APIKey) -> bool:
    """Whether DELETE /v1/keys/{id} revoked the key."""
    return row.key_hash.startswith(REVOKED_MARK)


def rotate_key(row: APIKey, grace_period_sec: int, now: datetime) -> RotateKeyResponse:
    """Give the key a new secret (same id, name, user, limits, usage); return it once.

    The old secret stays valid until now + grace_period_sec (0: not at all). Only the secret
    just replaced gets a grace period: rotating again ends an earlier one at once.
    """
    secret = generate_key()
    if grace_period_sec > 0:
        row.previous_key_hash = row.key_hash
        row.previous_key_expires_at = now + timedelta(seconds=grace_period_sec)
    else:
        row.previous_key_hash = None
        row.previous_key_expires_at = None
    row.key_hash = hash_token(secret)
    row.key_prefix = secret[:7]
    return RotateKeyResponse(
        **key_info(row).model_dump(),
        key=secret,
        previous_key_expires_at=row.previous_key_expires_at,
    )


def key_info(row: APIKey) -> KeyInfo:
    """The public view of a key row."""
    return KeyInfo(
        id=row.id,
        key_name=row.key_name,
        user_id=row.user_id,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        expires_at=row.expires_at,
        is_active=row.is_active,
        metadata=row.metadata_ or {},
        key_prefix=row.key_prefix,
        spend=row.spend,
        rpm_limit=row.rpm_limit,
        tpm_limit=row.tpm_limit,
        allowed_models=row.allowed_models,
        exclude_from_budget=bool(row.exclude_from_budget),
    )

"""Who is calling: token from the accepted headers, hashed lookup, constant-time master compare."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from otari_server.accounting.rate_limits import Limit
from otari_server.errors import AuthenticationFailed
from otari_server.storage.flights import ReadCache
from otari_server.storage.tables import APIKey, User, utcnow

KEY_PREFIX = "gw-"
# Checked in this order; the first header present wins.
_TOKEN_HEADERS = ("otari-key", "anyllm-key", "x-anyllm-key", "authorization", "x-api-key")


def generate_key() -> str:
    """A new API key secret: gw- plus 256 bits from the OS CSPRNG."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """SHA-256 hex of a token; what we store and look up."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Credential:
    """The token a request presents and the header it came from.

    `token` is None when no usable header is present; `rejected` then names a header that
    was present but unusable (an Authorization header in another scheme than Bearer), so
    the 401 can say which one.
    """

    token: str | None
    header: str | None = None
    rejected: str | None = None


def credential(headers: Mapping[str, str]) -> Credential:
    """The credential of a request, with an optional 'Bearer ' prefix removed.

    Headers are checked in a fixed order and the first usable one wins. An Authorization
    header in another scheme (Basic, set by a proxy or a browser) is skipped, so it never
    hides a valid x-api-key behind it.
    """
    rejected = None
    for name in _TOKEN_HEADERS:
        value = headers.get(name)
        if value is None:
            continue
        value = value.strip()
        scheme, _, rest = value.partition(" ")
        if rest and scheme.lower() == "bearer":
            value = rest.strip()
        elif name == "authorization":
            rejected = rejected or name  # Authorization must use the Bearer scheme
            continue
        if value:
            return Credential(value, name)
        rejected = rejected or name
    return Credential(None, rejected=rejected)


def token_from(headers: Mapping[str, str]) -> str | None:
    """The token of credential(headers), or None."""
    return credential(headers).token


@dataclass(frozen=True)
class Caller:
    """The authenticated caller of one request."""

    is_master: bool
    key_id: str | None = None
    user_id: str | None = None
    key_name: str | None = None
    # The key's user has a budget, so requests must reserve against it before the call.
    budgeted: bool = False
    # Requests are metered but never gated by, or charged to, the budget.
    exclude_from_budget: bool = False
    # Model allow-lists of the key and of its user; a model must pass every one.
    allowed_models: tuple[tuple[str, ...], ...] = ()
    # Requests- and tokens-per-minute limits of the key and of its user.
    limits: tuple[Limit, ...] = ()

    def may_use(self, model_key: str) -> bool:
        """Whether every allow-list admits `model_key` ('provider:*', 'prefix*' match too)."""
        return all(
            any(_matches(pattern, model_key) for pattern in patterns)
            for patterns in self.allowed_models
        )


def _matches(pattern: str, model_key: str) -> bool:
    if pattern.endswith("*"):
        return model_key.startswith(pattern[:-1])
    return pattern == model_key


MASTER = Caller(is_master=True)


@dataclass(frozen=True)
class KeySnapshot:
    """What authentication needs to know about a key and its user, cached in memory."""

    key_id: str
    key_name: str | None
    is_active: bool
    expires_at: datetime | None
    user_id: str | None
    user_blocked: bool
    user_deleted: bool
    user_budget_id: str | None = None
    exclude_from_budget: bool = False
    allowed_models: tuple[tuple[str, ...], ...] = ()
    limits: tuple[Limit, ...] = ()


def load_snapshot(session: Session, token_hash: str) -> KeySnapshot | None:
    """One query: the key with its user, or None when the hash is unknown.

    A secret replaced by a rotation still finds its key during the grace period; its
    snapshot expires when the grace period ends (or earlier, with the key).
    """
    row = session.execute(
        select(APIKey, User)
        .outerjoin(User, APIKey.user_id == User.user_id)
        .where(or_(APIKey.key_hash == token_hash, APIKey.previous_key_hash == token_hash))
    ).first()
    if row is None:
        return None
    key, user = row
    expires_at = key.expires_at
    if key.key_hash != token_hash:
        # Both are set together by a rotation; without an end the old secret is over.
        grace_end = key.previous_key_expires_at or datetime.min.replace(tzinfo=UTC)
        expires_at = grace_end if expires_at is None else min(expires_at, grace_end)
    return KeySnapshot(
        key_id=key.id,
        key_name=key.key_name,
        is_active=key.is_active,
        expires_at=expires_at,
        user_id=key.user_id,
        user_blocked=bool(user and user.blocked),
        user_deleted=bool(user and user.deleted_at is not None),
        user_budget_id=user.budget_id if user else None,
        exclude_from_budget=bool(key.exclude_from_budget),
        allowed_models=tuple(
            tuple(models)
            for models in (key.allowed_models, user.allowed_models if user else None)
            if models is not None
        ),
        limits=tuple(
            limit
            for limit in (
                Limit(f"key:{key.id}", key.rpm_limit, key.tpm_limit),
                Limit(f"user:{user.user_id}", user.rpm_limit, user.tpm_limit) if user else None,
            )
            if limit is not None and (limit.rpm is not None or limit.tpm is not None)
        ),
    )


def check(snapshot: KeySnapshot | None, now: datetime, header: str | None = None) -> Caller:
    """Turn a key snapshot into a Caller, or refuse with a message that says why.

    `header` names where the key came from, so an unknown key's 401 says which header held it.
    """
    if snapshot is None:
        where = f" (in the {header} header)" if header else ""
        raise AuthenticationFailed(f"Invalid API key{where}")
    if not snapshot.is_active:
        raise AuthenticationFailed("API key is inactive", code="key_inactive")
    if snapshot.expires_at is not None and snapshot.expires_at <= now:
        raise AuthenticationFailed("API key has expired", code="key_expired")
    if snapshot.user_deleted:
        raise AuthenticationFailed("The key's user has been deleted", code="user_deleted")
    if snapshot.user_blocked:
        raise AuthenticationFailed("The key's user is blocked", code="user_blocked")
    return Caller(
        is_master=False,
        key_id=snapshot.key_id,
        user_id=snapshot.user_id,
        key_name=snapshot.key_name,
        budgeted=snapshot.user_budget_id is not None,
        exclude_from_budget=snapshot.exclude_from_budget,
        allowed_models=snapshot.allowed_models,
        limits=snapshot.limits,
    )


class MasterKey:
    """The master key, kept only as a digest and compared in constant time."""

    def __init__(self, key: str) -> None:
        self._digest = hashlib.sha256(key.encode("utf-8")).digest()

    def matches(self, token: str) -> bool:
        """Constant-time comparison of a presented token with the master key."""
        presented = hashlib.sha256(token.encode("utf-8")).digest()
        return hmac.compare_digest(presented, self._digest)


class KeyCache(ReadCache[str, KeySnapshot | None]):
    """Key snapshots by token hash, kept for `ttl` seconds (storage/flights.py: one database
    read per key at a time, valid keys refreshed ahead of their expiry).

    Mutations through this instance's management API clear it at once; other instances see
    a change within `ttl`, which bounds how long a revoked key keeps working elsewhere.
    Unknown tokens are remembered apart, in a smaller cache of their own: a flood of random
    bearer tokens evicts other random tokens, never a valid key.
    """

    def __init__(
        self,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
        known: int = 100_000,
        unknown: int = 10_000,
    ) -> None:
        super().__init__(ttl, known, unknown, clock)

    def get(self, token_hash: str) -> tuple[bool, KeySnapshot | None]:
        """(hit, snapshot); a hit may be a cached 'unknown key' (None)."""
        hit, snapshot, _ = self.lookup(token_hash)
        return hit, snapshot


class KeyActivity:
    """last_used_at, written at most once per `interval` seconds per key."""

    def __init__(self, interval: float = 60.0) -> None:
        self._interval = interval
        self._written: dict[str, float] = {}
        self.pending: dict[str, datetime] = {}

    def touch(self, key_id: str) -> None:
        """Note a use of the key; cheap enough for every request."""
        now = time.monotonic()
        last = self._written.get(key_id)
        if last is None or now - last >= self._interval:
            self._written[key_id] = now
            self.pending[key_id] = utcnow()

    def drain(self) -> dict[str, datetime]:
        """Take the uses not yet written."""
        pending, self.pending = self.pending, {}
        return pending

"""Named dependencies: RuntimeDep, SessionDep, ReadSessionDep, CallerDep, MasterDep."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from otari_server.access import auth
from otari_server.errors import AuthenticationFailed, PermissionDenied
from otari_server.runtime import Runtime
from otari_server.storage.tables import utcnow


def get_runtime(request: Request) -> Runtime:
    """The app's runtime state."""
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    """A database session for one request, committed by the route when it writes."""
    with runtime.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_read_session(runtime: RuntimeDep) -> Iterator[Session]:
    """A session for a request that only reads (every GET): never holds the write lock."""
    with runtime.reads() as session:
        yield session


ReadSessionDep = Annotated[Session, Depends(get_read_session)]


def _lookup(runtime: Runtime, token_hash: str) -> auth.KeySnapshot | None:
    with runtime.reads() as session:
        return auth.load_snapshot(session, token_hash)


async def authenticate(request: Request) -> auth.Caller:
    """The caller: the master key, or an active API key (cached; DB only on a miss)."""
    runtime: Runtime = request.app.state.runtime
    presented = auth.credential(request.headers)
    token = presented.token
    if token is None:
        if presented.rejected == "authorization":
            raise AuthenticationFailed(
                "The Authorization header was rejected: only 'Authorization: Bearer <key>' is "
                "accepted (or send the key in 'x-api-key' or 'Otari-Key')"
            )
        if presented.rejected is not None:
            raise AuthenticationFailed(f"The {presented.rejected} header is empty")
        raise AuthenticationFailed(
            "Missing API key: send 'Otari-Key: Bearer <key>' or 'Authorization: Bearer <key>'"
        )
    if runtime.master.matches(token):
        return auth.MASTER
    token_hash = auth.hash_token(token)
    hit, snapshot, due = runtime.keys.lookup(token_hash)
    if not hit:
        snapshot = await runtime.keys.read(token_hash, partial(_lookup, runtime, token_hash))
    elif due:
        runtime.keys.refresh(token_hash, partial(_lookup, runtime, token_hash))
    caller = auth.check(snapshot, utcnow(), presented.header)
    if caller.key_id is not None:
        runtime.activity.touch(caller.key_id)
    return caller


CallerDep = Annotated[auth.Caller, Depends(authenticate)]


async def require_master(caller: CallerDep) -> auth.Caller:
    """Only the master key may pass."""
    if not caller.is_master:
        raise PermissionDenied("This endpoint requires the master key")
    return caller


MasterDep = Annotated[auth.Caller, Depends(require_master)]

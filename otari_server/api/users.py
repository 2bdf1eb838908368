"""User management: soft delete that keeps history, restore on re-create, usage per user."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from otari_server.accounting import budget_rules
from otari_server.accounting.usage_rows import Filters, fetch, query
from otari_server.api import usage as usage_routes
from otari_server.api.paging import Limit, Skip
from otari_server.api.schemas import (
    CreateUserRequest,
    UpdateUserRequest,
    UsageLogResponse,
    UserResponse,
)
from otari_server.deps import ReadSessionDep, RuntimeDep, SessionDep, require_master
from otari_server.errors import Conflict, NotFound
from otari_server.jsonio import ExactJSONResponse, ExactRoute
from otari_server.storage.tables import APIKey, Budget, User, utcnow

router = APIRouter(
    prefix="/v1/users",
    tags=["users"],
    route_class=ExactRoute,
    dependencies=[Depends(require_master)],
)


def user_response(row: User) -> UserResponse:
    """The public view of a user row."""
    return UserResponse(
        user_id=row.user_id,
        alias=row.alias,
        spend=row.spend,
        budget_id=row.budget_id,
        budget_started_at=row.budget_started_at,
        next_budget_reset_at=row.next_budget_reset_at,
        blocked=row.blocked,
        created_at=row.created_at,
        updated_at=row.updated_at,
        metadata=row.metadata_ or {},
        reserved=row.reserved,
        deleted_at=row.deleted_at,
        rpm_limit=row.rpm_limit,
        tpm_limit=row.tpm_limit,
        allowed_models=row.allowed_models,
        current_requests=row.requests or 0,
        current_tokens=row.tokens or 0,
        reserved_requests=row.reserved_requests or 0,
        reserved_tokens=row.reserved_tokens or 0,
    )


def _live_user(session: Session, user_id: str) -> User:
    row = session.get(User, user_id)
    if row is None or row.deleted_at is not None:
        raise NotFound(f"User '{user_id}' not found")
    return row


def _budget(session: Session, budget_id: str) -> Budget:
    budget = session.get(Budget, budget_id)
    if budget is None:
        raise NotFound(f"Budget '{budget_id}' not found")
    return budget


def _attach_budget(session: Session, row: User, budget_id: str | None, now: datetime) -> None:
    """Point the user at a budget (or none); a new budget starts a new period."""
    if budget_id is None:
        row.budget_id = None
        row.budget_started_at = None
        row.next_budget_reset_at = None
        return
    budget = _budget(session, budget_id)
    period = budget_rules.first_period(now, budget.budget_duration_sec, budget.reset_alignment)
    row.budget_id = budget_id
    row.budget_started_at = period.started_at
    row.next_budget_reset_at = period.resets_at


def _current(session: Session, row: User) -> User:
    """The user with its budget period rolled over if it ended."""
    if row.budget_id is not None:
        budget = session.get(Budget, row.budget_id)
        budget_rules.roll_over(
            session,
            row,
            budget.budget_duration_sec if budget else None,
            utcnow(),
            budget.reset_alignment if budget else None,
        )
    return row


@router.post("", response_model=UserResponse)
def create(body: CreateUserRequest, session: SessionDep, runtime: RuntimeDep) -> Response:
    """Create a user; re-creating a deleted user restores it with a clean slate."""
    now = utcnow()
    row = session.get(User, body.user_id)
    if row is not None and row.deleted_at is None:
        raise Conflict(f"User '{body.user_id}' already exists")
    if row is None:
        row = User(user_id=body.user_id, created_at=now)
        session.add(row)
    row.alias = body.alias
    row.blocked = body.blocked
    row.metadata_ = body.metadata
    row.rpm_limit = body.rpm_limit
    row.tpm_limit = body.tpm_limit
    row.allowed_models = body.allowed_models
    row.spend = Decimal(0)
    row.reserved = Decimal(0)
    row.requests = row.tokens = row.reserved_requests = row.reserved_tokens = 0
    row.deleted_at = None
    _attach_budget(session, row, body.budget_id, now)
    session.commit()
    runtime.changed()
    return ExactJSONResponse(user_response(row))


@router.get("", response_model=list[UserResponse])
def list_users(session: SessionDep, skip: Skip = 0, limit: Limit = 100) -> Response:
    """List users that are not deleted, oldest first."""
    rows = list(
        session.scalars(
            select(User)
            .where(User.deleted_at.is_(None))
            .order_by(User.created_at, User.user_id)
            .offset(skip)
            .limit(limit)
        )
    )
    result = [user_response(_current(session, row)) for row in rows]
    session.commit()
    return ExactJSONResponse(result)


@router.get("/{user_id}", response_model=UserResponse)
def get(user_id: str, session: SessionDep) -> Response:
    """One user."""
    row = _current(session, _live_user(session, user_id))
    session.commit()
    return ExactJSONResponse(user_response(row))


@router.patch("/{user_id}", response_model=UserResponse)
def patch(
    user_id: str, body: UpdateUserRequest, session: SessionDep, runtime: RuntimeDep
) -> Response:
    """Change only the fields sent; sending budget_id null detaches the budget."""
    row = _current(session, _live_user(session, user_id))
    sent = body.model_dump(exclude_unset=True)
    for name in ("alias", "rpm_limit", "tpm_limit", "allowed_models"):
        if name in sent:
            setattr(row, name, sent[name])
    if sent.get("blocked") is not None:
        row.blocked = sent["blocked"]
    if "metadata" in sent:
        row.metadata_ = sent["metadata"] or {}
    if "budget_id" in sent and sent["budget_id"] != row.budget_id:
        _attach_budget(session, row, sent["budget_id"], utcnow())
    row.updated_at = utcnow()
    session.commit()
    runtime.changed()
    return ExactJSONResponse(user_response(row))


@router.delete("/{user_id}", status_code=204)
def delete(user_id: str, session: SessionDep, runtime: RuntimeDep) -> Response:
    """Soft-delete: the user and its keys stop working; usage history stays."""
    row = _live_user(session, user_id)
    now = utcnow()
    row.deleted_at = now
    row.updated_at = now
    session.execute(update(APIKey).where(APIKey.user_id == user_id).values(is_active=False))
    session.commit()
    runtime.changed()
    return Response(status_code=204)


@router.get("/{user_id}/usage", response_model=list[UsageLogResponse])
def usage(
    user_id: str,
    request: Request,
    session: ReadSessionDep,
    after: usage_routes.After = None,
    skip: Skip = 0,
    limit: Limit = 100,
) -> Response:
    """The user's usage rows, newest first (also after the user was deleted).

    Pages by `skip` or by the `after` cursor of the Link rel="next" header.
    """
    cursor = usage_routes.parse_after(after, skip)
    if session.get(User, user_id) is None:
        raise NotFound(f"User '{user_id}' not found")
    rows = fetch(session, query(Filters(user_ids=[user_id]), cursor).offset(skip).limit(limit))
    return usage_routes.page(request, rows, limit, extras={})

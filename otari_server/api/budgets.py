"""Budget management; a budget still used by users cannot be deleted (409)."""

from __future__ import annotations

import uuid
from decimal import Decimal

from fastapi import APIRouter, Depends, Response
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from otari_server.accounting import budget_rules
from otari_server.accounting.budget_alerts import threshold_text
from otari_server.api.paging import Limit, Skip
from otari_server.api.schemas import BudgetResponse, CreateBudgetRequest, UpdateBudgetRequest
from otari_server.deps import ReadSessionDep, RuntimeDep, SessionDep, require_master
from otari_server.errors import Conflict, InvalidRequest, NotFound
from otari_server.jsonio import ExactJSONResponse, ExactRoute
from otari_server.storage.tables import Budget, User, utcnow

router = APIRouter(
    prefix="/v1/budgets",
    tags=["budgets"],
    route_class=ExactRoute,
    dependencies=[Depends(require_master)],
)


def _response(session: Session, row: Budget) -> BudgetResponse:
    count, spend, reserved = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(User.spend), 0),
            func.coalesce(func.sum(User.reserved), 0),
        ).where(User.budget_id == row.budget_id, User.deleted_at.is_(None))
    ).one()
    return BudgetResponse(
        budget_id=row.budget_id,
        name=row.name,
        max_budget=row.max_budget,
        budget_duration_sec=row.budget_duration_sec,
        created_at=row.created_at,
        updated_at=row.updated_at,
        user_count=count,
        total_spend=Decimal(spend),
        total_reserved=Decimal(reserved),
        request_limit=row.request_limit,
        token_limit=row.token_limit,
        reset_alignment=row.reset_alignment,
        budget_clamp=row.budget_clamp,
        alert_thresholds=None
        if row.alert_thresholds is None
        else [Decimal(v) for v in row.alert_thresholds],
    )


def _check_period(duration_sec: int | None, alignment: str | None) -> None:
    if duration_sec is not None and alignment is not None:
        raise InvalidRequest(
            "budget_duration_sec and reset_alignment are exclusive: a period "
            "is either a number of seconds or a calendar day, week or month",
            param="reset_alignment",
        )


def _thresholds(values: list[Decimal] | None) -> list[str] | None:
    """Alert thresholds as stored: exact decimal text, sorted, without duplicates."""
    if values is None:
        return None
    return [threshold_text(v) for v in sorted(set(values))]


def _get(session: Session, budget_id: str) -> Budget:
    row = session.get(Budget, budget_id)
    if row is None:
        raise NotFound(f"Budget '{budget_id}' not found")
    return row


@router.post("", response_model=BudgetResponse)
def create(body: CreateBudgetRequest, session: SessionDep) -> Response:
    """Create a budget; max_budget null means unlimited (spend is still tracked)."""
    _check_period(body.budget_duration_sec, body.reset_alignment)
    budget_id = body.budget_id or str(uuid.uuid4())
    if session.get(Budget, budget_id) is not None:
        raise Conflict(f"Budget '{budget_id}' already exists")
    row = Budget(
        budget_id=budget_id,
        name=body.name,
        max_budget=body.max_budget,
        budget_duration_sec=body.budget_duration_sec,
        reset_alignment=body.reset_alignment,
        request_limit=body.request_limit,
        token_limit=body.token_limit,
        budget_clamp=body.budget_clamp,
        alert_thresholds=_thresholds(body.alert_thresholds),
    )
    session.add(row)
    session.commit()
    return ExactJSONResponse(_response(session, row))


@router.get("", response_model=list[BudgetResponse])
def list_budgets(session: ReadSessionDep, skip: Skip = 0, limit: Limit = 100) -> Response:
    """List budgets, oldest first."""
    rows = session.scalars(
        select(Budget).order_by(Budget.created_at, Budget.budget_id).offset(skip).limit(limit)
    )
    return ExactJSONResponse([_response(session, row) for row in rows])


@router.get("/{budget_id}", response_model=BudgetResponse)
def get(budget_id: str, session: ReadSessionDep) -> Response:
    """One budget, with how many users draw on it."""
    return ExactJSONResponse(_response(session, _get(session, budget_id)))


@router.patch("/{budget_id}", response_model=BudgetResponse)
def patch(
    budget_id: str, body: UpdateBudgetRequest, session: SessionDep, runtime: RuntimeDep
) -> Response:
    """Change only the fields sent; a new duration re-times its users' next reset."""
    row = _get(session, budget_id)
    sent = body.model_dump(exclude_unset=True)
    for name in ("max_budget", "name", "request_limit", "token_limit", "budget_clamp"):
        if name in sent:
            setattr(row, name, sent[name])
    if "alert_thresholds" in sent:
        row.alert_thresholds = _thresholds(body.alert_thresholds)
    duration = sent.get("budget_duration_sec", row.budget_duration_sec)
    alignment = sent.get("reset_alignment", row.reset_alignment)
    if "budget_duration_sec" in sent and "reset_alignment" not in sent and duration:
        alignment = None  # a number of seconds replaces a calendar alignment
    if "reset_alignment" in sent and "budget_duration_sec" not in sent and alignment:
        duration = None  # and the other way round
    _check_period(duration, alignment)
    if (duration, alignment) != (row.budget_duration_sec, row.reset_alignment):
        row.budget_duration_sec, row.reset_alignment = duration, alignment
        now = utcnow()
        for user in session.scalars(select(User).where(User.budget_id == budget_id)):
            started = user.budget_started_at or now
            period = budget_rules.current_period(started, duration, now, alignment)
            user.budget_started_at = period.started_at
            user.next_budget_reset_at = period.resets_at
    row.updated_at = utcnow()
    session.commit()
    runtime.changed()
    return ExactJSONResponse(_response(session, row))


@router.delete("/{budget_id}", status_code=204)
def delete(budget_id: str, session: SessionDep) -> Response:
    """Delete a budget no user references; otherwise 409 naming how many do."""
    row = _get(session, budget_id)
    users = (
        session.scalar(
            select(func.count()).where(User.budget_id == budget_id, User.deleted_at.is_(None))
        )
        or 0
    )
    if users:
        raise Conflict(
            f"Budget '{budget_id}' is still assigned to {users} user(s); "
            "move them to another budget first"
        )
    # Deleted users keep their history but no longer hold on to the budget.
    session.execute(
        update(User)
        .where(User.budget_id == budget_id)
        .values(budget_id=None, budget_started_at=None, next_budget_reset_at=None)
    )
    session.delete(row)
    session.commit()
    return Response(status_code=204)

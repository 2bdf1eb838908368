"""Reservations: the worst case of a request held against its user's budget before the call.

`reserve_all` runs a batch of asks in one transaction on the writer's connection: each user's
period rolled over when due, rate limits admitted, then every budget rule judged against what
is spent plus what is already held (`budget_rules.judge`); a fitting ask adds to the user's hold
row for this instance (`hold_id`), a refused one gets the 402 that says what remains and what
would fit. Amounts are Decimal USD.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import Connection

from otari_server.accounting import budget_rules, rate_limits
from otari_server.accounting.holds import Holds, UserBudget
from otari_server.errors import BudgetExceeded, NotFound, OtariError


@dataclass(frozen=True, slots=True)
class Hold:
    """What one request holds against a user's budget (nothing when user_id is None):
    money, requests and tokens (each only when the budget limits it). `clamped` is the
    per-choice output limit the budget clamp lowered the request to, if it did."""

    user_id: str | None
    amount: Decimal
    requests: int = 0
    tokens: int = 0
    clamped: int | None = None


NO_HOLD = Hold(None, Decimal(0))


@dataclass(slots=True)
class Ask:
    user_id: str | None  # None: nothing to hold, only rate limits to count
    need: budget_rules.Need
    limits: tuple[rate_limits.Limit, ...]
    future: asyncio.Future[Hold]
    clamp: bool = False  # the global budget_clamp setting (a budget's own overrides it)


def hold_id(instance_id: str, user_id: str) -> str:
    """Primary key of an instance's aggregated hold on a user's budget."""
    return f"{instance_id}|{user_id}"


def refusal(
    user_id: str,
    amount: Decimal,
    available: Decimal,
    max_budget: Decimal,
    resets_at: datetime | None,
    affordable: int | None = None,
    field: str = "max_tokens",
) -> BudgetExceeded:
    """The error for a request whose worst case does not fit; with `affordable` (1 or
    more), it says which output limit would."""
    until = f" until {resets_at.isoformat()}" if resets_at else ""
    return BudgetExceeded(
        f"Budget exceeded for user '{user_id}': this request may cost up to "
        f"{amount.normalize():f}, {max(available, Decimal(0)).normalize():f} of "
        f"{max_budget.normalize():f} remains{until}{_advice(affordable, field)}"
    )


def limit_refusal(
    user_id: str,
    row: UserBudget,
    what: str,
    need: budget_rules.Need,
    left: budget_rules.Remaining,
    resets_at: datetime | None,
    affordable: int | None = None,
) -> BudgetExceeded:
    """The error for a request over the budget's request or token limit."""
    until = f" until {resets_at.isoformat()}" if resets_at else ""
    if what == "requests":
        return BudgetExceeded(
            f"Request limit reached for user '{user_id}': {row.request_limit} request(s) "
            f"per period, none remains{until}"
        )
    field = need.output.field if need.output is not None else "max_tokens"
    return BudgetExceeded(
        f"Token limit exceeded for user '{user_id}': this request may use up to "
        f"{need.tokens} tokens, {max(left.tokens or 0, 0)} of {row.token_limit} "
        f"remain{until}{_advice(affordable, field)}"
    )


def over_limit(
    user_id: str, what: str, needed: int, left: int, limit: int, resets_at: datetime | None
) -> BudgetExceeded:
    """The 402 for a batch over the budget's request or token limit (`what`: "requests" or
    "tokens"; `needed` of them asked, `left` of `limit` remain)."""
    until = f" until {resets_at.isoformat()}" if resets_at else ""
    kind = "Request" if what == "requests" else "Token"
    return BudgetExceeded(
        f"{kind} limit exceeded for user '{user_id}': this batch may use up to {needed} "
        f"{what}, {max(left, 0)} of {limit} remain{until}"
    )


def _advice(affordable: int | None, field: str) -> str:
    if not affordable:
        return ""
    return f"; lower {field} to {affordable} or less"


def reserve_all(
    conn: Connection,
    asks: list[Ask],
    instance_id: str,
    ttl: float,
    now: datetime,
    holds: Holds | None = None,
) -> dict[int, Hold | OtariError]:
    """Apply a batch of reservations in one transaction; results by ask index.

    Without rate limits to count, the whole transaction runs on the driver's connection
    (see holds.py): the common case, and the one a request waits on. `holds`: the
    connection's own (the writer keeps one for its connection's lifetime), else one is
    made for this call.
    """
    own = holds is None
    holds = holds or Holds(conn)
    try:
        if any(ask.limits for ask in asks):
            with conn.begin():
                return _reserve(conn, holds, asks, instance_id, ttl, now)
        holds.begin()
        try:
            results = _reserve(None, holds, asks, instance_id, ttl, now)
        except BaseException:
            holds.rollback()
            raise
        holds.commit()
        return results
    finally:
        if own:
            holds.close()


def _reserve(
    conn: Connection | None,
    holds: Holds,
    asks: list[Ask],
    instance_id: str,
    ttl: float,
    now: datetime,
) -> dict[int, Hold | OtariError]:
    results: dict[int, Hold | OtariError] = {}
    by_user: dict[str, list[int]] = defaultdict(list)
    for index, ask in enumerate(asks):
        refused = None
        if ask.limits and conn is not None:
            refused = rate_limits.admit(conn, ask.limits, now)
        if refused is not None:
            results[index] = refused
        elif ask.user_id is None:
            results[index] = NO_HOLD
        else:
            by_user[ask.user_id].append(index)
    if by_user:
        _reserve_budgets(holds, asks, by_user, results, instance_id, ttl, now)
    return results


def _reserve_budgets(
    holds: Holds,
    asks: list[Ask],
    by_user: dict[str, list[int]],
    results: dict[int, Hold | OtariError],
    instance_id: str,
    ttl: float,
    now: datetime,
) -> None:
    rows = holds.user_budgets(list(by_user))
    for user_id, indexes in by_user.items():
        row = rows.get(user_id)
        if row is None or row.deleted_at is not None:
            for index in indexes:
                results[index] = NotFound(f"User '{user_id}' not found")
            continue
        if not row.limited:
            for index in indexes:
                results[index] = NO_HOLD
            continue
        spend, requests, tokens = row.spend, row.requests, row.tokens
        resets_at = row.next_budget_reset_at
        if resets_at is not None and row.budget_started_at is not None and now >= resets_at:
            period = budget_rules.current_period(
                row.budget_started_at, row.budget_duration_sec, now, row.reset_alignment
            )
            holds.roll_over(user_id, period.started_at, period.resets_at)
            spend, requests, tokens, resets_at = Decimal(0), 0, 0, period.resets_at
        left = budget_rules.Remaining(
            None if row.max_budget is None else row.max_budget - spend - row.reserved,
            None
            if row.request_limit is None
            else row.request_limit - requests - row.reserved_requests,
            None if row.token_limit is None else row.token_limit - tokens - row.reserved_tokens,
        )
        total, total_requests, total_tokens = Decimal(0), 0, 0
        for index in indexes:
            ask = asks[index]
            clamp = ask.clamp if row.budget_clamp is None else row.budget_clamp
            verdict = budget_rules.judge(ask.need, left, clamp)
            if verdict.refused == "money":
                assert row.max_budget is not None and left.money is not None
                field = ask.need.output.field if ask.need.output is not None else "max_tokens"
                results[index] = refusal(
                    user_id,
                    ask.need.amount,
                    left.money,
                    row.max_budget,
                    resets_at,
                    verdict.affordable,
                    field,
                )
                continue
            if verdict.refused is not None:
                results[index] = limit_refusal(
                    user_id, row, verdict.refused, ask.need, left, resets_at, verdict.affordable
                )
                continue
            # Later requests of the batch see what this one holds (the same rule, in order).
            if left.money is not None:
                left.money -= verdict.amount
            if left.requests is not None:
                left.requests -= verdict.requests
            if left.tokens is not None:
                left.tokens -= verdict.tokens
            total += verdict.amount
            total_requests += verdict.requests
            total_tokens += verdict.tokens
            results[index] = Hold(
                user_id, verdict.amount, verdict.requests, verdict.tokens, verdict.clamped
            )
        if total or total_requests or total_tokens:
            holds.add_reserved(user_id, total, total_requests, total_tokens)
            holds.grow_hold(
                hold_id(instance_id, user_id),
                user_id,
                instance_id,
                total,
                now,
                now + timedelta(seconds=ttl),
                total_requests,
                total_tokens,
            )

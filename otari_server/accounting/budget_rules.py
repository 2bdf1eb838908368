"""Budget rules (pure) and the statements that apply them atomically.

A budget limits, per period, money (`max_budget`), requests (`request_limit`) and tokens
(`token_limit`, prompt plus completion), each independently (null: unlimited). A period is
either `budget_duration_sec` long, counted from when the budget was attached, or aligned to
the UTC calendar (`reset_alignment`: a day from midnight, an ISO week from Monday midnight, a
month from the 1st at midnight).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

from sqlalchemy import update
from sqlalchemy.orm import Session

from otari_server.accounting.prices import TOKENS, Consumption, Price
from otari_server.storage.tables import User

CALENDAR_DAY, CALENDAR_WEEK, CALENDAR_MONTH = "calendar_day", "calendar_week", "calendar_month"
ALIGNMENTS = (CALENDAR_DAY, CALENDAR_WEEK, CALENDAR_MONTH)
_MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class Period:
    """A budget period: spend counts from `started_at` until `resets_at` (None: never)."""

    started_at: datetime
    resets_at: datetime | None


def calendar_period(now: datetime, alignment: str) -> Period:
    """The UTC calendar day, ISO week (Monday first) or month containing `now`.

    Raises ValueError for an alignment not in ALIGNMENTS.
    """
    now = now.astimezone(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if alignment == CALENDAR_DAY:
        return Period(midnight, midnight + timedelta(days=1))
    if alignment == CALENDAR_WEEK:
        monday = midnight - timedelta(days=midnight.weekday())
        return Period(monday, monday + timedelta(days=7))
    if alignment == CALENDAR_MONTH:
        first = midnight.replace(day=1)
        # The 1st of the next month, whatever this month's length (28 to 31 days).
        following = (first + timedelta(days=32)).replace(day=1)
        return Period(first, following)
    raise ValueError(f"unknown reset_alignment {alignment!r}; expected one of {ALIGNMENTS}")


def first_period(now: datetime, duration_sec: int | None, alignment: str | None = None) -> Period:
    """The period that starts when a budget is attached."""
    if alignment is not None:
        return calendar_period(now, alignment)
    if duration_sec is None:
        return Period(now, None)
    return Period(now, now + timedelta(seconds=duration_sec))


def current_period(
    started_at: datetime, duration_sec: int | None, now: datetime, alignment: str | None = None
) -> Period:
    """The period containing `now`: the calendar's, or aligned to the original start (no
    drift, no cron)."""
    if alignment is not None:
        return calendar_period(now, alignment)
    if duration_sec is None:
        return Period(started_at, None)
    length = timedelta(seconds=duration_sec)
    elapsed = now - started_at
    if elapsed < length:
        return Period(started_at, started_at + length)
    start = started_at + length * (elapsed // length)
    return Period(start, start + length)


def roll_over(
    session: Session,
    user: User,
    duration_sec: int | None,
    now: datetime,
    alignment: str | None = None,
) -> None:
    """Start a new period for the user if the old one ended, resetting spend and counts.

    The UPDATE is conditional on the old reset time, so concurrent roll-overs (other
    requests, other instances) apply it once.
    """
    if user.next_budget_reset_at is None or user.budget_started_at is None:
        return
    if now < user.next_budget_reset_at:
        return
    period = current_period(user.budget_started_at, duration_sec, now, alignment)
    session.execute(
        update(User)
        .where(User.user_id == user.user_id, User.next_budget_reset_at == user.next_budget_reset_at)
        .values(
            spend=0,
            requests=0,
            tokens=0,
            budget_started_at=period.started_at,
            next_budget_reset_at=period.resets_at,
        )
        .execution_options(synchronize_session=False)
    )
    session.refresh(user)


# -- admission: what one request needs, what is left, and whether it fits ----------------


@dataclass(frozen=True, slots=True)
class Output:
    """How a request's output limit can be lowered: what the budget clamp and the refusal's
    "lower max_tokens to N" advice need. `worst` is the request's worst case, whose
    completion tokens are `choices` times its per-choice output limit `field`."""

    price: Price | None
    worst: Consumption
    choices: int
    field: str  # the request's output-limit field: max_tokens, max_output_tokens, ...


@dataclass(frozen=True, slots=True)
class Need:
    """What one request asks to hold: money, requests (1 at admission, 0 for a top-up) and
    its worst-case tokens; `output` when its output limit may be lowered."""

    amount: Decimal
    requests: int = 1
    tokens: int = 0
    output: Output | None = None


@dataclass(slots=True)
class Remaining:
    """What a budget still allows in its period (None: that dimension is unlimited)."""

    money: Decimal | None
    requests: int | None
    tokens: int | None


@dataclass(frozen=True, slots=True)
class Verdict:
    """The budget rule's answer for one request.

    Granted: `refused` is None and amount/requests/tokens are what to hold (only the limited
    dimensions); `clamped` is the lowered per-choice output limit when the clamp applied.
    Refused: `refused` names the limit ("requests", "money" or "tokens") and `affordable` is
    the largest per-choice output limit that would fit (None when not applicable).
    """

    amount: Decimal = Decimal(0)
    requests: int = 0
    tokens: int = 0
    clamped: int | None = None
    refused: str | None = None
    affordable: int | None = None


def affordable_output(output: Output, money: Decimal | None, tokens: int | None) -> int:
    """The largest per-choice output limit (0 or more, at most the requested one) whose worst
    case fits `money` and `tokens` (None: unlimited). Exact: checked with Price.cost."""
    requested = output.worst.completion_tokens // output.choices
    best = requested
    if tokens is not None:
        best = min(best, max(tokens - output.worst.prompt_tokens, 0) // output.choices)
    price = output.price
    if money is None or price is None:
        return best

    def cost(per_choice: int) -> Decimal:
        return price.cost(replace(output.worst, completion_tokens=per_choice * output.choices))

    if cost(0) > money:
        return 0
    rate = price.for_input(output.worst.prompt_tokens).output_per_million * output.choices
    if price.unit != TOKENS or rate <= 0:
        return best  # output tokens are not what this entry charges for
    estimate = int(((money - cost(0)) * _MILLION / rate).to_integral_value(ROUND_FLOOR))
    best = min(best, estimate)
    # The estimate ignores the rounding of the total to the stored precision, which moves
    # the answer by a token at most: settle it exactly.
    for _ in range(3):
        if best > 0 and cost(best) > money:
            best -= 1
        elif (
            best < min(requested, estimate + 2)
            and cost(best + 1) <= money
            and (
                tokens is None or output.worst.prompt_tokens + (best + 1) * output.choices <= tokens
            )
        ):
            best += 1
        else:
            break
    return best


def judge(need: Need, left: Remaining, clamp: bool) -> Verdict:
    """Whether a request fits what is left (pure: the budget rule).

    Requests are counted one each at admission; money and tokens hold the worst case. When
    money or tokens do not fit and `clamp` is on, the request's output limit is lowered to
    what fits (if at least one output token does).
    """
    if left.requests is not None and need.requests > left.requests:
        return Verdict(refused="requests")
    money_fits = left.money is None or need.amount <= left.money
    tokens_fit = left.tokens is None or need.tokens <= left.tokens
    requests = need.requests if left.requests is not None else 0
    if money_fits and tokens_fit:
        return Verdict(
            need.amount if left.money is not None else Decimal(0),
            requests,
            need.tokens if left.tokens is not None else 0,
        )
    output = need.output
    affordable = None if output is None else affordable_output(output, left.money, left.tokens)
    if clamp and output is not None and affordable:
        lowered = replace(output.worst, completion_tokens=affordable * output.choices)
        amount = Decimal(0) if output.price is None else output.price.cost(lowered)
        return Verdict(
            amount if left.money is not None else Decimal(0),
            requests,
            lowered.prompt_tokens + lowered.completion_tokens if left.tokens is not None else 0,
            clamped=affordable,
        )
    return Verdict(refused="money" if not money_fits else "tokens", affordable=affordable)

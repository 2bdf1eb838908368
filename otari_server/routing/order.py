"""The order in which one request tries a route's targets, and the explanation of it."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from otari_server.routing.cooldowns import Cooldowns
from otari_server.routing.model import Route, Target


@dataclass(frozen=True, slots=True)
class Plan:
    """Targets to try, in order, and the ones left out with the reason.

    `cooling` are targets skipped for a cooldown; when nothing else is left they are tried
    anyway (a cooldown must not turn a possible answer into a certain refusal).
    """

    tries: tuple[Target, ...]
    skipped: tuple[tuple[Target, str], ...]
    cooling: tuple[Target, ...]


def plan(
    route: Route,
    cooldowns: Cooldowns,
    now: float,
    rng: random.Random,
    unusable: Mapping[str, str] | None = None,
) -> Plan:
    """The targets of `route` in the order this request tries them.

    `unusable` maps a target's model to why it cannot serve at all (unknown provider, not
    allowed for the key, no price while require_pricing is on). Cooling targets go last,
    only when no other target is left. Loadbalance: one weighted random pick among the
    eligible targets first, then the others in their listed order.
    """
    unusable = unusable or {}
    eligible: list[Target] = []
    cooling: list[Target] = []
    skipped: list[tuple[Target, str]] = []
    for target in route.targets:
        reason = unusable.get(target.model)
        if reason is not None:
            skipped.append((target, reason))
        elif cooldowns.until(target.model, now) is not None:
            cooling.append(target)
        else:
            eligible.append(target)
    if route.strategy == "loadbalance" and len(eligible) > 1:
        first = rng.choices(eligible, weights=[t.weight for t in eligible])[0]
        eligible.remove(first)
        eligible.insert(0, first)
    tries = eligible or cooling
    return Plan(tuple(tries), tuple(skipped), tuple(cooling))


def explain(
    route: Route,
    cooldowns: Cooldowns,
    now: float,
    unusable: Mapping[str, str] | None = None,
    prices: Mapping[str, Mapping[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """What `plan` would do right now, without sending anything.

    Returns {"route", "strategy", "source", "targets": [...]}; each target has `order`
    (1-based position in the try order, None when not tried), `model`, `weight`, `share`
    (loadbalance: the probability of being picked first; the others follow in `order`),
    `price` (as given in `prices`, None when unknown), `cooldown_remaining` (seconds, or
    None), `status` ("eligible", "cooling" or "skipped") and `reason` (why not eligible).
    """
    unusable = unusable or {}
    prices = prices or {}
    laid_out = plan(route, cooldowns, now, random.Random(0), unusable)
    cooling = set(laid_out.cooling)
    eligible = [t for t in route.targets if t in laid_out.tries and t not in cooling]
    total = sum(t.weight for t in eligible)
    skipped = dict((t.model, reason) for t, reason in laid_out.skipped)
    rows: list[dict[str, Any]] = []
    position = 0
    for target in [*eligible, *laid_out.cooling, *(t for t, _ in laid_out.skipped)]:
        until = cooldowns.until(target.model, now)
        left = None if until is None else round(until - now, 3)
        order: int | None = None
        reason: str | None = None
        if target.model in skipped:
            status, reason = "skipped", skipped[target.model]
        elif target in cooling:
            status = "cooling"
            reason = f"cooling down for {left:g}s more after repeated failures"
            if not eligible:
                position += 1
                order = position
                reason += "; tried anyway, no other target is left"
        else:
            status = "eligible"
            position += 1
            order = position
        share = (
            round(target.weight / total, 4)
            if route.strategy == "loadbalance" and status == "eligible"
            else None
        )
        rows.append(
            {
                "order": order,
                "model": target.model,
                "weight": target.weight,
                "share": share,
                "price": prices.get(target.model),
                "cooldown_remaining": left,
                "status": status,
                "reason": reason,
            }
        )
    return {
        "route": route.name,
        "strategy": route.strategy,
        "source": route.source,
        "targets": rows,
    }

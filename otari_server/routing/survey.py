"""Which of a route's targets can serve a request at all, and at what price."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from otari_server.accounting.prices import Price
from otari_server.routing.model import Route

if TYPE_CHECKING:
    from otari_server.access.auth import Caller
    from otari_server.runtime import Runtime


@dataclass(slots=True)
class Survey:
    """Per target model: why it cannot serve (`unusable`) and its price now (`prices`)."""

    unusable: dict[str, str] = field(default_factory=dict)
    prices: dict[str, Price | None] = field(default_factory=dict)


async def survey(
    runtime: Runtime,
    route: Route,
    billing: str,
    when: datetime,
    caller: Caller | None = None,
    openai_only: str | None = None,
) -> Survey:
    """Check every target: provider configured, allowed for the caller (a key allowed the
    route's name may use every target), priced when
    require_pricing is on, and (for `openai_only`, an endpoint path) of the OpenAI type."""
    found = Survey()
    # A key allowed the route's name may use all its targets; otherwise each target counts.
    checked = caller if caller is not None and not caller.may_use(route.name) else None
    for target in route.targets:
        provider = runtime.providers.get(target.provider)
        if provider is None:
            found.unusable[target.model] = f"unknown provider '{target.provider}'"
            continue
        if checked is not None and not checked.may_use(target.model):
            found.unusable[target.model] = "this API key may not use it"
            continue
        if openai_only is not None and provider.type != "openai":
            found.unusable[target.model] = (
                f"provider '{provider.name}' ({provider.type}) does not offer {openai_only}"
            )
            continue
        price = await runtime.prices.at(target.model, when)
        found.prices[target.model] = price
        if runtime.settings.require_pricing and (price is None or not price.covers(billing)):
            what = "no price" if price is None else f"no price per {billing}"
            found.unusable[target.model] = f"{what}, and require_pricing is on"
    return found

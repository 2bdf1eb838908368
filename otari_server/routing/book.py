"""The routes an app knows: read-only ones from the config, the rest from the database."""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from otari_server.routing.model import Route, RouteError, parse_route
from otari_server.storage.tables import RouteDefinition

log = logging.getLogger("otari.routing")


def from_row(row: RouteDefinition) -> Route:
    """The Route a stored definition describes (validated again: rows outlive code)."""
    return parse_route(
        row.name, {"strategy": row.strategy, "targets": row.targets, **(row.options or {})}, "api"
    )


class RouteBook:
    """Route name -> Route. `get` is one dict lookup: it runs for every request's model."""

    def __init__(self, config: Mapping[str, Route] | None = None) -> None:
        self.config: dict[str, Route] = dict(config or {})
        self.routes: dict[str, Route] = dict(self.config)
        # The app's own generator for loadbalance picks and backoff jitter.
        self.rng = random.Random()
        self._warned: set[str] = set()  # stored routes already reported as unusable

    def get(self, name: str) -> Route | None:
        """The route called `name`, if any."""
        return self.routes.get(name)

    def load(self, session: Session) -> None:
        """Replace the API-defined routes with the database's (config routes stay first)."""
        routes: dict[str, Route] = {}
        for row in session.scalars(select(RouteDefinition).order_by(RouteDefinition.name)):
            if row.name in self.config:
                self._warn(
                    row.name,
                    "is defined in the config file and in the database; the "
                    "config file's definition is used",
                )
                continue
            try:
                routes[row.name] = from_row(row)
            except RouteError as exc:
                self._warn(row.name, f"is stored but not usable, and is ignored: {exc}")
        routes.update(self.config)
        self.routes = routes  # one assignment: readers see the old or the new dict

    def _warn(self, name: str, problem: str) -> None:
        # Loaded every few seconds: say it once per process, not on every reload.
        if name not in self._warned:
            self._warned.add(name)
            log.warning("route '%s' %s", name, problem)

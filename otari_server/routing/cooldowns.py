"""Per-instance cooldowns: a target that keeps failing is skipped for a while.

Keyed by the target's `provider:model`, so every route sharing a failing target skips it.
Times come from the caller (time.monotonic()), which keeps this pure and testable.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from otari_server.routing.model import Route


@dataclass(slots=True)
class _State:
    failures: deque[float] = field(default_factory=deque)
    until: float = 0.0


class Cooldowns:
    """Failure times and cooldown ends per target (owned by the app's Runtime)."""

    def __init__(self) -> None:
        self._states: dict[str, _State] = {}

    def until(self, model: str, now: float) -> float | None:
        """When the target's cooldown ends (monotonic seconds), or None if it is usable."""
        state = self._states.get(model)
        if state is None or state.until <= now:
            return None
        return state.until

    def failed(self, model: str, route: Route, now: float) -> bool:
        """Record a transient failure; True when it starts a cooldown.

        The route's `cooldown_failures` failures within `cooldown_window` seconds start a
        cooldown of `cooldown_seconds`; 0 failures switches cooldowns off for the route.
        """
        if route.cooldown_failures == 0:
            return False
        state = self._states.setdefault(model, _State())
        failures = state.failures
        failures.append(now)
        while failures and failures[0] <= now - route.cooldown_window:
            failures.popleft()
        if len(failures) >= route.cooldown_failures and state.until <= now:
            state.until = now + route.cooldown_seconds
            failures.clear()
            return True
        return False

    def succeeded(self, model: str) -> None:
        """A success clears the target's recent failures."""
        state = self._states.get(model)
        if state is not None:
            state.failures.clear()

    def cooling(self, now: float) -> dict[str, float]:
        """Every target in cooldown and the seconds it has left."""
        return {
            model: state.until - now for model, state in self._states.items() if state.until > now
        }

"""Values read from the database for the hot path (API keys, prices), cached and shared.

A cache entry that expires under load sends every request then in flight to the database for
the same row: at concurrency 64 that was up to 64 reads of one key in the worker threads,
every `auth_cache_ttl` seconds, and the requests behind them waited 30-45 ms, most of the
gateway's p99 (bench/README.md, "the tail behind the caches"). Two rules keep it away:

- one read per key at a time: a request that misses while the key is being read waits for
  that read instead of starting its own (single flight);
- refresh ahead: an entry past half its TTL is read again in the background by the first
  request that sees it, and served meanwhile, so under steady traffic an entry is replaced
  before it expires and no request waits for the database.

Neither lengthens what the TTL promises: an entry is still served at most `ttl` seconds after
it was stored, and `forget()` (a cache cleared after a management change) makes the next
request start a read of its own rather than join one that began before the change. A read
that has run longer than `patience` seconds (a connection that hangs) is not joined either:
the next request starts another, so one stuck read holds up only the requests that joined
it in time, as without the sharing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Hashable
from functools import partial
from typing import Generic, TypeVar

from anyio import to_thread
from cachetools import TTLCache

log = logging.getLogger("otari.cache")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ReadCache(Generic[K, V]):
    """Values by key, kept `ttl` seconds (cachetools TTLCache: LRU + TTL), read through the
    rules above.

    A value that says "nothing there" (falsy: no such key, no price) is kept apart, in a
    cache of `absent` entries of its own: a flood of unknown names evicts other unknown names,
    never a known value. Only known values are refreshed ahead. `clear()` may be called from
    any thread (the management endpoints run on worker threads); the rest from the event
    loop's thread.
    """

    def __init__(
        self, ttl: float, known: int, absent: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._sizes = (known, absent)
        self._clock = clock
        self._refresh_after = ttl / 2
        # (value, when it was stored): the age decides when to refresh ahead.
        self._known: TTLCache[K, tuple[V, float]] = TTLCache(known, ttl, timer=clock)
        self._absent: TTLCache[K, V] = TTLCache(absent, ttl, timer=clock)
        self._flights: Flights[K, V] = Flights(ttl, clock)
        # The version check and the store (event loop) are one step against the version bump
        # and the swap of clear() (worker threads).
        self._lock = threading.Lock()
        # Bumped by clear(): a read that started before a change must not store what it read
        # after the change was announced (a revoked key would live on for `ttl`).
        self.version = 0

    def lookup(self, key: K) -> tuple[bool, V | None, bool]:
        """(hit, value, due): the value is None on a miss; `due` when a known value is past
        half its TTL and should be read again in the background (`refresh`)."""
        try:
            # Indexing is cachetools' cheapest hit (get() checks the entry's age twice).
            value, stored = self._known[key]
        except KeyError:
            try:
                return True, self._absent[key], False
            except KeyError:
                return False, None, False
        return True, value, self._clock() - stored >= self._refresh_after

    def put(self, key: K, value: V, version: int | None = None) -> None:
        """Remember a read (bounded: the least recently used goes first). `version` is
        `self.version` read before the read began: a value read across a clear() is dropped."""
        with self._lock:
            if version is not None and version != self.version:
                return
            if value:
                self._absent.pop(key, None)
                self._known[key] = (value, self._clock())
            else:
                self._known.pop(key, None)
                self._absent[key] = value

    async def read(self, key: K, load: Callable[[], V]) -> V:
        """Read `key` with `load` (blocking; run in a worker thread), sharing the read already
        in flight, and remember the result. Raises what `load` raises."""
        return await self._flights.read(key, load, self._storer(key))

    def refresh(self, key: K, load: Callable[[], V]) -> None:
        """Read `key` again in the background (when `lookup` said it is due)."""
        self._flights.refresh(key, load, self._storer(key))

    def _storer(self, key: K) -> Callable[[V], None]:
        version = self.version
        return lambda value: self.put(key, value, version)

    def clear(self) -> None:
        """Forget everything, from any thread. The caches are replaced, not emptied in place:
        the event loop may be inside one of them (cachetools' LRU bookkeeping is not
        thread-safe), and finishes on the old one."""
        known, absent = self._sizes
        with self._lock:
            self.version += 1
            self._known = TTLCache(known, self._ttl, timer=self._clock)
            self._absent = TTLCache(absent, self._ttl, timer=self._clock)
            self._flights.forget()


class Flights(Generic[K, V]):
    """The reads in flight, by key. `read` and `refresh` from the event loop's thread only;
    `forget` from any thread."""

    def __init__(self, patience: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._patience = patience
        self._clock = clock
        # key -> (the read, when it started)
        self._running: dict[K, tuple[asyncio.Task[V], float]] = {}

    async def read(self, key: K, load: Callable[[], V], store: Callable[[V], None]) -> V:
        """The value of `key`: from the read already in flight, or from a new one.

        A new read runs `load` in a worker thread, hands the result to `store` (once, before
        any waiter resumes), then to every waiter. Raises what `load` raises. A waiter that
        is cancelled (its client hung up) leaves the read running for the others.
        """
        task = self._joinable(key)
        if task is None:
            task = self._start(key, load, store)
        return await asyncio.shield(task)

    def refresh(self, key: K, load: Callable[[], V], store: Callable[[V], None]) -> None:
        """Start a background read of `key` unless one is in flight; never waits. A failed
        refresh is logged at debug level: the entry it meant to replace expires at its TTL,
        and the next request then reads (and reports the failure) itself."""
        if self._joinable(key) is None:
            self._start(key, load, store)

    def forget(self) -> None:
        """Let later requests start reads of their own (the reads in flight still finish).
        One assignment: safe from the worker threads the management endpoints run in."""
        self._running = {}

    def _joinable(self, key: K) -> asyncio.Task[V] | None:
        running = self._running.get(key)
        if running is None or self._clock() - running[1] > self._patience:
            return None
        return running[0]

    def _start(self, key: K, load: Callable[[], V], store: Callable[[V], None]) -> asyncio.Task[V]:
        task = asyncio.ensure_future(_read(load, store))
        self._running[key] = (task, self._clock())
        task.add_done_callback(partial(self._landed, self._running, key))
        return task

    @staticmethod
    def _landed(
        running: dict[K, tuple[asyncio.Task[V], float]], key: K, task: asyncio.Task[V]
    ) -> None:
        entry = running.get(key)
        if entry is not None and entry[0] is task:
            del running[key]
        if not task.cancelled() and task.exception() is not None:
            # Retrieved here, so a refresh nobody awaited does not warn at exit.
            log.debug("cache read of %r failed", key, exc_info=task.exception())


async def _read(load: Callable[[], V], store: Callable[[V], None]) -> V:
    value = await to_thread.run_sync(load)
    store(value)
    return value

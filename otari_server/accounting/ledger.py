"""Money in motion: reserve the worst case before a call, settle the real cost after.

One writer thread owns every hot-path write. Requests queue their reservations and
settlements; the writer takes whatever has queued and applies it in one transaction (group
commit), so a burst of N requests costs one commit, not N, and SQLite never sees two writers
fight over its lock. Reservations are answered as soon as their transaction commits (they are
the concurrency guarantee); settlements and usage rows ride along in the next transaction.

Holds are kept per (instance, user) in `reservations`, so an instance that dies leaves rows
that say exactly how much to give back; the next start of that instance, or any instance once
the row expires, returns it.

The statements live beside it: `reservations` (hold before), `settlements` (bill after, and
give back what a dead instance held) and `spool` (rows kept on disk through a shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from sqlalchemy import Connection, Engine

from otari_server.accounting import budget_rules, rate_limits
from otari_server.accounting.holds import Holds
from otari_server.accounting.reservations import Ask, Hold, reserve_all
from otari_server.accounting.settlements import (
    Settlement,
    Unwritten,
    log_rejected,
    write_settlements,
)
from otari_server.accounting.spool import spool
from otari_server.errors import BudgetExceeded, OtariError, ServiceUnavailable
from otari_server.storage.tables import utcnow

log = logging.getLogger("otari.ledger")

_RETRY_DELAY = 1.0
# Settlements written per transaction. A window's batch at a few thousand requests/s is
# several hundred rows (20-80 ms on the writer at c=64), and reservations queued behind it
# waited for all of it: that wait was the gateway's p99. In chunks, a reservation waits for
# one chunk at most (bench/README, "the tail behind the settlement batch").
SETTLE_CHUNK = 64


class Ledger:
    """The writer thread and its two queues (reservations, settlements)."""

    def __init__(
        self,
        engine: Engine,
        instance_id: str,
        ttl: float,
        flush_interval: float,
        spool_to: Path | None = None,
    ) -> None:
        self._engine = engine
        self._instance_id = instance_id
        self._ttl = ttl
        self._flush_interval = flush_interval
        self._spool = spool_to
        self._asks: list[Ask] = []
        self._settlements: list[Settlement] = []
        self._writing: float | None = None  # when the oldest row being written was queued
        self._batch: list[Settlement] = []  # the settlements being written
        self._due = 0  # queued settlements whose window has passed (written chunk by chunk)
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: Connection | None = None
        self._holds: Holds | None = None  # the statements on _conn's own cursor
        # Called (from the writer thread) with the users whose spend a committed batch
        # changed; budget alerts hook in here. Must not block.
        self.on_settled: Callable[[set[str]], None] | None = None
        self.rejected = 0  # rows the database refused, isolated and dropped
        self.last_error: str | None = None  # why the last write failed (a class name)

    @property
    def depth(self) -> int:
        """Settlements waiting to be written."""
        return len(self._settlements)

    def lag(self) -> float:
        """Seconds the oldest settlement not yet written has waited beyond the write-behind
        window (0 when none is late)."""
        with self._wake:
            oldest = [
                t
                for t in (self._settlements[0].queued if self._settlements else None, self._writing)
                if t is not None
            ]
        if not oldest:
            return 0.0
        return max(time.monotonic() - min(oldest) - self._flush_interval, 0.0)

    def start(self) -> None:
        """Start the writer (from inside the event loop that will await reservations)."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="otari-ledger", daemon=True)
        self._thread.start()

    async def reserve(
        self,
        user_id: str | None,
        amount: Decimal,
        limits: tuple[rate_limits.Limit, ...] = (),
        need: budget_rules.Need | None = None,
        clamp: bool = False,
    ) -> Hold:
        """Count the request against its rate limits and hold `amount` against the user's
        budget (with `need`: also its request and worst-case tokens, and the clamp's
        inputs; without it, a top-up of money only); raises RateLimited, BudgetExceeded or
        NotFound."""
        assert self._loop is not None, "ledger used before start()"
        future: asyncio.Future[Hold] = self._loop.create_future()
        need = need or budget_rules.Need(amount, requests=0)
        with self._wake:
            self._asks.append(Ask(user_id, need, limits, future, clamp))
            self._wake.notify()
        return await future

    def record(self, settlement: Settlement) -> None:
        """Queue a settlement; never blocks the request."""
        if not settlement.id:
            settlement.id = settlement.request_id or uuid.uuid4().hex
        with self._wake:
            self._settlements.append(settlement)
            if len(self._settlements) == 1:
                self._wake.notify()  # the writer starts its write-behind window

    def stop(self, timeout: float) -> None:
        """Write everything queued, then stop the writer (blocking; call from a thread).

        Rows the database cannot take go to the spool file, replayed at the next start.
        """
        with self._wake:
            self._stopping = True
            self._wake.notify()
        left: list[Settlement] = []
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                # Stuck in the database: its batch is not committed (the transaction dies
                # with the process), so it is spooled with the rest. Should it commit after
                # all, the replay's duplicate ids are refused, not billed twice.
                log.error("usage writer did not finish within %.0fs", timeout)
                left = list(self._batch)
        with self._wake:
            left += self._settlements
            self._settlements = []
        if not left:
            return
        if self._spool is None:
            log.error("%d usage row(s) unwritten at shutdown", len(left))
            return
        spool(self._spool, left)
        log.warning(
            "database unavailable at shutdown: %d usage row(s) saved to %s, written "
            "at the next start",
            len(left),
            self._spool,
        )

    def _owed(self, users: set[str]) -> list[Settlement]:
        """Take the queued settlements if any belongs to one of `users` (all of them: one
        transaction, and their order kept)."""
        with self._wake:
            if not any(s.hold.user_id in users or s.user_id in users for s in self._settlements):
                return []
            owed, self._settlements = self._settlements, []
            self._due = 0
            self._batch = self._batch + owed
            return owed

    def _reserve(self, conn: Connection, asks: list[Ask]) -> dict[int, Hold | OtariError]:
        """Reservations; a budget refusal is decided only once the user's finished requests
        are settled (write-behind must never block a user's next request).

        Writing settlements costs a transaction, so it is paid only when it can change an
        answer: refusals of users with settlements still queued are retried after them.
        """
        results = reserve_all(conn, asks, self._instance_id, self._ttl, utcnow(), self._holds)
        refused = [
            i
            for i, result in results.items()
            if isinstance(result, BudgetExceeded) and asks[i].user_id is not None
        ]
        if not refused:
            return results
        owed = self._owed({str(asks[i].user_id) for i in refused})
        if not owed:
            return results
        write_settlements(conn, owed, self._instance_id, self._reject, self._holds)
        # Rate limits were counted on the first pass: the retry holds the budget only.
        again = [
            Ask(asks[i].user_id, asks[i].need, (), asks[i].future, asks[i].clamp) for i in refused
        ]
        retried = reserve_all(conn, again, self._instance_id, self._ttl, utcnow(), self._holds)
        for position, index in enumerate(refused):
            results[index] = retried[position]
        return results

    def _run(self) -> None:
        last_failure = 0.0
        last_flush = time.monotonic()
        while True:
            with self._wake:
                while not (self._asks or self._stopping or self._settlements):
                    self._wake.wait()
                if not self._asks and not self._stopping and not self._due:
                    # Only settlements: let them gather for the write-behind window.
                    self._wake.wait(max(self._flush_interval - (time.monotonic() - last_flush), 0))
                asks, self._asks = self._asks, []
                stopping = self._stopping
                # Settlements go in batches, once per window (or when many are waiting, or
                # when a user's reservation would be refused without them: see _reserve),
                # SETTLE_CHUNK rows per transaction, with the reservations queued meanwhile
                # answered between chunks.
                if (
                    stopping
                    or len(self._settlements) >= 1000
                    or time.monotonic() - last_flush >= self._flush_interval
                ):
                    self._due = len(self._settlements)
                    last_flush = time.monotonic()
                take = min(self._due, SETTLE_CHUNK)
                settlements = self._settlements[:take]
                del self._settlements[:take]
                self._due -= take
                self._writing = settlements[0].queued if settlements else None
                self._batch = settlements
            if time.monotonic() - last_failure < _RETRY_DELAY and not asks and not stopping:
                self._requeue(settlements)
                time.sleep(0.05)
                continue
            try:
                self._write(asks, settlements)
            except Unwritten as exc:
                last_failure = time.monotonic()
                self.last_error = type(exc.__cause__).__name__
                log.warning(
                    "database write failed (%s); %d usage row(s) kept for retry",
                    self.last_error,
                    len(exc.rows),
                )
                self._requeue(exc.rows)
                self._answer(
                    asks,
                    {
                        i: ServiceUnavailable("database unavailable, retry later")
                        for i in range(len(asks))
                    },
                )
                if stopping:
                    return
                continue
            self.last_error = None
            if stopping and not self._asks and not self._settlements:
                if self._holds is not None:
                    self._holds.close()
                if self._conn is not None:
                    self._conn.close()
                return

    def _write(self, asks: list[Ask], settlements: list[Settlement]) -> None:
        # The writer keeps one connection for its lifetime: no pool round trip per batch.
        unwritten = settlements
        try:
            if self._conn is None or self._conn.closed or self._conn.invalidated:
                self._holds = None
                self._conn = self._engine.connect()
                self._holds = Holds(self._conn)
            conn = self._conn
            if settlements:
                write_settlements(conn, settlements, self._instance_id, self._reject, self._holds)
                if self.on_settled is not None:
                    self.on_settled(
                        {s.user_id for s in settlements if s.user_id is not None and s.cost}
                    )
            unwritten = []
            if asks:
                self._answer(asks, self._reserve(conn, asks))
        except Exception as exc:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.invalidate()  # a broken connection is replaced next batch
            if isinstance(exc, Unwritten):
                raise
            raise Unwritten(unwritten) from exc
        finally:
            with self._wake:
                self._writing = None
                self._batch = []

    def _reject(self, row: Settlement, exc: BaseException) -> None:
        self.rejected += 1
        log_rejected(row, exc)

    def _requeue(self, settlements: list[Settlement]) -> None:
        with self._wake:
            self._settlements[:0] = settlements
            self._due += len(settlements)

    def _answer(self, asks: list[Ask], results: dict[int, Hold | OtariError]) -> None:
        if not asks or self._loop is None:
            return

        def deliver() -> None:
            for index, ask in enumerate(asks):
                if ask.future.done():
                    continue
                result = results[index]
                if isinstance(result, Hold):
                    ask.future.set_result(result)
                else:
                    ask.future.set_exception(result)

        self._loop.call_soon_threadsafe(deliver)

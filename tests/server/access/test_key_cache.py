"""The key cache: under a flood random bearer tokens never push out a valid key; one read per
key at a time, valid keys refreshed ahead of their expiry, nothing kept across a clear."""

from __future__ import annotations

import asyncio
import secrets
import sys
import threading
import time
from collections.abc import Callable

from otari_server.access.auth import KeyCache, KeySnapshot, hash_token


class Clock:
    """A clock the test moves by hand (seconds)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def snapshot(key_id: str) -> KeySnapshot:
    return KeySnapshot(
        key_id=key_id,
        key_name=None,
        is_active=True,
        expires_at=None,
        user_id="u",
        user_blocked=False,
        user_deleted=False,
    )


def held(value: KeySnapshot | None) -> tuple[Callable[[], KeySnapshot | None], threading.Event]:
    """A database read that answers `value` only once the event is set (at most 30 s)."""
    release = threading.Event()

    def load() -> KeySnapshot | None:
        release.wait(30)
        return value

    return load, release


def test_a_flood_of_unknown_tokens_keeps_every_valid_key() -> None:
    cache = KeyCache(ttl=60, clock=Clock(), known=100, unknown=1_000)
    valid = {hash_token(f"sk-valid-{i}"): snapshot(f"k{i}") for i in range(100)}
    for token_hash, snap in valid.items():
        cache.put(token_hash, snap)
    for _ in range(20_000):  # twenty times the unknown-token capacity
        cache.put(hash_token(secrets.token_urlsafe(24)), None)
    assert all(cache.get(h) == (True, snap) for h, snap in valid.items())


def test_unknown_tokens_are_remembered_as_unknown_and_bounded() -> None:
    cache = KeyCache(ttl=60, clock=Clock(), known=10, unknown=5)
    tokens = [hash_token(f"random-{i}") for i in range(8)]
    for token_hash in tokens:
        cache.put(token_hash, None)
    assert cache.get(tokens[-1]) == (True, None)  # a hit: known to be unknown
    assert cache.get(tokens[0]) == (False, None)  # the oldest was evicted (LRU)


def test_entries_expire_after_the_ttl_and_clear_forgets_everything() -> None:
    clock = Clock()
    cache = KeyCache(ttl=5, clock=clock)
    cache.put("a", snapshot("ka"))
    cache.put("b", None)
    clock.now += 4.9
    assert cache.get("a") == (True, snapshot("ka"))
    assert cache.get("b") == (True, None)
    clock.now += 0.2
    assert cache.get("a") == (False, None)
    assert cache.get("b") == (False, None)
    cache.put("a", snapshot("ka"))
    cache.clear()
    assert cache.get("a") == (False, None)


def test_a_key_created_after_its_token_was_seen_unknown_is_found() -> None:
    cache = KeyCache(ttl=60, clock=Clock())
    cache.put("h", None)
    cache.put("h", snapshot("k"))
    assert cache.get("h") == (True, snapshot("k"))
    assert cache.get("h") == (True, snapshot("k"))


def test_the_least_recently_used_valid_key_goes_first_when_known_keys_overflow() -> None:
    cache = KeyCache(ttl=60, clock=Clock(), known=3)
    for name in ("a", "b", "c"):
        cache.put(name, snapshot(name))
    assert cache.get("a")[0]  # "a" is now the most recently used
    cache.put("d", snapshot("d"))
    assert cache.get("b") == (False, None)
    assert [cache.get(n)[0] for n in ("a", "c", "d")] == [True, True, True]


def test_a_lookup_that_spans_a_change_is_not_stored() -> None:
    # A revoke commits and clears the cache while another request's lookup (started before
    # it) is still reading: what that lookup read must not be cached for the whole ttl.
    cache = KeyCache(ttl=60, clock=Clock())
    version = cache.version
    cache.clear()  # the revoke
    cache.put("h", snapshot("k"), version)
    assert cache.get("h") == (False, None)
    cache.put("h", snapshot("k"), cache.version)
    assert cache.get("h") == (True, snapshot("k"))


def test_concurrent_misses_share_one_read_and_a_cancelled_waiter_leaves_it_running() -> None:
    # The expiry herd: every request in flight missed at once and each read the key itself.
    cache = KeyCache(ttl=60, clock=Clock())
    reads: list[str] = []
    release = threading.Event()

    def load() -> KeySnapshot | None:
        reads.append("h")
        release.wait(30)
        return snapshot("k")

    async def run() -> list[KeySnapshot | None]:
        waiters = [asyncio.ensure_future(cache.read("h", load)) for _ in range(20)]
        await asyncio.sleep(0)  # one turn: every waiter has asked
        waiters[0].cancel()  # its client hung up
        release.set()
        return await asyncio.gather(*waiters[1:])

    got = asyncio.run(run())
    assert reads == ["h"]
    assert got == [snapshot("k")] * 19
    assert cache.get("h") == (True, snapshot("k"))


def test_a_key_past_half_its_ttl_is_read_again_in_the_background_and_served_meanwhile() -> None:
    clock = Clock()
    cache = KeyCache(ttl=10, clock=clock)
    cache.put("h", snapshot("old"))
    clock.now += 4.9
    assert cache.lookup("h") == (True, snapshot("old"), False)
    clock.now += 0.2
    assert cache.lookup("h") == (True, snapshot("old"), True)  # due, still served

    def unused() -> KeySnapshot | None:
        raise AssertionError("a second read while the refresh is in flight")

    async def run() -> KeySnapshot | None:
        cache.refresh("h", lambda: snapshot("new"))
        cache.refresh("h", unused)  # one refresh at a time
        assert cache.get("h") == (True, snapshot("old"))
        return await cache.read("h", unused)  # joins the refresh in flight

    assert asyncio.run(run()) == snapshot("new")
    assert cache.lookup("h") == (True, snapshot("new"), False)  # stored anew: fresh again
    clock.now += 9.9
    assert cache.get("h") == (True, snapshot("new"))
    clock.now += 0.2
    assert cache.get("h") == (False, None)  # never served past the ttl of its own read


def test_a_refresh_that_finds_the_key_gone_forgets_the_valid_entry() -> None:
    clock = Clock()
    cache = KeyCache(ttl=10, clock=clock)
    cache.put("h", snapshot("k"))
    clock.now += 6
    asyncio.run(cache.read("h", lambda: None))  # the key was deleted meanwhile
    assert cache.lookup("h") == (True, None, False)


def test_a_read_that_began_before_a_clear_is_not_joined_after_it() -> None:
    # A revoke clears the cache while a read of the key is in flight: the next request must
    # read the key itself, not take what the earlier read saw before the revoke.
    cache = KeyCache(ttl=60, clock=Clock())
    before, release = held(snapshot("active"))

    async def run() -> tuple[KeySnapshot | None, KeySnapshot | None]:
        early = asyncio.ensure_future(cache.read("h", before))
        await asyncio.sleep(0)
        cache.clear()  # the revoke
        late = await cache.read("h", lambda: None)
        release.set()
        return await early, late

    early, late = asyncio.run(run())
    assert early == snapshot("active") and late is None
    assert cache.get("h") == (True, None)  # the earlier read was not stored over it


def test_a_read_stuck_past_the_ttl_is_not_joined_by_later_requests() -> None:
    # One read hangs (a half-open database connection): the requests that came while it
    # was young wait for it, as they would have waited for their own; later ones read anew.
    clock = Clock()
    cache = KeyCache(ttl=2, clock=clock)
    stuck, release = held(snapshot("late"))

    async def run() -> tuple[KeySnapshot | None, KeySnapshot | None]:
        first = asyncio.ensure_future(cache.read("h", stuck))
        await asyncio.sleep(0)
        clock.now += 2.1  # past the cache's ttl: no longer worth joining
        later = await cache.read("h", lambda: snapshot("fresh"))
        release.set()
        return await first, later

    first, later = asyncio.run(run())
    assert later == snapshot("fresh") and first == snapshot("late")


def test_clear_from_a_worker_thread_never_breaks_a_store_on_the_event_loop() -> None:
    # The management endpoints clear the cache on their worker threads while reads land on
    # the event loop's; cachetools is not thread-safe, so a store over an entry racing an
    # in-place clear raised KeyError (and every waiter of that read got a 500).
    cache = KeyCache(ttl=60)
    errors: list[BaseException] = []
    stop = threading.Event()

    def stores() -> None:
        while not stop.is_set():
            try:
                cache.put("h", snapshot("k"), cache.version)
            except Exception as exc:  # any failure is the finding
                errors.append(exc)
                return

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        thread = threading.Thread(target=stores)
        thread.start()
        deadline = time.monotonic() + 3  # the race, unfixed, showed within 0.3 s
        while time.monotonic() < deadline and not errors:
            cache.clear()
        stop.set()
        thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []

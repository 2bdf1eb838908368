"""Connected mode's usage reports: queued on disk, retried through outages and restarts,
deduplicated by idempotency key, bounded, and delivered apart from request traffic."""

from __future__ import annotations

import os
import random
import stat
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from otari_server.app import create_app
from otari_server.connected.queue import QueueStats, UsageQueue
from otari_server.connected.reports import backoff
from otari_server.settings import ConfigError, state_dir
from tests.support.fakes import DEFAULT_TEXT, FakeOpenAI
from tests.support.platform_fake import (
    PROVIDER_KEY,
    USER_TOKEN,
    FakePlatform,
    Reply,
    attempt,
    connected_settings,
)
from tests.support.servers import running

MESSAGES: Any = [{"role": "user", "content": "Say hello"}]
# Short but real backoff: retries keep coming during an outage, and soon after it ends.
QUICK: dict[str, Any] = {"usage_backoff": 0.01, "usage_backoff_max": 0.1}


def chat(url: str) -> Any:
    with openai.OpenAI(base_url=f"{url}/v1", api_key=USER_TOKEN, max_retries=0) as client:
        return client.chat.completions.create(model="openai:gpt-4o-mini", messages=MESSAGES)


def chats(platform: FakePlatform, provider: FakeOpenAI, url: str, count: int) -> list[str]:
    """`count` chat requests, each routed to its own attempt id; those ids."""
    ids = [f"att-{n}" for n in range(count)]
    for attempt_id in ids:
        platform.push_resolve(
            body={
                "request_id": f"req-{attempt_id}",
                "fallback_enabled": True,
                "attempts": [attempt(provider, attempt_id, api_key=PROVIDER_KEY)],
            }
        )
        assert chat(url).choices[0].message.content == DEFAULT_TEXT
    return ids


def delivered_ids(platform: FakePlatform, count: int) -> list[str]:
    return sorted(report["correlation_id"] for report in platform.wait_usage(count))


def keys_tried(platform: FakePlatform) -> set[str]:
    return {seen.headers["idempotency-key"] for seen in platform.usage_requests}


def poll(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def metrics(url: str) -> dict[str, float]:
    """The scraped samples, keyed by name and labels as written."""
    text = httpx.get(f"{url}/metrics").text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


# -- outages and restarts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "outage", [Reply(503, {"detail": "down"}), Reply(drop=True)], ids=["503", "dropped"]
)
def test_every_report_arrives_exactly_once_after_an_outage(
    platform: FakePlatform, provider: FakeOpenAI, outage: Reply
) -> None:
    with running(connected_settings(platform, **QUICK)) as url:
        platform.outage = outage
        ids = chats(platform, provider, url, 5)
        # The outage lasts until every report was tried and retried at least twice.
        platform.wait_usage_tries(15)
        assert platform.usage == []
        platform.outage = None
        assert delivered_ids(platform, 5) == ids
        platform.settle()
    assert len(platform.usage) == 5
    assert len(keys_tried(platform)) == 5  # one key per report, the same on every try


def test_reports_left_at_shutdown_are_delivered_after_the_next_start(
    platform: FakePlatform, provider: FakeOpenAI
) -> None:
    settings = connected_settings(platform, usage_drain_timeout=0.5, **QUICK)
    platform.outage = Reply(503, {"detail": "down"})
    with running(settings) as url:
        ids = chats(platform, provider, url, 3)
        platform.wait_usage_tries(6)
    assert platform.usage == []
    queue = state_dir() / "usage-reports.sqlite3"
    assert stat.S_IMODE(os.stat(queue).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(queue.parent).st_mode) == 0o700
    platform.outage = None
    with running(settings):
        assert delivered_ids(platform, 3) == ids
    assert len(keys_tried(platform)) == 3


def test_a_report_that_landed_before_its_try_timed_out_is_recorded_once(
    platform: FakePlatform, provider: FakeOpenAI
) -> None:
    with running(connected_settings(platform, usage_timeout=0.3)) as url:
        platform.fail_usage(1, status=200, delay=5, landed=True)
        chat(url)
        first, second = platform.wait_usage_tries(2)
        platform.settle()
    assert len(platform.usage_requests) == 2
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert len(first.headers["idempotency-key"]) == 32
    assert platform.usage == [first.body]


def test_a_409_means_the_platform_has_the_report_already(
    platform: FakePlatform, provider: FakeOpenAI
) -> None:
    with running(connected_settings(platform, {"metrics": True})) as url:
        platform.fail_usage(1, status=409)
        chat(url)
        platform.wait_usage_tries(1)
        poll(lambda: metrics(url)["otari_platform_usage_deliveries_total"] == 1)
        platform.settle()
    assert len(platform.usage_requests) == 1


def test_undelivered_reports_expire_at_usage_max_age(
    platform: FakePlatform, provider: FakeOpenAI
) -> None:
    with running(
        connected_settings(platform, {"metrics": True}, usage_max_age=0.5, **QUICK)
    ) as url:
        platform.outage = Reply(503, {"detail": "down"})
        chat(url)
        poll(lambda: metrics(url).get('otari_platform_usage_dropped_total{reason="expired"}') == 1)
        assert metrics(url)["otari_platform_usage_queue_depth"] == 0
        platform.outage = None
        platform.settle()
    assert platform.usage == []


def test_a_full_queue_refuses_new_requests_until_it_drains(
    platform: FakePlatform, provider: FakeOpenAI
) -> None:
    with running(connected_settings(platform, usage_queue_max_bytes=1, **QUICK)) as url:
        platform.outage = Reply(503, {"detail": "down"})
        chat(url)  # the queue was empty: served, and its report fills the queue
        with pytest.raises(openai.APIStatusError) as info:
            chat(url)
        assert info.value.status_code == 503
        assert info.value.response.json()["error"]["code"] == "usage_queue_full"
        assert len(provider.requests) == 1 and len(platform.resolves) == 1
        platform.outage = None
        platform.wait_usage(1)
        assert chat(url).choices[0].message.content == DEFAULT_TEXT


def test_queue_metrics(platform: FakePlatform, provider: FakeOpenAI) -> None:
    with running(connected_settings(platform, {"metrics": True}, **QUICK)) as url:
        platform.outage = Reply(503, {"detail": "down"})
        chat(url)
        platform.wait_usage_tries(2)
        waiting = metrics(url)
        assert waiting["otari_platform_usage_queue_depth"] == 1
        assert waiting["otari_platform_usage_oldest_age_seconds"] > 0
        platform.outage = None
        platform.wait_usage(1)
        poll(lambda: metrics(url)["otari_platform_usage_queue_depth"] == 0)
        done = metrics(url)
    assert done["otari_platform_usage_deliveries_total"] == 1
    assert (
        done['otari_platform_usage_failures_total{outcome="HTTP 503"}']
        == len(platform.usage_requests) - 1
    )
    assert done["otari_platform_usage_oldest_age_seconds"] == 0


def test_metrics_are_off_unless_switched_on(platform: FakePlatform, provider: FakeOpenAI) -> None:
    with running(connected_settings(platform)) as url:
        assert httpx.get(f"{url}/metrics").status_code == 404


# -- reports never starve traffic ------------------------------------------------------------------


def test_a_hanging_usage_endpoint_holds_only_usage_concurrency_connections(
    platform: FakePlatform, provider: FakeOpenAI
) -> None:
    settings = connected_settings(
        platform, usage_concurrency=2, usage_timeout=30, usage_drain_timeout=0.1
    )
    with ExitStack() as stack:
        url = stack.enter_context(running(settings))
        platform.outage = Reply(200, delay=30)  # the platform takes reports, never answers
        chats(platform, provider, url, 12)  # every request is served meanwhile
        poll(lambda: platform.usage_in_flight == 2)
        assert len(platform.usage_requests) == 2
        platform.outage = None
    assert platform.usage_peak == 2


def test_an_unusable_queue_file_stops_start_up(platform: FakePlatform, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    settings = connected_settings(platform, usage_queue=str(blocker / "queue.sqlite3"))
    with pytest.raises(ConfigError, match=r"^platform\.usage_queue: cannot use .*queue\.sqlite3"):
        create_app(settings)


def test_the_queue_file_can_be_placed_anywhere(
    platform: FakePlatform, provider: FakeOpenAI, tmp_path: Path
) -> None:
    queue = tmp_path / "spool" / "reports.db"
    with running(connected_settings(platform, usage_queue=str(queue))) as url:
        chat(url)
        platform.wait_usage(1)
        # The database and its -wal and -shm companions alike.
        modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in queue.parent.iterdir()}
        assert modes == {"reports.db": 0o600, "reports.db-wal": 0o600, "reports.db-shm": 0o600}
    assert stat.S_IMODE(os.stat(queue).st_mode) == 0o600
    assert not (state_dir() / "usage-reports.sqlite3").exists()


def test_backoff_doubles_with_jitter_up_to_its_maximum() -> None:
    rng = random.Random(7)
    for tries, step in [(1, 0.25), (2, 0.5), (3, 1.0), (4, 2.0), (9, 60.0), (200, 60.0)]:
        delays = {backoff(tries, None, 0.25, 60.0, rng) for _ in range(50)}
        assert all(step / 2 <= delay <= step for delay in delays), (tries, delays)
        assert len(delays) == 50  # jittered: no two gateways wait alike
    assert backoff(1, "30", 0.25, 60.0, rng) == 30.0  # a longer Retry-After is honoured
    assert backoff(1, "999", 0.25, 60.0, rng) == 60.0  # up to the maximum
    assert backoff(3, "soon", 0.25, 60.0, rng) <= 1.0  # a non-numeric one is ignored


def test_worker_processes_sharing_the_queue_never_take_the_same_report(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite3"
    first, second = UsageQueue(path, 1 << 20), UsageQueue(path, 1 << 20)
    first.open()
    second.open()
    try:
        first.put("key-a", b'{"a": 1}', 1000.0)
        second.put("key-b", b'{"b": 2}', 1000.0)
        [taken] = first.claim(1001.0, 1, lease=35)
        [other] = second.claim(1001.0, 5, lease=35)
        assert {taken.key, other.key} == {"key-a", "key-b"}
        assert second.claim(1001.0, 5, lease=35) == []  # both leased
        second.remove(other.key)  # delivered
        assert first.stats() == QueueStats(depth=1, size=len(taken.body), oldest=1000.0)
        # A lease its holder never ended (the process died) runs out; the report is taken again.
        [again] = second.claim(1036.0, 5, lease=35)
        assert again == taken
        second.retry_at(again.key, 1100.0)
        assert second.claim(1099.0, 5, lease=35) == [] and second.next_due() == 1100.0
        [retried] = first.claim(1100.0, 5, lease=35)
        assert retried.key == taken.key and retried.tries == 1
        first.remove(retried.key)
        assert second.stats() == QueueStats(depth=0, size=0, oldest=None)
    finally:
        first.close()
        second.close()

"""Many instances, one truth: `otari serve` processes sharing one database.

Two instances on one PostgreSQL, and `--workers 2` on one machine: one budget holds exactly
across them, usage is counted once, a revocation or block through one is refused by the
others within the documented bound (auth_cache_ttl, 2 s by default; at most 5 s).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from decimal import Decimal
from pathlib import Path

import httpx

from tests.support.fakes import Behaviour, FakeOpenAI
from tests.support.procs import (
    ServeProcess,
    admin,
    books,
    budgeted_key,
    create,
    fake_provider,
    served,
    wait_until,
)

UPSTREAM_KEY = "sk-upstream-scaleout-1"
MODEL = "fake:gpt-4o-mini"
# Input is free and max_tokens equals what the fake answers ("Hello from the fake provider",
# 5 tokens), so the worst case reserved equals the real cost: exactly N requests fit.
OUTPUT_PRICE = "2000"
COST = Decimal("0.01")  # 5 tokens * 2000 / 1e6
FITS = 7
REQUESTS = 40
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
REVOCATION_BOUND = 5.0


def chat(url: str, key: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        json=CHAT,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


@contextmanager
def two_instances(
    tmp_path: Path, database_url: str, fake: FakeOpenAI
) -> Iterator[tuple[ServeProcess, ServeProcess]]:
    """Instance A migrates the schema; instance B, started after, does not."""
    providers = fake_provider(fake.base_url, UPSTREAM_KEY)
    with ExitStack() as stack:
        a = stack.enter_context(served(tmp_path / "a", database_url, providers=providers))
        b = stack.enter_context(
            served(tmp_path / "b", database_url, providers=providers, args=("--no-auto-migrate",))
        )
        yield a, b


def exact_budget(
    urls: list[str], key: str, fake: FakeOpenAI, database_url: str, user_id: str
) -> None:
    """Fire REQUESTS at once, spread over `urls`: exactly FITS are served, the rest get 402.

    Admitted requests are held at the fake provider, so all FITS reservations are in flight
    together while the refusals come back.
    """
    gate = fake.gate()
    fake.default = Behaviour(gate=gate)
    with ThreadPoolExecutor(REQUESTS) as pool:
        futures: list[Future[httpx.Response]] = [
            pool.submit(chat, urls[i % len(urls)], key) for i in range(REQUESTS)
        ]
        try:
            gate.wait_for(FITS, timeout=30)
            wait_until(
                lambda: sum(f.done() for f in futures) >= REQUESTS - FITS, 30, "the refusals"
            )
            held = books(database_url, user_id)
            assert gate.arrived == FITS
            assert held.reserved == FITS * COST
        finally:
            gate.release()
        responses = [f.result() for f in futures]
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * FITS + [402] * (REQUESTS - FITS), statuses
    for url in urls:  # every instance refused once the shared budget was held elsewhere
        assert any(
            r.status_code == 402 for i, r in enumerate(responses) if urls[i % len(urls)] == url
        )
    refusal = next(r for r in responses if r.status_code == 402).json()
    assert refusal["error"]["code"] == "budget_exceeded"
    served_ids = {r.headers["x-request-id"] for r in responses if r.status_code == 200}

    refused_ids = {r.headers["x-request-id"] for r in responses if r.status_code == 402}

    def settled() -> bool:
        now = books(database_url, user_id)
        return now.reserved == 0 and len(now.usage) >= REQUESTS

    wait_until(settled, 10, "settlements and usage rows")
    final = books(database_url, user_id)
    assert final.spend == FITS * COST
    assert final.reserved == 0
    assert all(amount == 0 for _, amount in final.holds), final.holds
    # Counted once: one row per served request, one "refused" row per 402, no duplicates.
    assert len(final.usage) == REQUESTS
    served_rows = [row for row in final.usage if row.status == "success"]
    assert {row.request_id for row in served_rows} == served_ids
    assert all(row.cost == COST for row in served_rows)
    refused_rows = [row for row in final.usage if row.status == "refused"]
    assert {row.request_id for row in refused_rows} == refused_ids
    assert all(row.cost is None and row.status_code == 402 for row in refused_rows)


def refused_within(url: str, key: str, change: httpx.Response) -> float:
    """Seconds until `url` refuses `key` with 401, after `change` was answered."""
    assert change.status_code in (200, 204), change.text
    changed = time.monotonic()

    def refused() -> bool:
        response = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert response.status_code in (200, 401), response.text
        return response.status_code == 401

    wait_until(refused, REVOCATION_BOUND + 2, f"{url} to refuse the key", interval=0.05)
    return time.monotonic() - changed


def test_two_instances_on_one_postgresql(tmp_path: Path, postgres_url: str) -> None:
    with (
        FakeOpenAI(api_key=UPSTREAM_KEY) as fake,
        two_instances(tmp_path, postgres_url, fake) as (a, b),
        admin(a.url) as client,
    ):
        # One budget, requests alternating between the instances.
        key = budgeted_key(client, "shared", str(FITS * COST), MODEL, OUTPUT_PRICE)
        exact_budget([a.url, b.url], key, fake, postgres_url, "shared")
        fake.default = Behaviour()
        assert chat(a.url, key).status_code == 402  # spent, as seen from either instance
        assert chat(b.url, key).status_code == 402
        assert len(fake.requests) == FITS

        # A revocation and a block through A reach B within the bound.
        create(client, "/v1/users", {"user_id": "alice"})
        create(client, "/v1/users", {"user_id": "bob"})
        revoked = create(client, "/v1/keys", {"user_id": "alice"})
        blocked = create(client, "/v1/keys", {"user_id": "bob"})
        for secret in (revoked["key"], blocked["key"]):  # B knows (and caches) both keys
            answer = httpx.get(f"{b.url}/v1/models", headers={"Authorization": f"Bearer {secret}"})
            assert answer.status_code == 200, answer.text
        took = refused_within(b.url, revoked["key"], client.delete(f"/v1/keys/{revoked['id']}"))
        assert took <= REVOCATION_BOUND
        took = refused_within(
            b.url, blocked["key"], client.patch("/v1/users/bob", json={"blocked": True})
        )
        assert took <= REVOCATION_BOUND
        refusal = httpx.post(
            f"{b.url}/v1/chat/completions",
            json=CHAT,
            headers={"Authorization": f"Bearer {blocked['key']}"},
        )
        assert refusal.status_code == 401
        assert refusal.json()["error"]["code"] == "user_blocked"
        assert len(fake.requests) == FITS


def test_workers_hold_the_budget_exactly(tmp_path: Path, sqlite_url: str) -> None:
    url = sqlite_url
    with (
        FakeOpenAI(api_key=UPSTREAM_KEY) as fake,
        served(
            tmp_path,
            url,
            providers=fake_provider(fake.base_url, UPSTREAM_KEY),
            args=("--workers", "2"),
        ) as gateway,
        admin(gateway.url) as client,
    ):
        key = budgeted_key(client, "workers", str(FITS * COST), MODEL, OUTPUT_PRICE)
        exact_budget([gateway.url], key, fake, url, "workers")
        assert gateway.terminate() == 0

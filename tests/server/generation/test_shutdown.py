"""Graceful shutdown and crashes of an `otari serve` process under load.

SIGTERM: the process stops accepting, lets in-flight requests (streams included) finish, a
request still running at `shutdown_timeout` is cut, and every reservation is settled and every
usage row written before it exits. SIGKILL: the holds left behind are given back at the next
start on the same host and port, and only usage not yet written (the last
`usage_flush_interval` window, and requests still in flight) is lost.
"""

from __future__ import annotations

import signal
from concurrent.futures import Future, ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from tests.support.fakes import Behaviour, FakeOpenAI
from tests.support.procs import admin, books, budgeted_key, fake_provider, served, wait_until

UPSTREAM_KEY = "sk-upstream-shutdown-1"
MODEL = "fake:gpt-4o-mini"
COST = Decimal("0.01")  # 5 completion tokens at 2000 per million; input is free
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
SHUTDOWN_TIMEOUT = 4


CUT = "<connection cut>"


def post(url: str, key: str, stream: bool) -> tuple[int, str, str]:
    """(status, body, request id) of one chat call, reading a stream to its end (or cut)."""
    body = {**CHAT, "stream": stream}
    with httpx.stream(
        "POST",
        f"{url}/v1/chat/completions",
        json=body,
        timeout=60,
        headers={"Authorization": f"Bearer {key}"},
    ) as response:
        pieces: list[str] = []
        try:
            pieces.extend(response.iter_text())
        except httpx.RemoteProtocolError:
            pieces.append(CUT)
        return response.status_code, "".join(pieces), response.headers.get("x-request-id", "")


def test_sigterm_under_load_finishes_settles_and_flushes(tmp_path: Path, sqlite_url: str) -> None:
    held, streams = 4, 4
    # The pool outlives the gateway: a failure kills the gateway first, freeing held calls.
    with (
        FakeOpenAI(api_key=UPSTREAM_KEY) as fake,
        ThreadPoolExecutor(held + streams + 1) as pool,
        served(
            tmp_path,
            sqlite_url,
            providers=fake_provider(fake.base_url, UPSTREAM_KEY),
            shutdown_timeout=SHUTDOWN_TIMEOUT,
        ) as gateway,
        admin(gateway.url) as client,
    ):
        key = budgeted_key(client, "load", "100", MODEL, "2000")
        gate, stuck = fake.gate(), fake.gate()
        calls: list[Future[tuple[int, str, str]]] = []
        for _ in range(held):  # held before the provider answers
            fake.push(gate=gate)
            calls.append(pool.submit(post, gateway.url, key, False))
        gate.wait_for(held)
        for _ in range(streams):  # streams held after their first two events reached us
            fake.push(gate=gate, hold_after=2)
            calls.append(pool.submit(post, gateway.url, key, True))
        gate.wait_for(held + streams)
        fake.push(gate=stuck, hold_after=2)  # a stream that outlives shutdown_timeout
        cut = pool.submit(post, gateway.url, key, True)
        stuck.wait_for(1)
        wait_until(
            lambda: books(sqlite_url, "load").reserved == (held + streams + 1) * COST,
            10,
            "every reservation to be committed",
        )

        gateway.signal(signal.SIGTERM)
        wait_until(lambda: not gateway.accepting(), 10, "the listener to close")
        gate.release()
        results = [call.result(timeout=30) for call in calls]
        code = gateway.wait(SHUTDOWN_TIMEOUT + 15)

        assert code in (0, -signal.SIGTERM), gateway.log()
        for status, text, _ in results:
            assert status == 200, text
        for _, text, _ in results[held:]:
            assert text.rstrip().endswith("data: [DONE]"), text  # streams finished whole
        cut_status, cut_text, cut_id = cut.result(timeout=30)
        assert cut_status == 200  # its headers and first events were sent before the cut
        assert cut_text.endswith(CUT), cut_text
        # uvicorn logs the cancelled stream's CancelledError; nothing of ours failed.
        assert "unhandled error" not in gateway.log(), gateway.log()

    final = books(sqlite_url, "load")
    assert final.reserved == 0
    assert all(amount == 0 for _, amount in final.holds), final.holds
    rows = {row.request_id: row for row in final.usage}
    assert len(final.usage) == held + streams + 1
    for _, _, request_id in results:  # every request the client saw succeed: one row
        assert rows[request_id].status == "success"
        assert rows[request_id].cost == COST
    # Metered as cut off, not lost: billed from the gateway's estimate of what it consumed,
    # the prompt (a token per four bytes of the request body; input is free here) and the
    # one content chunk relayed before the provider was held (the role chunk counts none).
    cut_row = rows[cut_id]
    assert cut_text.count("data: ") == 2, cut_text
    sent = httpx.Request("POST", gateway.url, json={**CHAT, "stream": True}).content
    assert (cut_row.status, cut_row.prompt_tokens, cut_row.completion_tokens) == (
        "client_disconnected",
        -(-len(sent) // 4),
        1,
    )
    assert cut_row.cost == Decimal("0.002")  # 1 output token at 2000 per million
    assert "usage estimated by the gateway" in (cut_row.error_message or "")
    assert final.spend == sum((row.cost or Decimal(0)) for row in final.usage)


def test_sigterm_exits_zero(tmp_path: Path, sqlite_url: str) -> None:
    with served(tmp_path, sqlite_url) as gateway:
        assert gateway.terminate(SHUTDOWN_TIMEOUT + 15) == 0


def test_sigkill_holds_are_reclaimed_at_next_start(tmp_path: Path, sqlite_url: str) -> None:
    served_before, in_flight = 3, 3
    with FakeOpenAI(api_key=UPSTREAM_KEY) as fake, ThreadPoolExecutor(in_flight) as pool:
        providers = fake_provider(fake.base_url, UPSTREAM_KEY)
        with (
            served(tmp_path, sqlite_url, providers=providers) as gateway,
            admin(gateway.url) as client,
        ):
            key = budgeted_key(client, "crash", "100", MODEL, "2000")
            for _ in range(served_before):
                assert post(gateway.url, key, False)[0] == 200
            # Write-behind: rows of served requests land within the flush window.
            wait_until(
                lambda: len(books(sqlite_url, "crash").usage) == served_before,
                5,
                "usage rows of the requests served before the crash",
            )
            gate = fake.gate()
            fake.default = Behaviour(gate=gate)
            lost = [pool.submit(post, gateway.url, key, False) for _ in range(in_flight)]
            gate.wait_for(in_flight)
            wait_until(
                lambda: books(sqlite_url, "crash").reserved == in_flight * COST,
                10,
                "the in-flight reservations",
            )
            gateway.kill()
            for call in lost:
                with pytest.raises(httpx.TransportError):
                    call.result(timeout=30)
            left = books(sqlite_url, "crash")
            assert left.reserved == in_flight * COST  # nobody gave them back yet
            assert sum(amount for _, amount in left.holds) == in_flight * COST
            port, config = gateway.port, gateway.config
        fake.default = Behaviour()

        with served(tmp_path, sqlite_url, port=port, config=config) as restarted:
            after = books(sqlite_url, "crash")
            assert after.reserved == 0
            assert all(amount == 0 for _, amount in after.holds), after.holds
            # Served requests were billed once; requests in flight at the crash were not.
            assert len(after.usage) == served_before
            assert after.spend == served_before * COST
            assert "gave back" in restarted.log()
            assert post(restarted.url, key, False)[0] == 200


def test_request_cut_at_shutdown_timeout_gets_json_503_a_row_and_its_hold_back(
    tmp_path: Path, sqlite_url: str
) -> None:
    with (
        FakeOpenAI(api_key=UPSTREAM_KEY) as fake,
        ThreadPoolExecutor(1) as pool,
        served(
            tmp_path,
            sqlite_url,
            providers=fake_provider(fake.base_url, UPSTREAM_KEY),
            shutdown_timeout=1,
        ) as gateway,
        admin(gateway.url) as client,
    ):
        key = budgeted_key(client, "cut", "100", MODEL, "2000")
        stuck = fake.gate()  # never released: the provider outlives shutdown_timeout
        fake.default = Behaviour(gate=stuck)
        call = pool.submit(post, gateway.url, key, False)
        stuck.wait_for(1)
        wait_until(lambda: books(sqlite_url, "cut").reserved == COST, 10, "the reservation")
        gateway.signal(signal.SIGTERM)
        status, text, request_id = call.result(timeout=30)
        assert gateway.wait(15) in (0, -signal.SIGTERM), gateway.log()
        stuck.release()
    assert status == 503, text
    error = httpx.Response(503, content=text).json()["error"]
    assert error["type"] == "service_unavailable"
    assert "shutting down" in error["message"]
    final = books(sqlite_url, "cut")
    assert final.reserved == 0 and all(amount == 0 for _, amount in final.holds)
    [row] = final.usage
    assert row.request_id == request_id and row.status == "error" and not row.cost
    assert row.error_message == "cut at shutdown (shutdown_timeout passed)"
    assert row.status_code == 503

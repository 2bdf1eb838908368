"""A database outage, without touching the shared PostgreSQL server.

The gateway reaches PostgreSQL through a small TCP proxy owned by the test; cutting the proxy
(closing its listener and every connection) is the outage, listening again on the same port is
the recovery. While the database is away, readiness says 503 at once and requests fail fast
with a clear 503; afterwards service resumes by itself, and nothing written before the outage,
nor the usage of requests that finished during it, is lost.
"""

from __future__ import annotations

import socket
import stat
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from otari_server.accounting.spool import spool_path
from tests.support.fakes import Behaviour, FakeOpenAI
from tests.support.procs import admin, books, budgeted_key, fake_provider, served, wait_until
from tests.support.servers import free_port

UPSTREAM_KEY = "sk-upstream-outage-1"
MODEL = "fake:gpt-4o-mini"
COST = Decimal("0.01")
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
FAST = 3.0  # seconds within which a refusal during the outage must come back


class TcpProxy:
    """Forwards 127.0.0.1:port to a target; `cut` drops everything, `restore` listens again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None

    def restore(self) -> None:
        """Listen (again) on the same port."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.05)
        self._stop.clear()
        self._listener = listener
        self._acceptor = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._acceptor.start()

    def cut(self) -> None:
        """Stop listening and reset every open connection, as a crashed server would."""
        self._stop.set()
        if self._acceptor is not None:
            self._acceptor.join(5)
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with suppress(OSError):  # linger 0: close with a reset, as a crash would
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self._sockets |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def proxy(postgres_url: str) -> Iterator[TcpProxy]:
    url = make_url(postgres_url)
    tcp = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    tcp.restore()
    yield tcp
    tcp.cut()


def through(postgres_url: str, proxy: TcpProxy) -> str:
    """The same database URL, reached through the proxy."""
    url = make_url(postgres_url).set(host="127.0.0.1", port=proxy.port)
    return url.render_as_string(hide_password=False)


def fast(method: str, url: str, **kwargs: Any) -> httpx.Response:
    """A request that must be answered within FAST seconds."""
    started = time.monotonic()
    response = httpx.request(method, url, timeout=FAST + 10, **kwargs)
    took = time.monotonic() - started
    assert took < FAST, f"{method} {url} took {took:.1f}s"
    assert "Traceback" not in response.text
    return response


def test_database_outage_and_recovery(tmp_path: Path, postgres_url: str, proxy: TcpProxy) -> None:
    held = 3
    with (
        FakeOpenAI(api_key=UPSTREAM_KEY) as fake,
        ThreadPoolExecutor(held) as pool,
        served(
            tmp_path,
            through(postgres_url, proxy),
            providers=fake_provider(fake.base_url, UPSTREAM_KEY),
        ) as gateway,
        admin(gateway.url) as client,
    ):
        key = budgeted_key(client, "u", "100", MODEL, "2000")
        auth = {"Authorization": f"Bearer {key}"}
        assert (
            httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=auth).status_code
            == 200
        )
        wait_until(lambda: len(books(postgres_url, "u").usage) == 1, 10, "the first usage row")

        # Requests in flight when the database goes away.
        gate = fake.gate()
        fake.default = Behaviour(gate=gate)
        in_flight = [
            pool.submit(
                httpx.post,
                f"{gateway.url}/v1/chat/completions",
                json=CHAT,
                headers=auth,
                timeout=30,
            )
            for _ in range(held)
        ]
        gate.wait_for(held)
        wait_until(
            lambda: books(postgres_url, "u").reserved == held * COST,
            10,
            "the in-flight reservations",
        )

        proxy.cut()
        ready = fast("GET", f"{gateway.url}/health/readiness")
        assert ready.status_code == 503
        assert ready.json()["database"] == "unreachable"
        assert fast("GET", f"{gateway.url}/health/liveness").status_code == 200
        gate.release()
        assert [f.result(timeout=30).status_code for f in in_flight] == [200] * held

        managed = fast("GET", f"{gateway.url}/v1/users/u", headers=client.headers)
        assert managed.status_code == 503
        assert managed.json() == {"detail": "database unavailable, retry later"}
        created = fast(
            "POST",
            f"{gateway.url}/v1/users",
            headers=client.headers,
            json={"user_id": "during-outage"},
        )
        assert created.status_code == 503
        fake.default = Behaviour()
        for headers in (auth, {"Authorization": "Bearer gw-unknown-key-not-cached"}):
            refused = fast("POST", f"{gateway.url}/v1/chat/completions", json=CHAT, headers=headers)
            assert refused.status_code == 503, refused.text
            error = refused.json()["error"]
            assert error["type"] == "service_unavailable"
            assert "database unavailable" in error["message"]
        assert len(books(postgres_url, "u").usage) == 1  # the rest wait in the writer

        proxy.restore()
        gateway.wait_ready(15)  # by itself: no restart

        def served_again() -> bool:
            response = httpx.post(
                f"{gateway.url}/v1/chat/completions", json=CHAT, headers=auth, timeout=30
            )
            assert response.status_code in (200, 503), response.text
            return response.status_code == 200

        wait_until(served_again, 10, "chat to succeed again", interval=0.2)
        assert client.get("/v1/users/u").status_code == 200  # written before the outage
        assert client.get("/v1/pricing").json()
        assert client.get("/v1/users/during-outage").status_code == 404

        def settled() -> bool:
            now = books(postgres_url, "u")
            return now.reserved == 0 and len(now.usage) >= 1 + held + 1

        wait_until(settled, 15, "usage of the requests served during the outage")
        final = books(postgres_url, "u")
        successes = [row for row in final.usage if row.status == "success"]
        assert len(successes) == 1 + held + 1, final.usage
        assert final.spend == len(successes) * COST
        assert "unhandled error" not in gateway.log(), gateway.log()


def test_rows_unwritten_at_shutdown_are_spooled_and_replayed_once(
    tmp_path: Path, postgres_url: str, proxy: TcpProxy
) -> None:
    with FakeOpenAI(api_key=UPSTREAM_KEY) as fake:
        providers = fake_provider(fake.base_url, UPSTREAM_KEY)
        with (
            served(tmp_path, through(postgres_url, proxy), providers=providers) as gateway,
            admin(gateway.url) as client,
        ):
            key = budgeted_key(client, "spool", "100", MODEL, "2000")
            auth = {"Authorization": f"Bearer {key}"}
            assert (
                httpx.post(
                    f"{gateway.url}/v1/chat/completions", json=CHAT, headers=auth
                ).status_code
                == 200
            )
            wait_until(
                lambda: len(books(postgres_url, "spool").usage) == 1, 10, "the first usage row"
            )
            gate = fake.gate()
            fake.default = Behaviour(gate=gate)
            with ThreadPoolExecutor(1) as pool:
                answered = pool.submit(
                    httpx.post,
                    f"{gateway.url}/v1/chat/completions",
                    json=CHAT,
                    headers=auth,
                    timeout=30,
                )
                gate.wait_for(1)
                wait_until(
                    lambda: books(postgres_url, "spool").reserved == COST, 10, "the reservation"
                )
                proxy.cut()  # the database goes away while the provider answers
                gate.release()
                finished = answered.result(timeout=30)
            assert finished.status_code == 200
            request_id = finished.headers["x-request-id"]
            spool = spool_path(f"{socket.gethostname()}:{gateway.port}")
            assert gateway.terminate(30) == 0, gateway.log()
            assert "saved to" in gateway.log()
            assert stat.S_IMODE(spool.stat().st_mode) == 0o600
            assert request_id.encode() in spool.read_bytes()
            assert b"sk-" not in spool.read_bytes()  # no key of any kind in the spool
            port, config = gateway.port, gateway.config
        proxy.restore()
        left = books(postgres_url, "spool")
        assert len(left.usage) == 1 and left.reserved == COST  # nothing written yet
        for _ in range(2):  # the second start finds nothing more to replay
            with served(
                tmp_path, through(postgres_url, proxy), port=port, config=config
            ) as restarted:
                final = books(postgres_url, "spool")
                assert restarted.terminate(30) == 0
            assert not spool.exists()
            assert len(final.usage) == 2, final.usage
            assert final.spend == 2 * COST and final.reserved == 0
            assert {row.request_id for row in final.usage} >= {request_id}

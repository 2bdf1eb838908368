"""Schemathesis over our own /openapi.json against a live gateway: no 5xx, no response that
breaks our own schema.

The `schemathesis run` CLI runs in a subprocess (Hypothesis stays out of the pytest worker)
against a gateway served from this test: one SQLite database, one fake provider so that
valid-looking generation requests get a real answer. Bounded: deterministic generation,
the fuzzing phase, valid and invalid inputs, MAX_EXAMPLES per operation, a hard
timeout. Bugs it found have their own regression tests below.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

try:
    import schemathesis  # noqa: F401  (the CLI below needs it installed)
except ImportError:  # a dev extra: a skip locally, a failure in CI
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("pip install schemathesis to run the schemathesis suite", allow_module_level=True)

from tests.support.fakes import FakeOpenAI
from tests.support.procs import ROOT
from tests.support.servers import MASTER_KEY, make_settings, running

UPSTREAM_KEY = "sk-upstream-schemathesis-1"
MASTER = {"Authorization": f"Bearer {MASTER_KEY}"}
MAX_EXAMPLES = 10
RUN_TIMEOUT = 150
# pydantic documents a Decimal it serializes as a string with this pattern.
DECIMAL_PATTERN = r"^(?!^[-+.]*$)[+-]?0*\d*\.?\d*$"


def money_as_numbers(node: Any) -> int:
    """Document string-typed Decimal fields as numbers, as they are sent; how many changed.

    Known bug (see test_money_fields_are_documented_as_numbers): until it is fixed this keeps
    the conformance check useful for everything else.
    """
    changed = 0
    if isinstance(node, dict):
        if node.get("type") == "string" and node.get("pattern") == DECIMAL_PATTERN:
            node["type"] = "number"
            del node["pattern"]
            node.pop("default", None)
            changed += 1
        for value in node.values():
            changed += money_as_numbers(value)
    elif isinstance(node, list):
        for value in node:
            changed += money_as_numbers(value)
    return changed


@contextmanager
def live_gateway(database_url: str) -> Iterator[str]:
    """A live gateway in front of one fake provider, with a price and a little data."""
    with FakeOpenAI(api_key=UPSTREAM_KEY) as fake:
        providers = {"fake": {"type": "openai", "base_url": fake.base_url, "api_key": UPSTREAM_KEY}}
        settings = make_settings(database_url, providers=providers, usage_flush_interval=0.05)
        with running(settings) as url, httpx.Client(base_url=url, headers=MASTER) as client:
            priced = client.post(
                "/v1/pricing",
                content=(
                    '{"model_key": "fake:gpt-4o-mini", "input_price_per_million": 1, '
                    '"output_price_per_million": 2}'
                ),
                headers={"content-type": "application/json"},
            )
            assert priced.status_code == 200, priced.text
            budget = client.post("/v1/budgets", json={"max_budget": 100}).json()
            created = client.post(
                "/v1/users", json={"user_id": "u1", "budget_id": budget["budget_id"]}
            )
            assert created.status_code == 200, created.text
            yield url


def test_no_server_error_and_responses_match_our_schema(sqlite_url: str, tmp_path: Path) -> None:
    with live_gateway(sqlite_url) as url:
        document = httpx.get(f"{url}/openapi.json").json()
        spec = tmp_path / "openapi.json"
        spec.write_text(json.dumps(document), encoding="utf-8")
        command = [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            str(spec),
            "--url",
            url,
            "--header",
            f"Authorization: Bearer {MASTER_KEY}",
            "--checks",
            "not_a_server_error,response_schema_conformance",
            # Fuzzing only: the coverage phase's value generation fails now and then
            # inside schemathesis when the machine is busy (a runtime error, no request).
            "--phases",
            "fuzzing",
            "--mode",
            "all",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--generation-deterministic",
            # Generous per-request time: the suite runs this beside other busy tests.
            "--no-shrink",
            "--request-timeout",
            "60",
            # One worker: with two threads, CPython 3.11's AST constructor (which the value
            # generation reaches) now and then fails with "SystemError: AST constructor
            # recursion depth mismatch" (python/cpython#106905), a runtime error, no request.
            "--workers",
            "1",
            "--no-color",
        ]
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path}
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=tmp_path, env=env
        )
    # Asserted once the gateway has stopped (see `answered`).
    report = done.stdout + done.stderr
    assert done.returncode == 0, report[-20000:]
    assert re.search(r"\d+ passed", report), report[-5000:]


def test_money_fields_are_documented_as_numbers(sqlite_url: str) -> None:
    with live_gateway(sqlite_url) as url:
        document = httpx.get(f"{url}/openapi.json").json()
    assert money_as_numbers(document) == 0


Send = Callable[[httpx.Client], httpx.Response]


def answered(database_url: str, send: Send) -> httpx.Response:
    """What a fresh gateway answers to `send`, returned once that gateway has stopped.

    Assertions run only after the server thread is gone: on CPython 3.11 a failure formatted
    while that thread still logs a traceback can crash pytest (the ast module's state is
    shared between threads, python/cpython#106905).
    """
    with (
        running(make_settings(database_url)) as url,
        httpx.Client(base_url=url, headers=MASTER) as client,
    ):
        response = send(client)
    return response


HUGE = [
    ("POST", "/v1/budgets", {"budget_duration_sec": 2**63}),
    ("POST", "/v1/keys", {"rpm_limit": 2**63}),
    ("POST", "/v1/users", {"user_id": "big", "tpm_limit": 2**63}),
    ("PATCH", "/v1/budgets/{budget}", {"budget_duration_sec": 10**12}),
]


def huge(method: str, path: str, body: dict[str, Any]) -> Send:
    """Send one over-large integer (to a budget that has a user, so PATCH re-times them)."""

    def send(client: httpx.Client) -> httpx.Response:
        budget = client.post("/v1/budgets", json={"max_budget": 1}).json()["budget_id"]
        client.post("/v1/users", json={"user_id": "p", "budget_id": budget})
        return client.request(method, path.format(budget=budget), json=body)

    return send


@pytest.mark.parametrize(("method", "path", "body"), HUGE)
def test_huge_integers_are_a_4xx_on_postgresql(
    postgres_url: str, method: str, path: str, body: dict[str, Any]
) -> None:
    response = answered(postgres_url, huge(method, path, body))
    assert 400 <= response.status_code < 500, response.text


@pytest.mark.parametrize(("method", "path", "body"), HUGE)
def test_huge_integers_are_a_4xx_on_sqlite(
    sqlite_url: str, method: str, path: str, body: dict[str, Any]
) -> None:
    response = answered(sqlite_url, huge(method, path, body))
    assert 400 <= response.status_code < 500, response.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/users"),
        ("PATCH", "/v1/users/u"),
        ("POST", "/v1/keys"),
        ("PATCH", "/v1/keys/{key}"),
    ],
)
def test_fractional_metadata_is_stored(database_url: str, method: str, path: str) -> None:
    def send(client: httpx.Client) -> httpx.Response:
        client.post("/v1/users", json={"user_id": "u"})
        key = client.post("/v1/keys", json={}).json()["id"]
        body = {"metadata": {"ratio": 0.5}, **({"user_id": "m"} if path == "/v1/users" else {})}
        return client.request(method, path.format(key=key), json=body)

    response = answered(database_url, send)
    assert response.status_code == 200, response.text
    assert response.json()["metadata"] == {"ratio": 0.5}


def test_decimal_rewrite_only_touches_decimal_strings() -> None:
    document = {
        "a": {"type": "string", "pattern": DECIMAL_PATTERN, "default": "0"},
        "b": {"type": "string", "pattern": "^x$"},
    }
    assert money_as_numbers(document) == 1
    assert json.dumps(document) == json.dumps(
        {"a": {"type": "number"}, "b": {"type": "string", "pattern": "^x$"}}
    )
    assert re.fullmatch(DECIMAL_PATTERN, "12.50")

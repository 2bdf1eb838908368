"""Gateway against a scripted loopback server: statuses become exit codes, money stays exact."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from otari_cli.client import Gateway, path
from otari_cli.errors import (
    ApiError,
    AuthFailed,
    ExitCode,
    Refused,
    ServerError,
    Unreachable,
    error_for_status,
)
from tests.cli.conftest import free_port
from tests.cli.fakes import Script


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (400, Refused, ExitCode.REFUSED),
        (404, Refused, ExitCode.REFUSED),
        (409, Refused, ExitCode.REFUSED),
        (422, Refused, ExitCode.REFUSED),
        (401, AuthFailed, ExitCode.AUTH),
        (403, AuthFailed, ExitCode.AUTH),
        (500, ServerError, ExitCode.SERVER),
        (503, ServerError, ExitCode.SERVER),
    ],
)
def test_status_to_exit_code(status: int, kind: type[ApiError], code: ExitCode) -> None:
    error = error_for_status(status, "m")
    assert type(error) is kind
    assert error.exit_code == code


def test_sends_the_master_key_and_decodes_money_as_decimal(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answer("GET", "/v1/budgets/b1", 200, '{"budget_id": "b1", "max_budget": 25.10}')
    with Gateway(url, "sk-master") as gateway:
        body = gateway.get("/v1/budgets/b1")
    assert body["max_budget"] == Decimal("25.10")
    assert isinstance(body["max_budget"], Decimal)
    assert script.seen[0].headers["Authorization"] == "Bearer sk-master"


def test_no_key_sends_no_authorization(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answer("GET", "/health", 200, {"status": "healthy"})
    with Gateway(url, None) as gateway:
        gateway.get("/health")
    assert "Authorization" not in script.seen[0].headers


def test_decimal_body_is_sent_as_an_exact_json_number(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answer("POST", "/v1/budgets", 200, {"budget_id": "b"})
    with Gateway(url, "k") as gateway:
        gateway.post("/v1/budgets", {"max_budget": Decimal("25.00")})
    assert script.seen[0].body == '{"max_budget":25.00}'
    assert script.seen[0].headers["Content-Type"] == "application/json"


def test_path_segments_are_percent_encoded(fake: tuple[str, Script]) -> None:
    url, script = fake
    encoded = "/v1/pricing/openrouter%3Ameta%2Fllama-3"
    assert path("v1", "pricing", "openrouter:meta/llama-3") == encoded
    script.answer("GET", encoded, 200, {"model_key": "openrouter:meta/llama-3"})
    with Gateway(url, "k") as gateway:
        assert gateway.get(encoded)["model_key"] == "openrouter:meta/llama-3"
    assert script.seen[0].path == encoded


def test_detail_string_becomes_the_message(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answer("GET", "/v1/keys/x", 404, {"detail": "Key not found"})
    with Gateway(url, "k") as gateway, pytest.raises(Refused) as caught:
        gateway.get("/v1/keys/x")
    assert caught.value.message == "HTTP 404: Key not found"
    assert caught.value.status == 404


def test_validation_details_are_listed(fake: tuple[str, Script]) -> None:
    url, script = fake
    detail = [
        {"loc": ["body", "max_budget"], "msg": "must be >= 0", "type": "x"},
        {"loc": ["query", "limit"], "msg": "too big", "type": "y"},
    ]
    script.answer("POST", "/v1/budgets", 422, {"detail": detail})
    with Gateway(url, "k") as gateway, pytest.raises(Refused) as caught:
        gateway.post("/v1/budgets", {})
    assert caught.value.message == "HTTP 422: max_budget: must be >= 0; limit: too big"


def test_openai_error_shape_and_non_json_bodies(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answer("GET", "/a", 401, {"error": {"message": "Invalid API key", "type": "auth"}})
    script.answer("GET", "/b", 502, "<html>bad\ngateway</html>")
    with Gateway(url, "k") as gateway:
        with pytest.raises(AuthFailed, match="Invalid API key"):
            gateway.get("/a")
        with pytest.raises(ServerError, match="HTTP 502: <html>bad gateway</html>"):
            gateway.get("/b")


def test_204_returns_none(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answer("DELETE", "/v1/keys/k1", 204, "")
    with Gateway(url, "k") as gateway:
        gateway.delete("/v1/keys/k1")
    assert script.seen[0].method == "DELETE"


def test_connection_refused_is_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Gateway(url, "k", hint=" (try otari start)") as gateway, pytest.raises(Unreachable) as c:
        gateway.get("/health")
    assert c.value.exit_code == ExitCode.UNREACHABLE
    assert url in c.value.message and c.value.message.endswith("(try otari start)")


def test_a_slow_gateway_times_out(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.hang.add("/slow")
    with Gateway(url, "k", timeout=0.3) as gateway, pytest.raises(Unreachable, match=r"0\.3s"):
        gateway.get("/slow")


def test_pages_until_a_short_page(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answer("GET", "/v1/usage", 200, [{"id": str(i)} for i in range(2)])
    with Gateway(url, "k") as gateway:
        rows = gateway.pages("/v1/usage", {"user_id": "u", "start_date": None}, page_size=5)
    assert len(rows) == 2
    query = script.seen[0].query
    assert query == {"user_id": ["u"], "skip": ["0"], "limit": ["5"]}


def test_pages_respects_a_limit_and_keeps_asking(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answer("GET", "/v1/keys", 200, [{"id": "a"}, {"id": "b"}])
    with Gateway(url, "k") as gateway:
        rows = gateway.pages("/v1/keys", page_size=2, limit=5)
    # Every page is full, so it asks three times (2 + 2 + 1) and never returns more than asked.
    assert len(rows) == 5
    assert [s.query["skip"][0] for s in script.seen] == ["0", "2", "4"]
    assert [s.query["limit"][0] for s in script.seen] == ["2", "2", "1"]


def test_readiness_reports_503_without_raising(fake: tuple[str, Script]) -> None:
    url, script = fake
    script.answer("GET", "/health/readiness", 503, {"status": "not ready"})
    with Gateway(url, None) as gateway:
        assert gateway.readiness() == (False, {"status": "not ready"})
    assert json.loads(script.routes[("GET", "/health/readiness")][1])["status"] == "not ready"

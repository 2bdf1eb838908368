"""Batches end to end: otari and openai SDKs -> otari -> FakeMedia's files and batch API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from otari import OtariClient
from otari.errors import BatchNotCompleteError

from tests.support.fakes import Failure
from tests.support.fakes_media import MEDIA_KEY, FakeMedia, MediaGateway, media_gateway
from tests.support.servers import MASTER_KEY

MODEL = "media:gpt-4o-mini"
REQUESTS = [
    {
        "custom_id": "r1",
        "body": {"messages": [{"role": "user", "content": "one two three"}], "max_tokens": 50},
    },
    {"custom_id": "r2", "body": {"messages": [{"role": "user", "content": "four five"}]}},
]
# At $1/M in and $2/M out: r1 is 3 + 5 tokens, r2 is 2 + 5 tokens.
R1_COST, R2_COST = Decimal("0.000013"), Decimal("0.000012")
CHAT_COST = Decimal("0.000011")  # "hi": 1 + 5 tokens
# The worst case held at creation: each line's JSON (with the model) is 100 and 80 bytes, so
# 34 and 27 prompt tokens (bytes / 3 + 1); r1 may answer 50 tokens, r2 default_max_tokens.
WORST = Decimal("0.008353")  # (34 + 27) x $1/M + (50 + 4096) x $2/M


@pytest.fixture
def gateway(database_url: str) -> Iterator[MediaGateway]:
    with media_gateway(database_url) as gw:
        gw.price(MODEL, "1", "2")
        yield gw


@pytest.fixture
def sdk(gateway: MediaGateway) -> Iterator[OtariClient]:
    """The otari SDK as user alice (budget 10)."""
    gateway.user("alice", max_budget="10")
    with OtariClient(api_base=gateway.url, api_key=gateway.key(user_id="alice")) as client:
        yield client


def create(sdk: OtariClient, requests: list[dict[str, Any]] = REQUESTS) -> str:
    batch = sdk.create_batch({"model": MODEL, "requests": requests})
    assert isinstance(batch, dict) and batch["status"] == "validating"
    return str(batch["id"])


def call(gateway: MediaGateway, method: str, path: str, key: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(
        method,
        f"{gateway.url}{path}",
        timeout=30,
        headers={"Authorization": f"Bearer {key}"},
        **kwargs,
    )


def meter_mark(gateway: MediaGateway, key: str, rows: int) -> list[dict[str, Any]]:
    """One chat call, then every usage row up to and including its own.

    The ledger writes rows in order, so any row a batch collection queued before this call
    is in the database by the time this call's row is: counting needs no sleeping.
    """
    gateway.client(key).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}]
    )
    found = gateway.usage(rows)
    assert found[0]["endpoint"] == "/v1/chat/completions"  # newest first
    return found


def test_create_uploads_the_jsonl_and_answers_the_provider_batch(
    gateway: MediaGateway, sdk: OtariClient
) -> None:
    batch = sdk.create_batch(
        {
            "model": MODEL,
            "requests": REQUESTS,
            "completion_window": "24h",
            "metadata": {"job": "nightly"},
        }
    )
    assert batch["object"] == "batch" and batch["id"].startswith("batch_fake")
    assert batch["request_counts"]["total"] == 2
    assert batch["metadata"] == {"job": "nightly"}
    upload, created = [r for r in gateway.media.requests if r.method == "POST"]
    assert upload.path == "/v1/files" and upload.headers["authorization"] == f"Bearer {MEDIA_KEY}"
    assert upload.body.value("purpose") == "batch"
    filename, content_type, data = upload.body.files["file"]
    assert filename is not None and filename.endswith(".jsonl")
    assert content_type == "application/jsonl"
    lines = [json.loads(line) for line in data.decode().splitlines()]
    assert lines == [
        {
            "custom_id": r["custom_id"],
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {**r["body"], "model": "gpt-4o-mini"},
        }
        for r in REQUESTS
    ]
    assert created.path == "/v1/batches"
    assert created.body == {
        "input_file_id": batch["input_file_id"],
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        "metadata": {"job": "nightly"},
    }
    assert gateway.admin.get("/v1/usage").json() == []  # nothing is billed at creation


def test_results_are_409_until_the_batch_ends_then_billed_once(
    gateway: MediaGateway, sdk: OtariClient
) -> None:
    batch_id = create(sdk)
    for status in ("validating", "in_progress", "finalizing"):
        gateway.media.set_status(batch_id, status)
        with pytest.raises(BatchNotCompleteError) as caught:
            sdk.retrieve_batch_results(batch_id, "media")
        assert caught.value.batch_id == batch_id and caught.value.batch_status == status
    gateway.media.finish(batch_id)
    first = sdk.retrieve_batch_results(batch_id, "media")
    assert [item.custom_id for item in first.results] == ["r1", "r2"]
    assert all(item.error is None for item in first.results)
    answer = first.results[0].result
    assert answer is not None and answer["choices"][0]["message"]["content"] == (
        "Hello from the fake provider"
    )
    rows = gateway.usage(2)
    assert sorted(r["cost"] for r in rows) == [R2_COST, R1_COST]
    assert {(r["prompt_tokens"], r["completion_tokens"]) for r in rows} == {(3, 5), (2, 5)}
    assert all(
        r["endpoint"] == "/v1/batches"
        and r["request_id"] == batch_id
        and r["user_id"] == "alice"
        and r["model"] == MODEL
        and r["status"] == "success"
        for r in rows
    )
    second = sdk.retrieve_batch_results(batch_id, "media")
    assert second.results == first.results
    meter_mark(gateway, gateway.key(user_id="alice"), 3)  # not 5: the second fetch is free
    user = gateway.get_user("alice")
    assert user["spend"] == R1_COST + R2_COST + CHAT_COST and user["reserved"] == 0


def test_failed_requests_come_back_as_errors_and_cost_nothing(
    gateway: MediaGateway, sdk: OtariClient
) -> None:
    batch_id = create(sdk)
    gateway.media.finish(
        batch_id, failures={"r2": Failure(400, "max_tokens is too large", code="invalid_value")}
    )
    results = sdk.retrieve_batch_results(batch_id, "media").results
    assert [(r.custom_id, r.result is not None) for r in results] == [("r1", True), ("r2", False)]
    assert results[1].error == {"code": "invalid_value", "message": "max_tokens is too large"}
    rows = {r["status"]: r for r in gateway.usage(2)}
    assert rows["success"]["cost"] == R1_COST
    assert not rows["error"]["cost"]
    assert rows["error"]["error_message"] == "r2: max_tokens is too large"
    assert gateway.get_user("alice")["spend"] == R1_COST


def test_a_cancelled_batch_bills_what_it_finished(gateway: MediaGateway, sdk: OtariClient) -> None:
    batch_id = create(sdk)
    client = gateway.client(gateway.key(user_id="alice"))
    cancelled = client.batches.cancel(batch_id, extra_query={"provider": "media"})
    assert cancelled.id == batch_id and cancelled.status == "cancelling"
    assert gateway.media.last.path == f"/v1/batches/{batch_id}/cancel"
    gateway.media.finish(batch_id, "cancelled", done=["r1"])
    results = sdk.retrieve_batch_results(batch_id, "media").results
    assert [r.custom_id for r in results] == ["r1"]
    [row] = gateway.usage(1)
    assert row["cost"] == R1_COST


def test_retrieve_and_list_with_the_openai_sdk(gateway: MediaGateway, sdk: OtariClient) -> None:
    first, second = create(sdk), create(sdk)
    client = gateway.client(gateway.key(user_id="alice"))
    gateway.media.set_status(first, "in_progress")
    batch = client.batches.retrieve(first, extra_query={"provider": "media"})
    assert batch.status == "in_progress" and batch.request_counts is not None
    assert batch.request_counts.total == 2
    page = client.batches.list(limit=1, extra_query={"provider": "media"})
    assert [b.id for b in page.data] == [second] and page.has_more
    assert gateway.media.last.query == {"limit": "1"}
    # Iterating pages on: the SDK sends `after` (and keeps `provider`) for the next page.
    assert [b.id for b in page] == [second, first]
    assert gateway.media.last.query == {"limit": "1", "after": second}
    assert [b["id"] for b in sdk.list_batches("media")] == [second, first]


def test_other_keys_cannot_see_or_touch_a_batch(gateway: MediaGateway, sdk: OtariClient) -> None:
    batch_id = create(sdk)
    gateway.media.finish(batch_id)
    gateway.user("mallory")
    other = gateway.key(user_id="mallory")
    for method, path in (
        ("GET", f"/v1/batches/{batch_id}"),
        ("POST", f"/v1/batches/{batch_id}/cancel"),
        ("GET", f"/v1/batches/{batch_id}/results"),
    ):
        reply = call(gateway, method, f"{path}?provider=media", other)
        assert reply.status_code == 404, (path, reply.text)
    listed = call(gateway, "GET", "/v1/batches?provider=media", other)
    assert listed.status_code == 200 and listed.json()["data"] == []
    # Another key of the same user sees it; so does the master key.
    assert (
        call(gateway, "GET", "/v1/batches?provider=media", gateway.key(user_id="alice")).json()[
            "data"
        ][0]["id"]
        == batch_id
    )
    assert (
        call(gateway, "GET", f"/v1/batches/{batch_id}?provider=media", MASTER_KEY).status_code
        == 200
    )
    assert call(gateway, "GET", "/v1/batches?provider=media", "wrong").status_code == 401
    assert gateway.admin.get("/v1/usage").json() == []


def test_the_master_key_bills_the_named_user(gateway: MediaGateway) -> None:
    gateway.user("bob", max_budget="1")
    reply = call(
        gateway,
        "POST",
        "/v1/batches",
        MASTER_KEY,
        json={"model": MODEL, "requests": REQUESTS, "user": "bob"},
    )
    assert reply.status_code == 200, reply.text
    batch_id = reply.json()["id"]
    gateway.media.finish(batch_id)
    results = call(gateway, "GET", f"/v1/batches/{batch_id}/results?provider=media", MASTER_KEY)
    assert results.status_code == 200 and len(results.json()["results"]) == 2
    rows = gateway.usage(2)
    assert {r["user_id"] for r in rows} == {"bob"}
    assert gateway.get_user("bob")["spend"] == R1_COST + R2_COST


def test_a_batch_holds_the_worst_case_of_every_line_until_it_is_collected(
    gateway: MediaGateway, sdk: OtariClient
) -> None:
    batch_id = create(sdk)
    assert gateway.get_user("alice")["reserved"] == WORST
    gateway.media.finish(batch_id)
    sdk.retrieve_batch_results(batch_id, "media")
    # Rows, spend and the hold's release land in the collection's own transaction.
    assert len(gateway.usage(2)) == 2
    user = gateway.get_user("alice")
    assert user["spend"] == R1_COST + R2_COST and user["reserved"] == 0
    sdk.retrieve_batch_results(batch_id, "media")
    assert gateway.get_user("alice")["reserved"] == 0  # released once only


def test_a_batch_whose_worst_case_does_not_fit_is_refused_before_the_provider(
    gateway: MediaGateway,
) -> None:
    # The real cost (0.000025) would fit, but the worst case (r2 may answer 4096 tokens)
    # does not: the batch would otherwise be billed past the budget.
    gateway.user("carol", max_budget="0.0001")
    key = gateway.key(user_id="carol")
    reply = call(gateway, "POST", "/v1/batches", key, json={"model": MODEL, "requests": REQUESTS})
    assert reply.status_code == 402
    assert reply.json()["error"]["code"] == "budget_exceeded"
    assert reply.json()["error"]["message"] == (
        "Budget exceeded for user 'carol': this request may cost up to 0.008353, "
        "0.0001 of 0.0001 remains"
    )
    assert gateway.media.requests == [] and gateway.media.files == {}
    assert gateway.get_user("carol")["reserved"] == 0
    [row] = gateway.usage(1)  # refused, as a chat request is: a row, nothing spent
    assert (row["status"], row["status_code"], row["endpoint"]) == ("refused", 402, "/v1/batches")
    assert (row["user_id"], row["model"], row["cost"]) == ("carol", MODEL, None)
    assert row["request_id"] == reply.headers["x-request-id"]
    # Lowering the lines' max_tokens makes it fit: 34 + 32 tokens in (99 and 95 bytes),
    # 2 x 4 out at most: 66 x $1/M + 8 x $2/M.
    small = [{**r, "body": {**r["body"], "max_tokens": 4}} for r in REQUESTS]
    reply = call(gateway, "POST", "/v1/batches", key, json={"model": MODEL, "requests": small})
    assert reply.status_code == 200, reply.text
    assert gateway.get_user("carol")["reserved"] == Decimal("0.000082")


def test_a_provider_refusal_at_creation_gives_the_hold_back(
    gateway: MediaGateway, sdk: OtariClient
) -> None:
    gateway.media.fail(500, "storage is down")
    with pytest.raises(Exception, match="storage is down"):
        sdk.create_batch({"model": MODEL, "requests": REQUESTS})
    assert gateway.get_user("alice")["reserved"] == 0


@pytest.mark.parametrize("named", ["media:other-model", "gpt-4o", "claude:claude-sonnet"])
def test_a_line_naming_another_model_is_refused(gateway: MediaGateway, named: str) -> None:
    lines = [REQUESTS[0], {**REQUESTS[1], "body": {**REQUESTS[1]["body"], "model": named}}]
    reply = call(
        gateway, "POST", "/v1/batches", gateway.key(), json={"model": MODEL, "requests": lines}
    )
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == "requests.1.body.model" and error["code"] == "model_mismatch"
    assert error["message"] == (
        f"requests.1 (custom_id 'r2') names model '{named}', but this batch runs "
        "'media:gpt-4o-mini': a batch runs one model, so send one batch per model "
        "(or leave 'model' out of the lines)"
    )
    assert gateway.media.requests == []


@pytest.mark.parametrize("named", [MODEL, "gpt-4o-mini"])
def test_a_line_may_name_the_batch_model_either_way(gateway: MediaGateway, named: str) -> None:
    lines = [REQUESTS[0], {**REQUESTS[1], "body": {**REQUESTS[1]["body"], "model": named}}]
    reply = call(
        gateway, "POST", "/v1/batches", gateway.key(), json={"model": MODEL, "requests": lines}
    )
    assert reply.status_code == 200, reply.text
    upload = gateway.media.requests[0]
    models = {
        json.loads(line)["body"]["model"]
        for line in upload.body.files["file"][2].decode().splitlines()
    }
    assert models == {"gpt-4o-mini"}


def test_results_stay_metered_across_a_restart(database_url: str) -> None:
    with FakeMedia(api_key=MEDIA_KEY) as fake:
        with media_gateway(database_url, fake=fake) as gateway:
            gateway.price(MODEL, "1", "2")
            key = gateway.key()
            reply = call(
                gateway, "POST", "/v1/batches", key, json={"model": MODEL, "requests": REQUESTS}
            )
            batch_id = reply.json()["id"]
            fake.finish(batch_id)
            path = f"/v1/batches/{batch_id}/results?provider=media"
            assert call(gateway, "GET", path, key).status_code == 200
            gateway.usage(2)
        with media_gateway(database_url, fake=fake) as again:
            assert call(again, "GET", path, key).status_code == 200
            meter_mark(again, key, 3)


def test_a_batch_hold_outlives_a_restart_until_collection(database_url: str) -> None:
    with FakeMedia(api_key=MEDIA_KEY) as fake:
        with media_gateway(database_url, fake=fake) as gateway:
            gateway.price(MODEL, "1", "2")
            gateway.user("alice", max_budget="10")
            key = gateway.key(user_id="alice")
            reply = call(
                gateway, "POST", "/v1/batches", key, json={"model": MODEL, "requests": REQUESTS}
            )
            batch_id = reply.json()["id"]
        # The start-up reclaims the holds of requests in flight, not those of batches.
        with media_gateway(database_url, fake=fake) as again:
            assert again.get_user("alice")["reserved"] == WORST
            fake.finish(batch_id)
            path = f"/v1/batches/{batch_id}/results?provider=media"
            assert call(again, "GET", path, key).status_code == 200
            user = again.get_user("alice")
            assert user["reserved"] == 0 and user["spend"] == R1_COST + R2_COST


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MODEL, "requests": []}, "requests"),
        ({"requests": REQUESTS}, "model"),
        ({"model": MODEL, "requests": [REQUESTS[0], REQUESTS[0]]}, "requests"),
        ({"model": MODEL, "requests": [{"custom_id": "x"}]}, "requests.0.body"),
        ({"model": "claude:claude-sonnet", "requests": REQUESTS}, "provider"),
        ({"model": "nowhere:gpt", "requests": REQUESTS}, "model"),
        ({"model": "media:unpriced", "requests": REQUESTS}, "model"),
        (
            {"model": MODEL, "requests": [{"custom_id": "x", "body": {"max_tokens": 0}}]},
            "requests.0.body.max_tokens",
        ),
        (
            {
                "model": MODEL,
                "requests": [{"custom_id": "x", "body": {"max_completion_tokens": True}}],
            },
            "requests.0.body.max_completion_tokens",
        ),
        *(  # n is what the hold multiplies the output by: the same rule as on chat
            (
                {
                    "model": MODEL,
                    "requests": [REQUESTS[0], {"custom_id": "x", "body": {"n": bad}}],
                },
                "requests.1.body.n",
            )
            for bad in ("3", 1.5, True, 0, -100)
        ),
    ],
)
def test_bad_batches_are_refused_before_the_provider(
    gateway: MediaGateway, body: dict[str, Any], param: str
) -> None:
    gateway.price("claude:claude-sonnet", "1", "1")
    reply = call(gateway, "POST", "/v1/batches", gateway.key(), json=body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == param
    assert gateway.media.requests == [] and gateway.anthropic_fake.requests == []


def test_allow_lists_apply_to_batches(gateway: MediaGateway) -> None:
    key = gateway.key(allowed_models=["media:other"])
    reply = call(gateway, "POST", "/v1/batches", key, json={"model": MODEL, "requests": REQUESTS})
    assert reply.status_code == 403 and reply.json()["error"]["code"] == "model_not_allowed"


@pytest.mark.parametrize(
    ("query", "status"), [("", 422), ("?provider=nowhere", 400), ("?provider=claude", 400)]
)
def test_the_provider_parameter_is_checked(gateway: MediaGateway, query: str, status: int) -> None:
    reply = call(gateway, "GET", f"/v1/batches{query}", gateway.key())
    assert reply.status_code == status, reply.text
    assert gateway.media.requests == []


def test_provider_failures_are_passed_on(gateway: MediaGateway, sdk: OtariClient) -> None:
    gateway.media.fail(500, "storage is down")
    reply = call(
        gateway, "POST", "/v1/batches", gateway.key(), json={"model": MODEL, "requests": REQUESTS}
    )
    assert reply.status_code == 502 and "storage is down" in reply.json()["error"]["message"]
    batch_id = create(sdk)
    gateway.media.finish(batch_id)
    gateway.media.push(malformed=True)  # the status answer
    client = gateway.client(gateway.key(user_id="alice"))
    with pytest.raises(openai.APIStatusError) as caught:
        client.batches.retrieve(batch_id, extra_query={"provider": "media"})
    assert caught.value.status_code == 502
    gateway.media.push()  # the status answer, then a failed download of the output file
    gateway.media.fail(404, "No such File object")
    path = f"/v1/batches/{batch_id}/results?provider=media"
    reply = call(gateway, "GET", path, gateway.key(user_id="alice"))
    assert reply.status_code == 404 and "No such File object" in reply.text
    # Nothing was metered, so the next collection bills the results.
    assert call(gateway, "GET", path, gateway.key(user_id="alice")).status_code == 200
    assert len(gateway.usage(2)) == 2


def test_a_batch_after_a_calendar_month_ended_starts_the_next_month(
    gateway: MediaGateway, database_url: str
) -> None:
    """The batch hold rolls a calendar budget over to the current month: it kept the old
    start with no next reset, so the budget never reset again."""
    from datetime import UTC, datetime

    from sqlalchemy import update

    from otari_server.accounting import budget_rules
    from otari_server.storage.db import create_db_engine, session_factory
    from otari_server.storage.tables import User

    budget = gateway.admin.post(
        "/v1/budgets", json={"max_budget": 1, "reset_alignment": "calendar_month"}
    )
    assert budget.status_code == 200, budget.text
    reply = gateway.admin.post(
        "/v1/users", json={"user_id": "dora", "budget_id": budget.json()["budget_id"]}
    )
    assert reply.status_code == 200, reply.text
    engine = create_db_engine(database_url)
    with session_factory(engine).begin() as session:  # January 2026's period, all spent
        session.execute(
            update(User)
            .where(User.user_id == "dora")
            .values(
                spend=Decimal(1),
                budget_started_at=datetime(2026, 1, 1, tzinfo=UTC),
                next_budget_reset_at=datetime(2026, 2, 1, tzinfo=UTC),
            )
        )
    engine.dispose()
    reply = call(
        gateway,
        "POST",
        "/v1/batches",
        gateway.key(user_id="dora"),
        json={"model": MODEL, "requests": REQUESTS},
    )
    assert reply.status_code == 200, reply.text
    user = gateway.get_user("dora")
    period = budget_rules.calendar_period(
        datetime.fromisoformat(user["budget_started_at"]), "calendar_month"
    )
    assert (user["spend"], user["reserved"]) == (0, WORST)
    assert datetime.fromisoformat(user["budget_started_at"]) == period.started_at
    assert datetime.fromisoformat(user["next_budget_reset_at"]) == period.resets_at
    assert period.started_at > datetime(2026, 1, 1, tzinfo=UTC)


def limited_user(gateway: MediaGateway, user_id: str, **limits: int) -> str:
    """A user on a budget with the given request/token limits (no money limit); their key."""
    budget = gateway.admin.post("/v1/budgets", json=limits)
    assert budget.status_code == 200, budget.text
    reply = gateway.admin.post(
        "/v1/users", json={"user_id": user_id, "budget_id": budget.json()["budget_id"]}
    )
    assert reply.status_code == 200, reply.text
    return gateway.key(user_id=user_id)


# The worst case in tokens: 34 + 50 for r1, 27 + 4096 (default_max_tokens) for r2.
WORST_TOKENS = 34 + 50 + 27 + 4096


def test_a_batch_with_more_lines_than_the_request_limit_leaves_is_refused(
    gateway: MediaGateway,
) -> None:
    key = limited_user(gateway, "erin", request_limit=1)
    reply = call(gateway, "POST", "/v1/batches", key, json={"model": MODEL, "requests": REQUESTS})
    assert reply.status_code == 402
    assert reply.json()["error"]["code"] == "budget_exceeded"
    assert reply.json()["error"]["message"] == (
        "Request limit exceeded for user 'erin': this batch may use up to 2 requests, 1 of 1 remain"
    )
    assert gateway.media.requests == [] and gateway.media.files == {}
    assert gateway.get_user("erin")["reserved_requests"] == 0
    one = call(gateway, "POST", "/v1/batches", key, json={"model": MODEL, "requests": REQUESTS[:1]})
    assert one.status_code == 200, one.text
    assert gateway.get_user("erin")["reserved_requests"] == 1
    # The period's one request is held: not even a single chat call fits beside it.
    refused = call(
        gateway,
        "POST",
        "/v1/chat/completions",
        key,
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert refused.status_code == 402


def test_a_batch_holds_its_worst_case_tokens_and_requests_until_collected(
    gateway: MediaGateway,
) -> None:
    key = limited_user(gateway, "fay", request_limit=10, token_limit=WORST_TOKENS - 1)
    reply = call(gateway, "POST", "/v1/batches", key, json={"model": MODEL, "requests": REQUESTS})
    assert reply.status_code == 402
    assert reply.json()["error"]["message"] == (
        f"Token limit exceeded for user 'fay': this batch may use up to {WORST_TOKENS} "
        f"tokens, {WORST_TOKENS - 1} of {WORST_TOKENS - 1} remain"
    )
    assert gateway.media.requests == []
    # With r2 answering at most 4 tokens: 34 + 50 + 32 + 4 (its line is 95 bytes now).
    small = [REQUESTS[0], {**REQUESTS[1], "body": {**REQUESTS[1]["body"], "max_tokens": 4}}]
    reply = call(gateway, "POST", "/v1/batches", key, json={"model": MODEL, "requests": small})
    assert reply.status_code == 200, reply.text
    user = gateway.get_user("fay")
    assert (user["reserved_requests"], user["reserved_tokens"]) == (2, 34 + 50 + 32 + 4)
    assert user["reserved"] == Decimal("0.000174")  # money is held too: 66 x $1/M + 54 x $2/M
    batch_id = reply.json()["id"]
    gateway.media.finish(batch_id)
    results = call(gateway, "GET", f"/v1/batches/{batch_id}/results?provider=media", key)
    assert results.status_code == 200, results.text
    assert [r["status"] for r in gateway.usage(3)] == ["success", "success", "refused"]
    user = gateway.get_user("fay")
    # What the lines used counts toward the period; the hold is given back in full.
    assert (user["reserved"], user["reserved_requests"], user["reserved_tokens"]) == (0, 0, 0)
    assert (user["current_requests"], user["current_tokens"]) == (2, 3 + 5 + 2 + 4)


def test_a_batch_collected_after_its_budget_period_ended_counts_in_the_new_one(
    gateway: MediaGateway, database_url: str
) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from otari_server.storage.db import create_db_engine, session_factory
    from otari_server.storage.tables import User, utcnow

    budget = gateway.admin.post("/v1/budgets", json={"max_budget": 1, "budget_duration_sec": 3600})
    assert budget.status_code == 200, budget.text
    reply = gateway.admin.post(
        "/v1/users", json={"user_id": "gil", "budget_id": budget.json()["budget_id"]}
    )
    assert reply.status_code == 200, reply.text
    key = gateway.key(user_id="gil")
    created = call(gateway, "POST", "/v1/batches", key, json={"model": MODEL, "requests": REQUESTS})
    assert created.status_code == 200, created.text
    # The hour ends while the batch runs, and nothing rolls the period over before collection.
    engine = create_db_engine(database_url)
    with session_factory(engine).begin() as session:
        now = utcnow()
        session.execute(
            update(User)
            .where(User.user_id == "gil")
            .values(
                budget_started_at=now - timedelta(hours=2),
                next_budget_reset_at=now - timedelta(hours=1),
            )
        )
    engine.dispose()
    batch_id = created.json()["id"]
    gateway.media.finish(batch_id)
    assert call(gateway, "GET", f"/v1/batches/{batch_id}/results?provider=media", key).is_success
    rows = meter_mark(gateway, key, 3)  # a chat call after: it would roll over an ended period
    user = gateway.get_user("gil")
    assert user["next_budget_reset_at"] > utcnow().isoformat()
    # The batch's two results and the chat call, all in the new period.
    assert user["current_requests"] == 3
    assert user["spend"] == R1_COST + R2_COST + CHAT_COST == sum(r["cost"] for r in rows)
    assert user["reserved"] == 0

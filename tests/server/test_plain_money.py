"""Money on the wire is plain decimal notation, down to the store's 10^-10 (issue 11 item 9)."""

from __future__ import annotations

import re
from decimal import Decimal

from starlette.testclient import TestClient

from otari_server.jsonio import dumps, loads
from tests.support.factories import MASTER
from tests.support.fakes import Behaviour
from tests.support.gateway import Gateway

# A JSON number with an exponent, as str(Decimal) or a float repr would write it: 3.75E-8, 4e-05.
EXPONENT = re.compile(r"[:,\[]-?\d+(?:\.\d+)?[eE][+-]?\d")


def test_dumps_writes_every_decimal_in_plain_notation() -> None:
    values = [
        Decimal("1E-10"),
        Decimal("3.75E-8"),
        Decimal("4e-05"),
        Decimal("1E+2"),
        Decimal("25.00"),
        Decimal("-0"),
        Decimal("12.345678901234567890"),
    ]
    assert dumps(values) == ("[0.0000000001,0.0000000375,0.00004,100,25,0,12.34567890123456789]")
    assert dumps({"nested": {"cost": Decimal("7.5E-10")}}) == '{"nested":{"cost":0.00000000075}}'


def test_tiny_money_reads_plain_on_every_management_answer(gateway: Gateway) -> None:
    admin = gateway.admin
    gateway.price("fake:tiny-model", "0.00001", "0.0075")
    pricing = admin.get("/v1/pricing/fake:tiny-model")
    assert '"input_price_per_million":0.00001,' in pricing.text
    assert '"output_price_per_million":0.0075,' in pricing.text
    gateway.price("fake:tenth-nano", "0.0000000001", "0.0000000375")
    priced = admin.get("/v1/pricing/fake:tenth-nano").text
    assert '"input_price_per_million":0.0000000001,' in priced
    assert '"output_price_per_million":0.0000000375,' in priced
    assert not EXPONENT.search(admin.get("/v1/pricing").text)
    assert not EXPONENT.search(admin.get("/v1/models").text)

    gateway.user("tiny", max_budget="0.0000000001")
    user = admin.get("/v1/users/tiny").json()
    budget = admin.get(f"/v1/budgets/{user['budget_id']}").text
    assert '"max_budget":0.0000000001' in budget
    admin.patch(f"/v1/budgets/{user['budget_id']}", json={"max_budget": 1})

    key = gateway.key(user_id="tiny")
    gateway.openai_fake.push(
        Behaviour(
            body={
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": "tiny-model",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "hi"},
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            }
        )
    )
    gateway.client(key).chat.completions.create(
        model="fake:tiny-model", messages=[{"role": "user", "content": "hi"}]
    )
    # 10 x 0.00001 / 10^6 + 5 x 0.0075 / 10^6 = 0.0000000001 + 0.0000000375
    [row] = gateway.usage(1)
    assert row["cost"] == Decimal("0.0000000376")
    usage = admin.get("/v1/usage").text
    assert '"cost":0.0000000376' in usage and not EXPONENT.search(usage)
    user_text = admin.get("/v1/users/tiny").text
    assert '"spend":0.0000000376' in user_text
    assert loads(user_text)["spend"] == Decimal("0.0000000376")
    assert '"cost":0.0000000376' in admin.get("/v1/users/tiny/usage").text


def test_dumps_holds_what_json_holds_past_orjsons_own_limits() -> None:
    # A client's metadata may carry integers past 64 bits or deep nesting: still written.
    assert dumps({"n": 10**30, "m": [-(10**25), Decimal("1E-10")]}) == (
        '{"n":1000000000000000000000000000000,"m":[-10000000000000000000000000,0.0000000001]}'
    )
    deep: dict[str, object] = {"cost": Decimal("3.75E-8")}
    for _ in range(600):
        deep = {"x": deep}
    text = dumps(deep)
    assert text == '{"x":' * 600 + '{"cost":0.0000000375}' + "}" * 600


def test_metadata_with_a_huge_integer_round_trips(sqlite_client: TestClient) -> None:
    body = '{"user_id": "big", "metadata": {"n": 1000000000000000000000000000000}}'
    created = sqlite_client.post(
        "/v1/users", content=body, headers={**MASTER, "content-type": "application/json"}
    )
    assert created.status_code == 200, created.text
    fetched = sqlite_client.get("/v1/users/big", headers=MASTER)
    assert fetched.status_code == 200
    assert '"metadata":{"n":1000000000000000000000000000000}' in fetched.text

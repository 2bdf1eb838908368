"""`otari alerts test` against a real gateway and a webhook receiver on loopback."""

from __future__ import annotations

import hashlib
import hmac
from decimal import Decimal

from otari_cli.errors import ExitCode
from otari_server.jsonio import loads
from tests.cli.conftest import InProcess
from tests.server.accounting.test_alerts import SECRET, Receiver, alerts_config
from tests.support.servers import MASTER_KEY, make_settings, running


def test_alerts_test_sends_one_signed_sample_event(sqlite_url: str) -> None:
    with (
        Receiver(statuses=(200, 503)) as receiver,
        running(make_settings(sqlite_url, alerts=alerts_config(receiver))) as url,
    ):
        cli = InProcess(url, MASTER_KEY)
        sent = cli("alerts", "test")
        assert sent.code == 0, sent.err
        assert sent.json() == {"delivered": True, "status": 200}
        ((headers, body),) = receiver.received
        assert (
            headers["Otari-Signature"]
            == "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        )
        event = loads(body)
        assert (
            event["test"],
            event["type"],
            event["threshold"],
            event["spend"],
            event["max_budget"],
        ) == (True, "budget.threshold_crossed", Decimal("0.8"), Decimal("8"), Decimal("10"))

        failed = cli("alerts", "test")  # the receiver answers 503 this time
        assert failed.code != 0 and "503" in failed.err
        assert len(receiver.received) == 2


def test_alerts_test_without_a_webhook_says_how_to_configure_it(sqlite_url: str) -> None:
    with running(make_settings(sqlite_url)) as url:
        refused = InProcess(url, MASTER_KEY)("alerts", "test")
        assert refused.code == ExitCode.REFUSED
        assert "webhook_url" in refused.err

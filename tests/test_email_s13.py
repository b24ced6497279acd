"""An SMTP server that refuses some recipients: the send is not counted as delivered, and a retry skips who got it.

Runs a real aiosmtpd server on 127.0.0.1 that answers ``RCPT TO`` for chosen
addresses with a 5xx (no such user) or 4xx (try later) code.
"""

from __future__ import annotations

import email
import email.policy
import socket
from datetime import datetime, timedelta, timezone

import pytest

from changedet.alerts import Outbox
from changedet.alerts.delivery import ChannelConfig, DeliveryError, flush
from changedet.alerts.email import EmailOutcome, RecipientsRefused, send_email
from changedet.baselines import Finding

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")

T0 = datetime(2023, 10, 5, tzinfo=timezone.utc)
NOW = datetime(2023, 10, 6, 8, 0, tzinfo=timezone.utc)
GOOD, BAD, BUSY = "analyst@example.org", "typo@example.org", "busy@example.org"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Refusing:
    """aiosmtpd handler: ``refuse`` maps an address to the RCPT reply that refuses it."""

    def __init__(self, refuse: dict[str, str]) -> None:
        self.refuse = dict(refuse)
        self.envelopes: list[tuple[str, list[str]]] = []
        self.messages: list[email.message.EmailMessage] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 - aiosmtpd hook
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd hook
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(email.message_from_bytes(envelope.original_content, policy=email.policy.default))
        return "250 Message accepted for delivery"


class _Server:
    def __init__(self, refuse: dict[str, str]) -> None:
        self.port = _free_port()
        self.handler = _Refusing(refuse)
        self.controller = aiosmtpd_controller.Controller(self.handler, hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> "_Server":
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()


def _finding() -> Finding:
    return Finding(aoi_id="tumangang", aoi_name="Tumangang railyard", rule_id="railcar_surge", metric="railcars",
                   feature_id="__site__", time=T0, value=72.0, severity="high", kind="robust_z",
                   figures={"median": 14.0, "sign": 1}, message="72 railcars, 5x the median of 14")


@pytest.fixture
def outbox(tmp_path):
    with Outbox(tmp_path / "outbox", clock=lambda: NOW, retry_base_s=60) as ob:
        yield ob


def _send(alert, port, recipients, **kw):
    return send_email(alert, host="127.0.0.1", port=port, sender="changedet@example.org", recipients=recipients,
                      security="none", timeout_s=5, **kw)


def test_partial_refusal_is_an_error_naming_who_got_it(outbox):
    alert, _ = outbox.open_or_update(_finding())
    with _Server({BAD: "550 5.1.1 no such user"}) as srv:
        with pytest.raises(RecipientsRefused) as info:
            _send(alert, srv.port, [GOOD, BAD])
    # The server took the message for the good address only.
    assert srv.handler.envelopes == [("changedet@example.org", [GOOD])]
    out = info.value.outcome
    assert out.accepted == (GOOD,) and set(out.refused) == {BAD}
    assert out.refused[BAD][0] == 550 and "no such user" in out.refused[BAD][1]
    assert out.permanent == (BAD,)
    text = str(info.value)
    assert BAD in text and "550" in text and GOOD in text and "1 of 2" in text
    assert isinstance(info.value, DeliveryError)


def test_retry_reaches_only_the_refused_recipient(outbox):
    alert, _ = outbox.open_or_update(_finding())
    with _Server({BUSY: "452 4.2.2 mailbox busy, try later"}) as srv:
        with pytest.raises(RecipientsRefused) as info:
            _send(alert, srv.port, [GOOD, BUSY])
        assert info.value.outcome.permanent == ()   # 4xx: worth retrying as is
        assert "try again later" in str(info.value)
        srv.handler.refuse.clear()   # the mailbox is free again
        out = _send(alert, srv.port, [GOOD, BUSY], already_sent=info.value.outcome.accepted)
    assert out == EmailOutcome(accepted=(BUSY,), skipped=(GOOD,), refused={})
    assert srv.handler.envelopes == [("changedet@example.org", [GOOD]), ("changedet@example.org", [BUSY])]
    # The retried message still shows every recipient in To, like the first.
    assert srv.handler.messages[1]["To"] == f"{GOOD}, {BUSY}"


def test_nothing_sent_when_everyone_already_got_it(outbox):
    alert, _ = outbox.open_or_update(_finding())
    # Nothing listens on this port: a connection attempt would fail.
    out = _send(alert, _free_port(), [GOOD, BAD], already_sent=[GOOD.upper(), BAD])
    assert out.accepted == () and out.skipped == (GOOD, BAD)


def test_full_acceptance_returns_outcome(outbox):
    alert, _ = outbox.open_or_update(_finding())
    with _Server({}) as srv:
        out = _send(alert, srv.port, [GOOD, BAD])
    assert out.accepted == (GOOD, BAD) and not out.refused
    assert srv.handler.envelopes == [("changedet@example.org", [GOOD, BAD])]


def test_flush_keeps_a_partly_refused_alert_failed_not_delivered(outbox):
    alert, _ = outbox.open_or_update(_finding())
    ch = ChannelConfig("email", "email", {"host": "127.0.0.1", "sender": "changedet@example.org",
                                          "security": "none", "timeout_s": 5, "password": "hunter2-Secret"})
    with _Server({BAD: "550 5.1.1 no such user"}) as srv:
        ch = ChannelConfig("email", "email", {**ch.settings, "port": srv.port})
        counts = flush(outbox, [ch], recipients_for=lambda a: {"email": (GOOD, BAD)}, now=NOW)
    assert counts["email"] == {"sent": 0, "failed": 1, "skipped": 0}
    (state,) = outbox.delivery_state(alert.id, "opened", "email")
    assert state["status"] == "failed"
    assert BAD in state["last_error"] and "550" in state["last_error"]
    assert "hunter2" not in state["last_error"]
    # It is offered again after the backoff: not lost.
    assert [a.id for a, _ in outbox.pending_deliveries("email", now=NOW + timedelta(hours=1))] == [alert.id]


def test_all_refused_is_still_a_plain_delivery_error(outbox):
    alert, _ = outbox.open_or_update(_finding())
    with _Server({BAD: "550 5.1.1 no such user"}) as srv:
        with pytest.raises(DeliveryError) as info:
            _send(alert, srv.port, [BAD])
    assert not isinstance(info.value, RecipientsRefused)
    assert BAD in str(info.value)
    assert srv.handler.envelopes == []

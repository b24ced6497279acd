"""Delivery to Slack and email against real peers on 127.0.0.1: retries, no loss, no duplicates."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
import time
import traceback
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from changedet.alerts import Outbox
from changedet.alerts.delivery import ChannelConfig, DeliveryError, channels_from_env, flush
from changedet.alerts.email import send_email
from changedet.alerts.slack import send_slack
from changedet.baselines import Finding

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")

T0 = datetime(2023, 10, 5, tzinfo=timezone.utc)
NOW = datetime(2023, 10, 6, 8, 0, tzinfo=timezone.utc)
SECRET_PATH = "/services/T0SECRET/B0SECRET/xoxSecretToken123"
PASSWORD = "hunter2-Very-Secret"


def finding(aoi_id: str = "tumangang", aoi_name: str = "Tumangang railyard", value: float = 72, **kw) -> Finding:
    base = dict(
        aoi_id=aoi_id,
        aoi_name=aoi_name,
        rule_id="railcar_surge",
        metric="railcars",
        feature_id="__site__",
        time=T0,
        value=float(value),
        severity="high",
        kind="robust_z",
        figures={"median": 14.0, "z": 8.4, "sign": 1},
        message=f"{value:g} railcars at {aoi_name}, 5x the median of 14",
    )
    base.update(kw)
    return Finding(**base)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def outbox(tmp_path):
    with Outbox(tmp_path / "outbox", clock=lambda: NOW, retry_base_s=60) as ob:
        yield ob


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- SMTP peer ---------------------------------------------------------------------------
class Recorder:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd hook name
        self.messages.append(email.message_from_bytes(envelope.original_content, policy=email.policy.default))
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"


class SMTPPeer:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.recorder = Recorder()
        self.controller = aiosmtpd_controller.Controller(self.recorder, hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> "SMTPPeer":
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()


def email_channel(port: int, **settings) -> ChannelConfig:
    base = {"host": "127.0.0.1", "port": port, "sender": "changedet@example.org", "security": "none", "timeout_s": 5}
    base.update(settings)
    return ChannelConfig("email", "email", base)


def to_analyst(alert):
    return {"email": ("analyst@example.org",)}


def test_email_delivered_once_with_escaped_html(outbox):
    outbox.open_or_update(finding(aoi_name="<script>alert(1)</script> yard"))
    with SMTPPeer() as peer:
        ch = email_channel(peer.port)
        assert flush(outbox, [ch], recipients_for=to_analyst, now=NOW)["email"] == {"sent": 1, "failed": 0, "skipped": 0}
        assert flush(outbox, [ch], recipients_for=to_analyst, now=NOW)["email"]["sent"] == 0
        assert flush(outbox, [ch], recipients_for=to_analyst, now=NOW + timedelta(days=2))["email"]["sent"] == 0
    assert len(peer.recorder.messages) == 1
    assert peer.recorder.envelopes == [("changedet@example.org", ["analyst@example.org"])]
    msg = peer.recorder.messages[0]
    assert msg.get_content_type() == "multipart/alternative"
    assert msg["Subject"] == "[changedet HIGH] <script>alert(1)</script> yard: railcar_surge"
    html_part = msg.get_body(("html",)).get_content()
    text_part = msg.get_body(("plain",)).get_content()
    assert "<script>" not in html_part
    assert "&lt;script&gt;alert(1)&lt;/script&gt; yard" in html_part
    assert "72 railcars" in text_part and "<script>" in text_part  # plain text needs no escaping
    assert "Median" in text_part and "14" in text_part


def test_email_server_down_loses_nothing_then_delivers_once(outbox):
    port = free_port()  # nothing listens: connection refused
    outbox.open_or_update(finding())
    outbox.open_or_update(finding(aoi_id="najin", aoi_name="Najin port", feature_id="B1"))
    ch = email_channel(port)
    assert flush(outbox, [ch], recipients_for=to_analyst, now=NOW)["email"] == {"sent": 0, "failed": 2, "skipped": 0}
    alerts = outbox.list()
    for a in alerts:
        (state,) = outbox.delivery_state(a.id, "opened", "email")
        assert state["status"] == "failed" and state["attempts"] == 1
        assert f"127.0.0.1:{port}" in state["last_error"]
    # Within the backoff nothing is retried; the alerts are still there.
    assert outbox.pending_deliveries("email", now=NOW + timedelta(seconds=30)) == []
    assert len(outbox.list()) == 2

    with SMTPPeer(port) as peer:
        later = NOW + timedelta(minutes=5)
        assert flush(outbox, [ch], recipients_for=to_analyst, now=later)["email"]["sent"] == 2
        assert flush(outbox, [ch], recipients_for=to_analyst, now=later + timedelta(hours=7))["email"]["sent"] == 0
    assert sorted(m["X-Changedet-Alert"] for m in peer.recorder.messages) == sorted(a.id for a in alerts)
    for a in alerts:
        assert outbox.delivery_state(a.id, "opened", "email")[0]["status"] == "delivered"


def test_email_password_never_in_errors(outbox):
    outbox.open_or_update(finding())
    alert = outbox.list()[0]
    with SMTPPeer() as peer:
        for security in ("starttls", "none", "tls"):  # no TLS offered / AUTH refused on plain / TLS handshake fails
            with pytest.raises(DeliveryError) as info:
                send_email(alert, host="127.0.0.1", port=peer.port, sender="a@example.org", recipients=["b@example.org"],
                           username="bot", password=PASSWORD, security=security, timeout_s=3)
            assert PASSWORD not in "".join(traceback.format_exception(info.value))
        ch = email_channel(peer.port, username="bot", password=PASSWORD, security="starttls")
        assert "hunter2" not in repr(ch)
        assert flush(outbox, [ch], recipients_for=to_analyst, now=NOW)["email"]["failed"] == 1
        assert PASSWORD not in outbox.delivery_state(alert.id, "opened", "email")[0]["last_error"]
    assert peer.recorder.messages == []


# -- Slack peer --------------------------------------------------------------------------
class SlackPeer:
    """Incoming-webhook stand-in: fails the first ``fail_first`` requests with 500, stalls ``slow_first``."""

    def __init__(self, fail_first: int = 0, slow_first: int = 0, delay_s: float = 1.0) -> None:
        self.fail_first, self.slow_first, self.delay_s = fail_first, slow_first, delay_s
        self.requests = 0
        self.accepted: list[dict] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with peer.lock:
                    peer.requests += 1
                    n = peer.requests
                    peer.paths.append(self.path)
                if n <= peer.slow_first:
                    time.sleep(peer.delay_s)
                    code = 200  # too late: the client has given up
                elif n <= peer.slow_first + peer.fail_first:
                    code = 500
                else:
                    code = 200
                    with peer.lock:
                        peer.accepted.append(json.loads(body))
                payload = b"ok" if code == 200 else b"internal_error"
                try:
                    self.send_response(code)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{SECRET_PATH}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "SlackPeer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def alert_of(payload: dict) -> str:
    return payload["blocks"][-1]["elements"][0]["text"].removeprefix("changedet alert ")


def assert_no_secret(outbox, alerts, channel="slack"):
    for a in alerts:
        for row in outbox.delivery_state(a.id, "opened", channel):
            assert "SECRET" not in (row["last_error"] or "") and "xox" not in (row["last_error"] or "")


def test_slack_retries_until_each_alert_arrives_exactly_once(outbox):
    for i, name in enumerate(["Tumangang railyard", "Najin port", "Rason depot"]):
        outbox.open_or_update(finding(aoi_id=f"aoi{i}", aoi_name=name))
    alerts = outbox.list()
    with SlackPeer(fail_first=2, slow_first=1, delay_s=1.0) as peer:
        ch = ChannelConfig("slack", "slack", {"webhook_url": peer.url, "timeout_s": 0.3})
        first = flush(outbox, [ch], now=NOW)["slack"]
        assert first == {"sent": 0, "failed": 3, "skipped": 0}  # one timeout, two HTTP 500
        errors = sorted(outbox.delivery_state(a.id, "opened", "slack")[0]["last_error"] for a in alerts)
        assert sum("timed out" in e for e in errors) == 1 and sum("HTTP 500" in e for e in errors) == 2
        assert all("Slack webhook" in e for e in errors)
        assert_no_secret(outbox, alerts)
        t = NOW
        for _ in range(5):
            t += timedelta(hours=1)
            flush(outbox, [ch], now=t)
        assert outbox.pending_deliveries("slack", now=t + timedelta(days=1)) == []
    assert peer.paths == [SECRET_PATH] * 6
    ids = [alert_of(p) for p in peer.accepted]
    assert sorted(ids) == sorted(a.id for a in alerts)  # each exactly once
    p = peer.accepted[0]
    assert isinstance(p["text"], str) and p["text"]
    kinds = [b["type"] for b in p["blocks"]]
    assert kinds[0] == "header" and "section" in kinds
    assert p["blocks"][0]["text"]["type"] == "plain_text" and p["blocks"][0]["text"]["text"].startswith("[HIGH] ")
    assert any("fields" in b for b in p["blocks"] if b["type"] == "section")


def test_slack_message_shape_and_image(outbox):
    outbox.open_or_update(finding(aoi_name="Yard <b>&</b>"))
    alert = outbox.list()[0]
    with SlackPeer() as peer:
        send_slack(alert, webhook_url=peer.url, image_url="https://example.org/q.png")
    (p,) = peer.accepted
    header, message, figures = p["blocks"][:3]
    assert header["text"]["text"] == "[HIGH] Yard <b>&</b>: railcar_surge"  # plain_text: no escaping needed
    assert message["type"] == "section" and "&lt;b&gt;&amp;&lt;/b&gt;" in message["text"]["text"]
    labels = [f["text"].split("\n")[0] for f in figures["fields"]]
    assert "*Metric*" in labels and "*Median*" in labels and "*Z*" in labels
    image = [b for b in p["blocks"] if b["type"] == "image"]
    assert image == [{"type": "image", "image_url": "https://example.org/q.png", "alt_text": image[0]["alt_text"]}]


def test_slack_errors_never_show_the_webhook_url(outbox):
    outbox.open_or_update(finding())
    alert = outbox.list()[0]
    url = f"http://127.0.0.1:{free_port()}{SECRET_PATH}"
    with pytest.raises(DeliveryError) as info:
        send_slack(alert, webhook_url=url, timeout_s=2)
    text = "".join(traceback.format_exception(info.value))
    assert "Slack webhook" in str(info.value) and "SECRET" not in text
    ch = ChannelConfig("slack", "slack", {"webhook_url": url})
    assert "SECRET" not in repr(ch) and "SECRET" not in str(ch)
    assert flush(outbox, [ch], now=NOW)["slack"]["failed"] == 1
    assert_no_secret(outbox, [alert])


# -- flush across channels -----------------------------------------------------------------
def test_one_channel_down_does_not_stop_the_other(outbox):
    outbox.open_or_update(finding())
    outbox.open_or_update(finding(aoi_id="najin", aoi_name="Najin port"))
    slack_down = ChannelConfig("slack", "slack", {"webhook_url": f"http://127.0.0.1:{free_port()}{SECRET_PATH}"})
    recipients = lambda a: {"slack": ("#alerts",), "email": ("analyst@example.org",)}  # noqa: E731
    with SMTPPeer() as smtp, SlackPeer() as slack:
        counts = flush(outbox, [slack_down, email_channel(smtp.port)], recipients_for=recipients, now=NOW)
        assert counts == {"slack": {"sent": 0, "failed": 2, "skipped": 0}, "email": {"sent": 2, "failed": 0, "skipped": 0}}
        slack_up = ChannelConfig("slack", "slack", {"webhook_url": slack.url})
        later = NOW + timedelta(hours=1)
        counts = flush(outbox, [slack_up, email_channel(smtp.port)], recipients_for=recipients, now=later)
        assert counts["slack"]["sent"] == 2 and counts["email"]["sent"] == 0
    assert len(smtp.recorder.messages) == 2 and len(slack.accepted) == 2


def test_unrouted_channel_is_skipped_and_missing_recipients_fail(outbox):
    outbox.open_or_update(finding())
    with SMTPPeer() as peer:
        ch = email_channel(peer.port)
        assert flush(outbox, [ch], now=NOW)["email"]["failed"] == 1  # no recipients anywhere
        assert "CHANGEDET_SMTP_TO" in outbox.delivery_state(outbox.list()[0].id, "opened", "email")[0]["last_error"]
        counts = flush(outbox, [ch], recipients_for=lambda a: {"slack": ("#x",)}, now=NOW + timedelta(hours=1))
        assert counts["email"] == {"sent": 0, "failed": 0, "skipped": 1}
    assert peer.recorder.messages == []


def test_channels_from_env():
    assert channels_from_env({}) == []
    env = {
        "CHANGEDET_SLACK_WEBHOOK_URL": "https://hooks.slack.com" + SECRET_PATH,
        "CHANGEDET_SMTP_HOST": "smtp.example.org",
        "CHANGEDET_SMTP_USER": "bot@example.org",
        "CHANGEDET_SMTP_PASSWORD": PASSWORD,
        "CHANGEDET_SMTP_SECURITY": "tls",
        "CHANGEDET_SMTP_TO": "a@example.org, b@example.org",
    }
    slack, mail = channels_from_env(env)
    assert (slack.name, slack.kind, slack.settings["webhook_url"]) == ("slack", "slack", env["CHANGEDET_SLACK_WEBHOOK_URL"])
    assert mail.kind == "email" and mail.settings["port"] == 465 and mail.settings["sender"] == "bot@example.org"
    assert mail.settings["default_recipients"] == ("a@example.org", "b@example.org")
    assert "SECRET" not in repr(slack) and PASSWORD not in repr(mail)
    with pytest.raises(DeliveryError, match="CHANGEDET_SMTP_PORT"):
        channels_from_env({"CHANGEDET_SMTP_HOST": "h", "CHANGEDET_SMTP_FROM": "a@b", "CHANGEDET_SMTP_PORT": "x"})
    with pytest.raises(DeliveryError, match="CHANGEDET_SMTP_SECURITY"):
        channels_from_env({"CHANGEDET_SMTP_HOST": "h", "CHANGEDET_SMTP_FROM": "a@b", "CHANGEDET_SMTP_SECURITY": "ssl"})
    with pytest.raises(DeliveryError, match="CHANGEDET_SMTP_FROM"):
        channels_from_env({"CHANGEDET_SMTP_HOST": "h"})

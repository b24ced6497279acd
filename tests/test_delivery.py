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


# -- evidence in messages ------------------------------------------------------------------
def evidence_pack(root, alert) -> dict:
    """A real evidence pack (changedet.evidence) for ``alert`` on a small synthetic scene."""
    import numpy as np
    import pandas as pd

    from changedet.evidence import build_evidence, evidence_images
    from changedet.grid import GridSpec

    grid = GridSpec.from_bounds("EPSG:32652", (700000.0, 4700000.0, 700160.0, 4700120.0), 2.0)
    rng = np.random.default_rng(1)
    before = 0.1 + 0.01 * rng.standard_normal((3, *grid.shape))
    after = before.copy()
    after[:, 20:30, 30:50] += 0.3
    mag = np.zeros(grid.shape, dtype="float32")
    mag[20:30, 30:50] = 12
    series = pd.Series([14.0, 15, 13, 72], index=pd.date_range("2023-09-14", periods=4, freq="7D", tz="UTC"))
    magnitude = grid.attach(mag)
    build_evidence(root, alert.id, alert=alert.to_dict(), event="opened", sensor="vhr", when=T0,
                   after=grid.attach(after.astype("float32"), bands=["R", "G", "B"]),
                   before=grid.attach(before.astype("float32"), bands=["R", "G", "B"]), before_time=T0 - timedelta(days=7),
                   magnitude=magnitude, threshold=6.0, change_mask=magnitude > 6, series=series,
                   baseline=pd.DataFrame({"lo": 8.0, "mid": 14.0, "hi": 20.0}, index=series.index), rgb=("R", "G", "B"))
    return evidence_images(root / alert.id)


def test_email_carries_the_evidence_pictures_inline(outbox, tmp_path):
    alert, _ = outbox.open_or_update(finding())
    images = evidence_pack(tmp_path / "evidence", alert)
    assert set(images) == {"overlay", "before", "after", "heatmap", "series"}
    with SMTPPeer() as peer:
        counts = flush(outbox, [email_channel(peer.port)], recipients_for=to_analyst, now=NOW,
                       evidence_root=tmp_path / "evidence")
        assert counts["email"]["sent"] == 1
    (msg,) = peer.recorder.messages
    assert msg.get_content_type() == "multipart/alternative"
    plain, related = msg.get_payload()
    assert plain.get_content_type() == "text/plain" and related.get_content_type() == "multipart/related"
    html_part, *pictures = related.get_payload()
    html = html_part.get_content()
    assert len(pictures) == 5
    sent = {}
    for part in pictures:
        assert part.get_content_type() == "image/png"
        cid = part["Content-ID"].strip("<>")
        assert f'src="cid:{cid}"' in html  # each picture is shown by the HTML, none is a loose attachment
        sent[part.get_filename().removesuffix(".png")] = part.get_content()
    assert {role: images[role].read_bytes() for role in images} == sent  # the pack's bytes, intact
    assert "Before" in html and "Change magnitude" in html and "baseline band" in html
    assert "Evidence pictures" in plain.get_content()


def test_slack_links_evidence_under_the_public_base_url(outbox, tmp_path):
    alert, _ = outbox.open_or_update(finding())
    evidence_pack(tmp_path / "evidence", alert)
    env = {"CHANGEDET_SLACK_WEBHOOK_URL": "http://127.0.0.1/x", "CHANGEDET_PUBLIC_BASE_URL": "https://files.example.org/cd/"}
    (configured,) = channels_from_env(env)
    assert configured.settings["public_base_url"] == "https://files.example.org/cd"
    with pytest.raises(DeliveryError, match="CHANGEDET_PUBLIC_BASE_URL"):
        channels_from_env({**env, "CHANGEDET_PUBLIC_BASE_URL": "files.example.org"})
    with SlackPeer() as peer:
        ch = ChannelConfig("slack", "slack", {"webhook_url": peer.url, "public_base_url": "https://files.example.org/cd"})
        assert flush(outbox, [ch], now=NOW, evidence_root=tmp_path / "evidence")["slack"]["sent"] == 1
    (p,) = peer.accepted
    (image,) = [b for b in p["blocks"] if b["type"] == "image"]
    assert image["image_url"] == f"https://files.example.org/cd/evidence/{alert.id}/overlay.png"
    links = p["blocks"][-2]["elements"][0]["text"]
    for name in ("before.png", "after.png", "heatmap.png", "series.png"):
        assert f"https://files.example.org/cd/evidence/{alert.id}/{name}|" in links
    assert alert_of(p) == alert.id
    # Without a pack or base URL the message simply has no image.
    with SlackPeer() as peer:
        outbox.open_or_update(finding(aoi_id="other", aoi_name="Other yard"))
        ch = ChannelConfig("slack", "slack", {"webhook_url": peer.url, "public_base_url": "https://files.example.org/cd"})
        flush(outbox, [ch], now=NOW, evidence_root=tmp_path / "evidence")
    assert not [b for b in peer.accepted[0]["blocks"] if b["type"] == "image"]


# -- two senders at once -------------------------------------------------------------------
class CountingWebhook:
    """A webhook that takes its time (so that concurrent senders overlap) and counts what arrives."""

    def __init__(self, delay_s: float = 0.05) -> None:
        self.received: list[str] = []
        self.lock = threading.Lock()
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802
                payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                time.sleep(delay_s)
                with peer.lock:
                    peer.received.append(alert_of(payload))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{SECRET_PATH}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


_SENDER = """
import pathlib, sys, time
from changedet.alerts import Outbox
from changedet.alerts.delivery import ChannelConfig, flush
root, url, port, me = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
channels = [ChannelConfig("slack", "slack", {"webhook_url": url, "timeout_s": 10}),
            ChannelConfig("email", "email", {"host": "127.0.0.1", "port": port, "sender": "cd@example.org",
                                             "security": "none", "timeout_s": 10})]
# Barrier: both processes start flushing at the same moment, whatever their start-up time.
barrier = pathlib.Path(root).parent
(barrier / f"ready-{me}").touch()
deadline = time.time() + 60
while len(list(barrier.glob("ready-*"))) < 2 and time.time() < deadline:
    time.sleep(0.005)
with Outbox(root) as ob:
    print(flush(ob, channels, recipients_for=lambda a: {"slack": ("#a",), "email": ("analyst@example.org",)}))
"""


def test_two_senders_at_once_deliver_each_alert_exactly_once_per_channel(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = tmp_path / "outbox"
    with Outbox(root) as ob:
        for i in range(12):
            ob.open_or_update(finding(aoi_id=f"site{i:02d}", aoi_name=f"Site {i}"))
        ids = sorted(a.id for a in ob.list())

    class SlowRecorder(Recorder):
        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            import asyncio

            await asyncio.sleep(0.05)
            return await super().handle_DATA(server, session, envelope)

    with SMTPPeer() as smtp, CountingWebhook() as hook:
        smtp.controller.handler = smtp.recorder = SlowRecorder()
        smtp.controller.stop()
        smtp.controller = aiosmtpd_controller.Controller(smtp.recorder, hostname="127.0.0.1", port=smtp.port)
        smtp.controller.start()
        repo = Path(__file__).resolve().parents[1]
        procs = [subprocess.Popen([sys.executable, "-c", _SENDER, str(root), hook.url, str(smtp.port), str(i)],
                                  cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(2)]
        outs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
    sent = [eval(o[0].strip().splitlines()[-1]) for o in outs]  # noqa: S307 - our own printed dict
    # Both processes did work (they really ran at the same time), and together sent each alert once.
    assert all(s["slack"]["sent"] > 0 for s in sent) or all(s["email"]["sent"] > 0 for s in sent), sent
    assert sorted(hook.received) == ids
    assert sorted(m["X-Changedet-Alert"] for m in smtp.recorder.messages) == ids
    with Outbox(root) as ob:
        for channel in ("slack", "email"):
            assert ob.pending_deliveries(channel) == []
            assert all(ob.delivery_state(a, "opened", channel)[0]["status"] == "delivered" for a in ids)


# -- configuration checked before any run ----------------------------------------------
def _aoi_with_rules(*rules, recipients=None):
    from dataclasses import replace

    from changedet.aoi import AlertRule, load_aoi

    aoi = load_aoi("tumangang_railyard")
    made = tuple(AlertRule(id=r.get("id", "r"), metric="railcars", kind=r.get("kind", "robust_z"),
                           params=r.get("params", {}), severity=r.get("severity", "high"),
                           channels=tuple(r.get("channels", ("slack",)))) for r in rules)
    return replace(aoi, rules=made, recipients=recipients if recipients is not None else aoi.recipients)


def test_alerting_check_names_every_problem_and_no_secret():
    from changedet.alerts.config import AlertConfigError, alerting_problems, check_alerting

    good = _aoi_with_rules({"kind": "cusum", "params": {"h": 4, "cooldown_days": 7}}, {"id": "s", "kind": "seasonal"})
    assert alerting_problems([good], env={}) == []
    bad = _aoi_with_rules(
        {"id": "a", "kind": "ewma", "params": {"lam": 2}},
        {"id": "b", "params": {"escalate_ratio": 0.5}},
        {"id": "c", "channels": ("pager",)},
        {"id": "d", "channels": ("email",)},
        recipients={"slack": ("#x",)},
    )
    problems = alerting_problems([bad], env={"CHANGEDET_SMTP_HOST": "smtp.example.org", "CHANGEDET_SMTP_PASSWORD": PASSWORD})
    text = "\n".join(problems)
    assert "tumangang_railyard" in text and "rule 'a'" in text and "'lam'" in text
    assert "rule 'b'" in text and "escalate_ratio" in text
    assert "unknown channel 'pager'" in text
    assert "CHANGEDET_SMTP_FROM" in text
    assert PASSWORD not in text
    # Missing settings for the channels rules use: an error when delivery is required.
    assert alerting_problems([good], env={}, require_delivery=True) == [
        "channel 'slack' is used by tumangang_railyard/r, tumangang_railyard/s but not configured; "
        "set CHANGEDET_SLACK_WEBHOOK_URL to the Slack incoming webhook URL"]
    mail = _aoi_with_rules({"channels": ("email",)}, recipients={"slack": ("#x",)})
    env = {"CHANGEDET_SMTP_HOST": "smtp.example.org", "CHANGEDET_SMTP_FROM": "cd@example.org"}
    (problem,) = alerting_problems([mail], env=env, require_delivery=True)
    assert "no recipients.email" in problem and "CHANGEDET_SMTP_TO" in problem
    assert alerting_problems([mail], env={**env, "CHANGEDET_SMTP_TO": "a@example.org"}, require_delivery=True) == []
    with pytest.raises(AlertConfigError, match="4 problems"):
        check_alerting([bad], env={"CHANGEDET_SMTP_HOST": "h"})


def test_pipeline_refuses_to_run_with_a_bad_rule(tmp_path):
    from datetime import date

    from changedet.alerts.config import AlertConfigError
    from changedet.pipeline import RunConfig, run_day

    bad = _aoi_with_rules({"kind": "cusum", "params": {"h": -1}})
    with pytest.raises(AlertConfigError, match="'h'"):
        run_day(bad, date(2023, 7, 6), RunConfig(data_dir=tmp_path))
    assert not (tmp_path / "cubes").exists()  # nothing was done


def test_cli_alerts_check(monkeypatch, capsys):
    from changedet.cli import main

    for var in ("CHANGEDET_SLACK_WEBHOOK_URL", "CHANGEDET_SMTP_HOST", "CHANGEDET_PUBLIC_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    assert main(["alerts", "check", "--aoi", "tumangang_railyard"]) == 0
    assert "alerting OK: 2 rule(s) in 1 AOI(s)" in capsys.readouterr().out
    assert main(["alerts", "check", "--aoi", "tumangang_railyard", "--require-delivery"]) == 2
    err = capsys.readouterr().err
    assert "CHANGEDET_SLACK_WEBHOOK_URL" in err and "CHANGEDET_SMTP_HOST" in err


def test_cli_deliver_sends_with_evidence_and_warns_of_unconfigured_channels(tmp_path, monkeypatch, capsys):
    from changedet.cli import main

    for var in ("CHANGEDET_SLACK_WEBHOOK_URL", "CHANGEDET_PUBLIC_BASE_URL", "CHANGEDET_SMTP_USER",
                "CHANGEDET_SMTP_PASSWORD", "CHANGEDET_SMTP_TO"):
        monkeypatch.delenv(var, raising=False)
    with Outbox(tmp_path / "outbox") as ob:
        alert, _ = ob.open_or_update(finding(aoi_id="tumangang_railyard"))
    evidence_pack(tmp_path / "evidence", alert)
    with SMTPPeer() as peer:
        monkeypatch.setenv("CHANGEDET_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("CHANGEDET_SMTP_PORT", str(peer.port))
        monkeypatch.setenv("CHANGEDET_SMTP_SECURITY", "none")
        monkeypatch.setenv("CHANGEDET_SMTP_FROM", "cd@example.org")
        # The AOI's rules also send to Slack, which is not configured: said plainly; email goes out.
        assert main(["alerts", "--data-dir", str(tmp_path), "deliver"]) == 0
        first = capsys.readouterr().out
        assert "warning: channel 'slack' is used by tumangang_railyard/railcar_surge" in first
        assert "email: sent 1" in first and len(peer.recorder.messages) == 1
        with SlackPeer() as slack:
            monkeypatch.setenv("CHANGEDET_SLACK_WEBHOOK_URL", slack.url)
            assert main(["alerts", "--data-dir", str(tmp_path), "deliver"]) == 0
            assert main(["alerts", "--data-dir", str(tmp_path), "deliver"]) == 0  # nothing twice
        out = capsys.readouterr().out
    assert "slack: sent 1" in out and "email: sent 0" in out and "warning" not in out
    (msg,) = peer.recorder.messages
    assert msg["To"] == "analyst@example.org"  # from the AOI file's recipients
    assert len([p for p in msg.walk() if p.get_content_type() == "image/png"]) == 5
    assert len(slack.accepted) == 1 and SECRET_PATH not in out

"""Send an alert by email (SMTP; HTML with inline evidence pictures, plain-text alternative).

The message is ``multipart/alternative``: a plain-text part, then a
``multipart/related`` part holding the HTML and the evidence pictures it shows
inline (``cid:`` references): the detection overlay, the before and after chips,
the change heatmap and the metric plot with its baseline band.

The SMTP password never appears in exceptions or logs.
"""

from __future__ import annotations

import html
import logging
import smtplib
import ssl
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from pathlib import Path
from email.utils import formatdate, make_msgid

from changedet.alerts.delivery import SECURITIES, DeliveryError, alert_title, key_figures
from changedet.alerts.outbox import Alert

__all__ = ["IMAGE_CAPTIONS", "build_message", "send_email"]

log = logging.getLogger(__name__)


def _one_line(text: str) -> str:
    return " ".join(text.split())


#: Captions of the evidence pictures, by role (see changedet.evidence.IMAGE_ROLES).
IMAGE_CAPTIONS = {
    "overlay": "Detections on the latest image",
    "before": "Before",
    "after": "After",
    "heatmap": "Change magnitude (outline: change threshold)",
    "series": "The metric with its baseline band",
}
# Keep messages within what mail servers accept (often 10-25 MB).
_MAX_IMAGE_BYTES = 4 * 1024 * 1024


def build_message(
    alert: Alert,
    *,
    sender: str,
    recipients: Sequence[str],
    event: str = "opened",
    images: Mapping[str, Path] | None = None,
) -> EmailMessage:
    """The email of an alert: plain text, then HTML with the evidence pictures inline.

    Parameters
    ----------
    images : mapping of role to PNG path, optional
        Evidence pictures (:func:`changedet.evidence.evidence_images`); each becomes
        an ``image/png`` part of the ``multipart/related`` HTML, referenced by
        ``cid:``. Missing or oversized files are left out.
    """
    title = alert_title(alert, event)
    subject = _one_line(f"[changedet {alert.severity.upper()}] {title.split('] ', 1)[1]}")
    message = alert.message or f"{alert.metric} on {alert.feature_id}: {alert.value}"
    figures = key_figures(alert, limit=20)

    text_lines = [title, "", message, ""]
    text_lines += [f"{label}: {value}" for label, value in figures]
    text_lines += ["", f"Alert id: {alert.id}"]

    e = html.escape
    rows = "\n".join(
        f'<tr><th style="text-align:left;padding-right:1em">{e(label)}</th><td>{e(value)}</td></tr>'
        for label, value in figures
    )
    inline: list[tuple[str, str, bytes]] = []  # (role, content id, PNG bytes)
    for role, path in (images or {}).items():
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            log.warning("alert %s: evidence picture %s unreadable, sent without it: %s", alert.id, role, exc)
            continue
        if len(data) > _MAX_IMAGE_BYTES or not data.startswith(b"\x89PNG"):
            log.warning("alert %s: evidence picture %s is not a PNG under 4 MiB; sent without it", alert.id, role)
            continue
        inline.append((role, make_msgid(domain="changedet"), data))
    figures_html = "".join(
        f'<figure style="margin:1em 0"><img src="cid:{cid[1:-1]}" alt="{e(IMAGE_CAPTIONS.get(role, role))}" '
        f'style="max-width:100%"><figcaption>{e(IMAGE_CAPTIONS.get(role, role))}</figcaption></figure>\n'
        for role, cid, _ in inline
    )
    if inline:
        text_lines.insert(-1, "Evidence pictures: " + ", ".join(IMAGE_CAPTIONS.get(r, r).lower() for r, _, _ in inline)
                          + " (in the HTML version of this message).")
    body_html = (
        "<!DOCTYPE html>\n<html><body>\n"
        f"<h2>{e(title)}</h2>\n<p>{e(message)}</p>\n<table>\n{rows}\n</table>\n{figures_html}"
        f'<p style="color:#666">Alert id: {e(alert.id)}</p>\n</body></html>\n'
    )

    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = _one_line(sender)
    msg["To"] = ", ".join(_one_line(r) for r in recipients)
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = make_msgid(domain="changedet")
    msg["X-Changedet-Alert"] = alert.id
    msg.set_content("\n".join(text_lines) + "\n")
    msg.add_alternative(body_html, subtype="html")
    if inline:
        html_part = msg.get_payload()[1]
        for role, cid, data in inline:
            html_part.add_related(data, maintype="image", subtype="png", cid=cid, filename=f"{role}.png",
                                  disposition="inline")
    return msg


def send_email(
    alert: Alert,
    *,
    host: str,
    port: int,
    sender: str,
    recipients: Sequence[str],
    username: str | None = None,
    password: str | None = None,
    security: str = "starttls",
    timeout_s: float = 10,
    event: str = "opened",
    images: Mapping[str, Path] | None = None,
) -> None:
    """Send an alert through an SMTP server.

    Parameters
    ----------
    security : str
        ``starttls`` (upgrade a plain connection, usually port 587), ``tls`` (TLS
        from the start, usually 465) or ``none`` (plain text; local relays only).
    images : mapping of role to PNG path, optional
        Evidence pictures shown inline (see :func:`build_message`).

    Raises
    ------
    DeliveryError
        If the server cannot be reached, refuses the login or the message. The
        message never contains the password.
    """
    if security not in SECURITIES:
        raise DeliveryError(f"SMTP security {security!r} is invalid; use one of {', '.join(SECURITIES)}")
    if not host:
        raise DeliveryError("no SMTP host; set CHANGEDET_SMTP_HOST")
    if not sender:
        raise DeliveryError("no sender address; set CHANGEDET_SMTP_FROM")
    recipients = [r for r in recipients if r]
    if not recipients:
        raise DeliveryError(f"no email recipients for alert {alert.id!r}")
    msg = build_message(alert, sender=sender, recipients=recipients, event=event, images=images)
    where = f"SMTP server {host}:{port}"
    try:
        context = ssl.create_default_context()
        if security == "tls":
            client: smtplib.SMTP = smtplib.SMTP_SSL(host, port, timeout=timeout_s, context=context)
        else:
            client = smtplib.SMTP(host, port, timeout=timeout_s)
        with client:
            if security == "starttls":
                client.starttls(context=context)
            if username:
                client.login(username, password or "")
            refused = client.send_message(msg, from_addr=sender, to_addrs=recipients)
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryError(f"{where} refused the login of {username!r} (code {exc.smtp_code}); check CHANGEDET_SMTP_USER/PASSWORD") from None
    except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
        text = _one_line(f"{type(exc).__name__}: {exc}")
        if password:
            text = text.replace(password, "***")
        raise DeliveryError(f"email of alert {alert.id!r} via {where} failed: {text[:300]}") from None
    if refused:
        log.warning("alert %s: %s refused recipients %s", alert.id, where, ", ".join(sorted(refused)))
    log.info("alert %s emailed to %d recipient(s) via %s", alert.id, len(recipients) - len(refused), where)

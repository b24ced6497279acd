"""Send an alert by email (SMTP; HTML with a plain-text alternative).

The SMTP password never appears in exceptions or logs.
"""

from __future__ import annotations

import html
import logging
import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from changedet.alerts.delivery import SECURITIES, DeliveryError, alert_title, key_figures
from changedet.alerts.outbox import Alert

__all__ = ["build_message", "send_email"]

log = logging.getLogger(__name__)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def build_message(alert: Alert, *, sender: str, recipients: Sequence[str], event: str = "opened") -> EmailMessage:
    """A multipart/alternative message: plain text first, then escaped HTML."""
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
    body_html = (
        "<!DOCTYPE html>\n<html><body>\n"
        f"<h2>{e(title)}</h2>\n<p>{e(message)}</p>\n<table>\n{rows}\n</table>\n"
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
) -> None:
    """Send an alert through an SMTP server.

    Parameters
    ----------
    security : str
        ``starttls`` (upgrade a plain connection, usually port 587), ``tls`` (TLS
        from the start, usually 465) or ``none`` (plain text; local relays only).

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
    msg = build_message(alert, sender=sender, recipients=recipients, event=event)
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

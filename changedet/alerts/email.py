"""Send an alert by email (SMTP; HTML with inline evidence pictures, plain-text alternative).

The message is ``multipart/alternative``: a plain-text part, then a
``multipart/related`` part holding the HTML and the evidence pictures it shows
inline (``cid:`` references): the detection overlay, the before and after chips,
the change heatmap and the metric plot with its baseline band.

The SMTP password never appears in exceptions or logs.

A server may accept some recipients of a message and refuse others (``RCPT TO``
answered 4xx or 5xx). The message then reached the accepted ones only, and the send
is not reported as delivered: :func:`send_email` raises :class:`RecipientsRefused`
naming who got it and who was refused (with the server's code), so the outbox keeps
the delivery failed and retries it, and ``changedet alerts deliver`` counts it as
failed. :func:`changedet.alerts.delivery.flush` records who got it in the outbox
(:meth:`~changedet.alerts.outbox.Outbox.mark_recipients_reached`) and passes them as
``already_sent`` on the retry, so they are not sent it again.
"""

from __future__ import annotations

import html
import logging
import smtplib
import ssl
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from email.utils import formatdate, make_msgid

from changedet.alerts.delivery import SECURITIES, DeliveryError, alert_title, key_figures
from changedet.alerts.outbox import Alert

__all__ = ["IMAGE_CAPTIONS", "EmailOutcome", "RecipientsRefused", "build_message", "send_email"]

log = logging.getLogger(__name__)


def _one_line(text: str) -> str:
    return " ".join(text.split())


@dataclass(frozen=True)
class EmailOutcome:
    """Who an email reached.

    Attributes
    ----------
    accepted : tuple of str
        Recipients the server accepted in this send.
    skipped : tuple of str
        Recipients left out because they already got this event (``already_sent``).
    refused : dict
        ``{address: (SMTP code, server text)}`` of the recipients the server refused.
    """

    accepted: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    refused: Mapping[str, tuple[int, str]] = field(default_factory=dict)

    @property
    def permanent(self) -> tuple[str, ...]:
        """Refused with a 5xx code: retrying the same address will not help; fix it."""
        return tuple(a for a, (code, _) in self.refused.items() if 500 <= code < 600)


class RecipientsRefused(DeliveryError):
    """The server took the message for some recipients and refused the others.

    ``outcome`` (:class:`EmailOutcome`) says who got it; retry with
    ``already_sent=outcome.accepted`` (plus earlier ones) to reach only the others.
    """

    def __init__(self, message: str, outcome: EmailOutcome) -> None:
        super().__init__(message)
        self.outcome = outcome


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
    already_sent: Collection[str] = (),
) -> EmailOutcome:
    """Send an alert through an SMTP server.

    Parameters
    ----------
    security : str
        ``starttls`` (upgrade a plain connection, usually port 587), ``tls`` (TLS
        from the start, usually 465) or ``none`` (plain text; local relays only).
    images : mapping of role to PNG path, optional
        Evidence pictures shown inline (see :func:`build_message`).
    already_sent : collection of str
        Recipients that already got this event (from an earlier, partly refused
        send); they are not sent it again (compared case-insensitively). The ``To``
        header still names every recipient, as in the first send.

    Returns
    -------
    EmailOutcome
        Who got the message now and who was skipped.

    Raises
    ------
    RecipientsRefused
        If the server refused some recipients and accepted others; the error names
        both and carries the :class:`EmailOutcome`.
    DeliveryError
        If the server cannot be reached, refuses the login, every recipient or the
        message. The message never contains the password.
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
    done = {str(a).strip().lower() for a in already_sent if a}
    to_send = [r for r in recipients if r.strip().lower() not in done]
    skipped = tuple(r for r in recipients if r.strip().lower() in done)
    if not to_send:
        log.info("alert %s: every recipient already got it; nothing sent", alert.id)
        return EmailOutcome(skipped=skipped)
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
            refused = client.send_message(msg, from_addr=sender, to_addrs=to_send)
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryError(f"{where} refused the login of {username!r} (code {exc.smtp_code}); check CHANGEDET_SMTP_USER/PASSWORD") from None
    except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
        text = _one_line(f"{type(exc).__name__}: {exc}")
        if password:
            text = text.replace(password, "***")
        raise DeliveryError(f"email of alert {alert.id!r} via {where} failed: {text[:300]}") from None
    refused_by = {str(a): (int(code), _decode(text)) for a, (code, text) in (refused or {}).items()}
    outcome = EmailOutcome(accepted=tuple(r for r in to_send if r not in refused_by), skipped=skipped,
                           refused=refused_by)
    if refused_by:
        # Not delivered: those refused have not got it. The error keeps the delivery failed
        # (retried, counted, shown) instead of a log line nobody reads.
        listed = "; ".join(f"{a} ({code} {text})" for a, (code, text) in sorted(refused_by.items()))
        hint = ("fix or remove the address in the AOI's recipients" if outcome.permanent
                else "the server asked to try again later")
        text = _one_line(f"email of alert {alert.id!r} via {where} reached {len(outcome.accepted)} of "
                         f"{len(to_send)} recipient(s) ({', '.join(outcome.accepted)}); refused: {listed}; {hint}")
        if password:
            text = text.replace(password, "***")
        log.warning("%s", text)
        raise RecipientsRefused(text[:480], outcome)
    log.info("alert %s emailed to %d recipient(s) via %s", alert.id, len(outcome.accepted), where)
    return outcome


def _decode(text: bytes | str) -> str:
    raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return _one_line(raw)[:120]

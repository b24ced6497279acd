"""Deliver outbox events to Slack and email.

:func:`flush` is the sender half of the outbox pattern (see
:mod:`changedet.alerts.outbox`): for each configured channel it takes the events that
are due, sends each one and reports back with :meth:`Outbox.mark_delivered` or
:meth:`Outbox.mark_failed` (which schedules the retry with exponential backoff).
Every alert was stored before anything is sent, so a channel that is down loses
nothing; an event marked delivered is never offered again, so nothing is sent twice
(short of a crash between a send and its mark: at-least-once). An email that reached
some recipients while the server refused others stays failed; the outbox records who
got it, and the retry goes to the others only. A delivery that keeps failing is
retried for as long as it takes (backoff capped at 6 h) and reported as stuck
(:meth:`Outbox.stuck`, ``changedet alerts deliver``) for a person to fix.

Channels come from the environment (:func:`channels_from_env`):

``CHANGEDET_SLACK_WEBHOOK_URL``
    Slack incoming webhook (a secret: never logged nor put into error text).
``CHANGEDET_PUBLIC_BASE_URL``
    Optional http(s) URL under which ``<data-dir>/evidence/`` is served (e.g. a
    bucket website or a reverse proxy): Slack messages then show the evidence
    picture ``<base>/evidence/<alert_id>/overlay.png`` and link the others
    (webhooks cannot upload images).
``CHANGEDET_SMTP_HOST``, ``CHANGEDET_SMTP_PORT``, ``CHANGEDET_SMTP_USER``,
``CHANGEDET_SMTP_PASSWORD``, ``CHANGEDET_SMTP_SECURITY``, ``CHANGEDET_SMTP_FROM``
    SMTP relay; security is ``starttls`` (default, port 587), ``tls`` (port 465) or
    ``none`` (port 25). ``CHANGEDET_SMTP_TO`` (comma-separated, optional) gives
    default recipients for alerts whose AOI names none.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from changedet.alerts.outbox import Alert, Outbox
from changedet.errors import ChangedetError, StoreError

__all__ = ["CHANNEL_KINDS", "ChannelConfig", "DeliveryError", "channels_from_env", "flush", "send"]

log = logging.getLogger(__name__)

CHANNEL_KINDS = ("slack", "email")
SECURITIES = ("none", "starttls", "tls")
_DEFAULT_PORTS = {"none": 25, "starttls": 587, "tls": 465}
_SECRET_SETTINGS = ("webhook_url", "password")


class DeliveryError(ChangedetError):
    """A notification could not be sent (channel down, rejected, misconfigured)."""


@dataclass(frozen=True)
class ChannelConfig:
    """One delivery channel.

    Attributes
    ----------
    name : str
        Channel name, the key used by the outbox and by AOI ``recipients``.
    kind : str
        ``slack`` or ``email``.
    settings : mapping
        Keyword arguments for the sender: ``webhook_url`` (and optionally
        ``timeout_s``) for Slack; ``host``, ``port``, ``sender``, ``username``,
        ``password``, ``security``, ``timeout_s`` and ``default_recipients`` for email.
        Secrets are masked in ``repr``.
    """

    name: str
    kind: str
    settings: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in CHANNEL_KINDS:
            raise DeliveryError(f"channel {self.name!r}: unknown kind {self.kind!r}; use one of {', '.join(CHANNEL_KINDS)}")
        object.__setattr__(self, "settings", MappingProxyType(dict(self.settings)))

    def __repr__(self) -> str:
        shown = {k: ("***" if k in _SECRET_SETTINGS and v else v) for k, v in self.settings.items()}
        return f"ChannelConfig(name={self.name!r}, kind={self.kind!r}, settings={shown!r})"

    __str__ = __repr__


def channels_from_env(env: Mapping[str, str] | None = None) -> list[ChannelConfig]:
    """Channels configured in the environment (see the module docstring).

    Returns an empty list when nothing is configured.

    Raises
    ------
    DeliveryError
        If a variable holds an invalid value (the message names it).
    """
    env = os.environ if env is None else env
    out: list[ChannelConfig] = []
    url = (env.get("CHANGEDET_SLACK_WEBHOOK_URL") or "").strip()
    if url:
        if not url.lower().startswith(("https://", "http://")):
            raise DeliveryError("CHANGEDET_SLACK_WEBHOOK_URL must be an http(s) URL (the Slack webhook, https://hooks.slack.com/...)")
        settings: dict[str, Any] = {"webhook_url": url}
        base = (env.get("CHANGEDET_PUBLIC_BASE_URL") or "").strip()
        if base:
            if not base.lower().startswith(("https://", "http://")):
                raise DeliveryError(
                    f"CHANGEDET_PUBLIC_BASE_URL={base!r} must be an http(s) URL under which the evidence folder "
                    "is served, e.g. https://changedet.example.org/files"
                )
            settings["public_base_url"] = base.rstrip("/")
        out.append(ChannelConfig("slack", "slack", settings))
    host = (env.get("CHANGEDET_SMTP_HOST") or "").strip()
    if host:
        security = (env.get("CHANGEDET_SMTP_SECURITY") or "starttls").strip().lower()
        if security not in SECURITIES:
            raise DeliveryError(f"CHANGEDET_SMTP_SECURITY={security!r} is invalid; use one of {', '.join(SECURITIES)}")
        port_text = (env.get("CHANGEDET_SMTP_PORT") or "").strip()
        if port_text:
            try:
                port = int(port_text)
                if not 0 < port < 65536:
                    raise ValueError
            except ValueError:
                raise DeliveryError(f"CHANGEDET_SMTP_PORT={port_text!r} is not a port number (1-65535), e.g. 587") from None
        else:
            port = _DEFAULT_PORTS[security]
        user = (env.get("CHANGEDET_SMTP_USER") or "").strip() or None
        password = env.get("CHANGEDET_SMTP_PASSWORD") or None
        sender = (env.get("CHANGEDET_SMTP_FROM") or "").strip() or (user if user and "@" in user else "")
        if not sender:
            raise DeliveryError("CHANGEDET_SMTP_FROM is not set; give the sender address, e.g. changedet@example.org")
        to = tuple(a.strip() for a in (env.get("CHANGEDET_SMTP_TO") or "").split(",") if a.strip())
        out.append(
            ChannelConfig(
                "email",
                "email",
                {
                    "host": host,
                    "port": port,
                    "sender": sender,
                    "username": user,
                    "password": password,
                    "security": security,
                    "default_recipients": to,
                },
            )
        )
    return out


def evidence_links(alert: Alert, images: Mapping[str, Path], base_url: str | None) -> dict[str, str]:
    """{role: public URL} of an alert's evidence pictures under ``base_url`` (empty without one)."""
    if not base_url:
        return {}
    from urllib.parse import quote

    return {role: f"{base_url.rstrip('/')}/evidence/{quote(alert.id)}/{quote(Path(p).name)}" for role, p in images.items()}


def send(
    alert: Alert,
    channel: ChannelConfig,
    *,
    event: str = "opened",
    recipients: tuple[str, ...] = (),
    evidence: str | Path | None = None,
    already_sent: tuple[str, ...] = (),
) -> None:
    """Send one alert on one channel (raises :class:`DeliveryError` on failure).

    ``evidence`` is the alert's evidence pack folder; its pictures go inline into
    emails and, with a public base URL, into Slack messages. ``already_sent`` lists
    email recipients this event already reached (a retry after a partial refusal):
    they are not sent it again (ignored for Slack).
    """
    from changedet.evidence import evidence_images

    s = dict(channel.settings)
    images = evidence_images(evidence) if evidence is not None else {}
    if channel.kind == "slack":
        from changedet.alerts.slack import send_slack

        if not s.get("webhook_url"):
            raise DeliveryError(f"channel {channel.name!r}: no Slack webhook configured; set CHANGEDET_SLACK_WEBHOOK_URL")
        links = evidence_links(alert, images, s.get("public_base_url"))
        send_slack(
            alert,
            webhook_url=s["webhook_url"],
            timeout_s=s.get("timeout_s", 10),
            image_url=s.get("image_url") or links.get("overlay") or links.get("after"),
            links=links,
            event=event,
        )
        return
    from changedet.alerts.email import send_email

    to = tuple(recipients) or tuple(s.get("default_recipients") or ())
    if not to:
        raise DeliveryError(
            f"channel {channel.name!r}: no email recipients for alert {alert.id!r}; "
            f"add recipients.{channel.name} to the AOI file or set CHANGEDET_SMTP_TO"
        )
    send_email(
        alert,
        host=s.get("host", ""),
        port=int(s.get("port", 587)),
        sender=s.get("sender", ""),
        recipients=to,
        username=s.get("username"),
        password=s.get("password"),
        security=s.get("security", "starttls"),
        timeout_s=s.get("timeout_s", 10),
        event=event,
        images=images,
        already_sent=already_sent,
    )


def _error_text(exc: BaseException, channel: ChannelConfig) -> str:
    text = str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}"
    for key in _SECRET_SETTINGS:  # belt and braces: the senders never put secrets in messages
        secret = channel.settings.get(key)
        if secret:
            text = text.replace(str(secret), "***")
    return text


def flush(
    outbox: Outbox,
    channels: list[ChannelConfig] | tuple[ChannelConfig, ...],
    *,
    recipients_for: Callable[[Alert], Mapping[str, tuple[str, ...]]] | None = None,
    now: datetime | None = None,
    evidence_root: str | Path | None = None,
    lease_s: float = 300.0,
) -> dict[str, dict[str, int]]:
    """Send every due outbox event on every channel and record the outcome.

    Parameters
    ----------
    outbox : Outbox
        Where the events wait.
    channels : list of ChannelConfig
        Where to send them (e.g. :func:`channels_from_env`).
    recipients_for : callable, optional
        Alert -> {channel name: addresses}, typically the AOI's ``recipients``. When
        given, an alert whose map lacks a channel is not routed there: it is marked
        delivered without sending and counted as ``skipped``. Email addresses come
        from it (falling back to the channel's ``default_recipients``).
    now : datetime, optional
        Time used to pick due events and to schedule retries (default: the outbox
        clock).
    evidence_root : path, optional
        Folder of the evidence packs (``<evidence_root>/<alert_id>/manifest.json``);
        default ``evidence/`` next to the outbox folder. Images found there go into
        the messages; an alert without a pack is sent without images.
    lease_s : float
        How long a claimed event is reserved for this sender (see
        :meth:`Outbox.claim`); it must exceed the longest send.

    Returns
    -------
    dict
        ``{channel name: {"sent": n, "failed": m, "skipped": k}}``.

    Notes
    -----
    A failed send (or a bug in a sender) is recorded with :meth:`Outbox.mark_failed`
    and does not stop the other alerts or channels. Several flushes may run at once
    on one outbox (processes or machines sharing it): each event is claimed in a
    database transaction before it is sent, so each reaches each channel once.
    """
    counts: dict[str, dict[str, int]] = {}
    evidence_dir = Path(evidence_root) if evidence_root is not None else outbox.root.parent / "evidence"
    for channel in channels:
        c = counts.setdefault(channel.name, {"sent": 0, "failed": 0, "skipped": 0})
        # Each due event is claimed before it is sent: another flush running at the same
        # time (a second cron job, a retry overlapping a daily run) skips it.
        for event_id, _alert_id, _event in outbox.pending_events(channel.name, now=now):
            claimed = outbox.claim(event_id, channel.name, now=now, lease_s=lease_s)
            if claimed is None:
                continue
            alert, event = claimed
            recipients: tuple[str, ...] = ()
            try:
                if recipients_for is not None:
                    routes = recipients_for(alert) or {}
                    if channel.name not in routes:
                        outbox.mark_delivered(alert.id, event, channel.name, event_id=event_id)
                        log.info("alert %s (%s) is not routed to channel %r; skipped", alert.id, event, channel.name)
                        c["skipped"] += 1
                        continue
                    recipients = tuple(routes[channel.name] or ())
                # Recipients a partly refused earlier attempt reached are not sent it again.
                reached = outbox.recipients_reached(event_id, channel.name) if channel.kind == "email" else set()
                send(alert, channel, event=event, recipients=recipients, evidence=evidence_dir / alert.id,
                     already_sent=tuple(sorted(reached)))
            except Exception as exc:  # noqa: BLE001 - one bad send must not stop the rest
                from changedet.alerts.email import RecipientsRefused

                if isinstance(exc, RecipientsRefused) and exc.outcome.accepted:
                    try:  # who got it is recorded before the failure, so the retry skips them
                        outbox.mark_recipients_reached(event_id, channel.name, exc.outcome.accepted)
                    except StoreError as store_exc:
                        # Not fatal: the retry then reaches them again (at-least-once).
                        log.error("cannot record the recipients of alert %s on %r: %s", alert.id, channel.name,
                                  store_exc)
                text = _error_text(exc, channel)
                log.warning("delivery of alert %s (%s) on %r failed: %s", alert.id, event, channel.name, text)
                c["failed"] += 1
                try:
                    outbox.mark_failed(alert.id, event, channel.name, text, now=now, event_id=event_id)
                except StoreError as store_exc:
                    log.error("cannot record failed delivery of alert %s on %r: %s", alert.id, channel.name, store_exc)
                continue
            try:
                outbox.mark_delivered(alert.id, event, channel.name, event_id=event_id)
            except StoreError as store_exc:
                # Sent but not recorded: the claim expires and a later flush sends it
                # again (at-least-once).
                log.error("alert %s was sent on %r but cannot be marked delivered: %s", alert.id, channel.name, store_exc)
            c["sent"] += 1
    return counts


# -- shared wording for the senders ------------------------------------------------------
def _fmt_value(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            return str(v)
        if v == int(v) and abs(v) < 1e15:
            return f"{int(v):,}"
        return f"{v:.3g}"
    return " ".join(str(v).split())


def alert_title(alert: Alert, event: str = "opened") -> str:
    """One-line title, e.g. ``[HIGH] Tumangang railyard: railcar_surge``."""
    where = " ".join((alert.aoi_name or alert.aoi_id).split())
    suffix = " (escalated)" if event == "escalated" else ""
    return f"[{alert.severity.upper()}] {where}: {alert.rule_id}{suffix}"


def key_figures(alert: Alert, limit: int = 10) -> list[tuple[str, str]]:
    """(label, value) pairs worth showing: metric, feature, value, then the rule's figures."""
    out = [
        ("Metric", alert.metric),
        ("Feature", alert.feature_id),
        ("Value", _fmt_value(alert.value)),
        ("Observed", alert.last_time.strftime("%Y-%m-%d %H:%M UTC")),
    ]
    if alert.peak_value != alert.value:
        out.append(("Peak", _fmt_value(alert.peak_value)))
    for key, value in alert.figures.items():
        if key == "sign" or isinstance(value, (dict, list, tuple)):
            continue
        out.append((str(key).replace("_", " ").capitalize(), _fmt_value(value)))
    return out[:limit]

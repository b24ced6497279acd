"""Send an alert to Slack through an incoming webhook (Block Kit message).

The webhook URL is a secret (anyone holding it can post): it never appears in
exceptions or logs, which say "Slack webhook" only.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from changedet.alerts.delivery import DeliveryError, alert_title, key_figures
from changedet.alerts.outbox import Alert

__all__ = ["build_payload", "send_slack"]

log = logging.getLogger(__name__)

_HEADER_MAX = 150  # Block Kit limits
_SECTION_MAX = 3000
_FIELD_MAX = 2000


def _mrkdwn_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


_LINK_LABELS = {
    "overlay": "detections",
    "before": "before",
    "after": "after",
    "heatmap": "change heatmap",
    "series": "metric plot",
}


def build_payload(
    alert: Alert, *, image_url: str | None = None, event: str = "opened", links: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The Block Kit message for an alert: header, message, figures, image, evidence links.

    ``image_url`` must be publicly reachable (Slack fetches it); ``links`` maps
    evidence roles to public URLs, listed under the image.
    """
    title = alert_title(alert, event)
    message = alert.message or f"{alert.metric} on {alert.feature_id}: {alert.value}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(title, _HEADER_MAX), "emoji": False}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _cut(_mrkdwn_escape(message), _SECTION_MAX)}},
    ]
    fields = [
        {"type": "mrkdwn", "text": _cut(f"*{_mrkdwn_escape(label)}*\n{_mrkdwn_escape(value)}", _FIELD_MAX)}
        for label, value in key_figures(alert)
    ]
    if fields:
        blocks.append({"type": "section", "fields": fields})
    if image_url:
        blocks.append({"type": "image", "image_url": image_url, "alt_text": _cut(f"{title} imagery", 2000)})
    if links:
        text = "Evidence: " + " · ".join(
            f"<{url}|{_LINK_LABELS.get(role, role)}>" for role, url in links.items() if url.startswith(("https://", "http://"))
        )
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(text, _SECTION_MAX)}]})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _mrkdwn_escape(f"changedet alert {alert.id}")}]})
    # ``text`` is the fallback shown in notifications.
    return {"text": _cut(f"{title} — {message}", _SECTION_MAX), "blocks": blocks}


def _secretish(piece: str) -> bool:
    """Whether a URL path segment or query value may be a secret: long, or 8+ characters mixing
    digits or letter cases (``T0A1B2C3``, ``XoXb9...``). Plain words (``services``, ``json``,
    ``webhooks``) are not, so a server's reply keeps them readable."""
    return len(piece) >= 16 or (len(piece) >= 8 and (any(c.isdigit() for c in piece)
                                                     or (piece.lower() != piece and piece.upper() != piece)))


def _without_url_parts(text: str, url: str) -> str:
    """``text`` with the webhook URL, its path and query and every secret-looking piece masked.

    The secret of a webhook is its path (``/services/T.../B.../token``) or a query value
    (``?token=...``); a server or proxy answering an error may echo the path alone, or
    one segment of it, which removing the whole URL missed. Query keys and plain words
    stay (Slack's own ``invalid_token`` must not read ``invalid_***``).
    """
    from urllib.parse import parse_qsl, unquote, urlsplit

    parts = urlsplit(url)
    pieces = {url, parts.path, parts.query, unquote(parts.path), parts.netloc if "@" in parts.netloc else ""}
    pieces.update(p for p in parts.path.split("/") if _secretish(unquote(p)))
    pieces.update(v for _k, v in parse_qsl(parts.query, keep_blank_values=True) if len(v) >= 4)
    if parts.password:
        pieces.add(parts.password)
    pieces.update(unquote(p) for p in list(pieces))
    for piece in sorted((p for p in pieces if p and p != "/"), key=len, reverse=True):
        text = text.replace(piece, "***")
    return text


def send_slack(
    alert: Alert,
    *,
    webhook_url: str,
    timeout_s: float = 10,
    image_url: str | None = None,
    event: str = "opened",
    links: Mapping[str, str] | None = None,
) -> None:
    """Post an alert to a Slack incoming webhook.

    Raises
    ------
    DeliveryError
        On a non-2xx answer, a timeout or a connection failure. The message never
        contains the webhook URL.
    """
    if not isinstance(webhook_url, str) or not webhook_url.lower().startswith(("https://", "http://")):
        raise DeliveryError("Slack webhook URL must be an http(s) URL; check CHANGEDET_SLACK_WEBHOOK_URL")
    body = json.dumps(build_payload(alert, image_url=image_url, event=event, links=links)).encode("utf-8")
    request = urllib.request.Request(
        webhook_url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": "changedet"},
    )
    what = f"Slack webhook delivery of alert {alert.id!r}"
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - scheme checked
            status = response.status
            response.read(4096)
    except urllib.error.HTTPError as exc:
        detail = ""
        try:
            detail = exc.read(200).decode("utf-8", "replace").strip()
        except Exception:  # noqa: BLE001
            pass
        finally:
            exc.close()
        detail = " ".join(_without_url_parts(detail, webhook_url).split())
        raise DeliveryError(f"{what} failed: HTTP {exc.code}" + (f" ({detail})" if detail else "")) from None
    except TimeoutError:
        raise DeliveryError(f"{what} timed out after {timeout_s:g} s") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise DeliveryError(f"{what} timed out after {timeout_s:g} s") from None
        text = reason.strerror if isinstance(reason, OSError) and reason.strerror else type(reason).__name__
        raise DeliveryError(f"{what} failed: cannot connect ({text})") from None
    except (OSError, http.client.HTTPException) as exc:
        raise DeliveryError(f"{what} failed: {type(exc).__name__}") from None
    if not 200 <= status < 300:
        raise DeliveryError(f"{what} failed: HTTP {status}")
    log.info("alert %s sent to Slack webhook", alert.id)

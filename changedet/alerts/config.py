"""Check an installation's alerting before any run: rules, channels and their settings.

:func:`check_alerting` looks at the AOIs' rules (kind, parameters, severity, channel
names) with the rule engine's own strict checks, and at the delivery settings in
the environment (:func:`~changedet.alerts.delivery.channels_from_env`). It returns
every problem at once, each naming the AOI file, the rule and the fix, so that a
mistake shows up when the configuration is validated, not weeks later when the
first alert cannot be sent. Secrets are never part of a message.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from changedet.alerts.delivery import CHANNEL_KINDS, DeliveryError, channels_from_env
from changedet.baselines import SEVERITIES, validate_params
from changedet.errors import RuleError

__all__ = ["AlertConfigError", "SETTINGS_HINT", "alerting_problems", "check_alerting"]

#: What to set for each channel kind.
SETTINGS_HINT = {
    "slack": "set CHANGEDET_SLACK_WEBHOOK_URL to the Slack incoming webhook URL",
    "email": "set CHANGEDET_SMTP_HOST and CHANGEDET_SMTP_FROM (and CHANGEDET_SMTP_USER/PASSWORD if the server needs a login)",
}


class AlertConfigError(RuleError):
    """The alert rules or the delivery settings are wrong; the message lists every problem."""


def _where(aoi) -> str:
    path = getattr(aoi, "source_path", None)
    return f"{aoi.id} ({path})" if path else str(aoi.id)


def alerting_problems(
    aois: Iterable, *, env: Mapping[str, str] | None = None, require_delivery: bool = False
) -> list[str]:
    """Every problem of the AOIs' alerting configuration, as one line each.

    Parameters
    ----------
    aois : iterable of AOI
        Loaded AOIs (:func:`changedet.aoi.load_aoi`).
    env : mapping, optional
        Environment to read delivery settings from (default ``os.environ``).
    require_delivery : bool
        Also report channels that rules send to but that have no settings (for
        ``changedet alerts deliver`` and deployments). Without it, unconfigured
        channels are fine: alerts wait in the outbox until a channel is configured.

    Returns
    -------
    list of str
        Empty when all is well.
    """
    env = os.environ if env is None else env
    problems: list[str] = []
    try:
        configured = {c.name: c for c in channels_from_env(env)}
    except DeliveryError as exc:
        problems.append(f"delivery settings: {exc}")
        configured = {}
    used: dict[str, list[str]] = {}
    for aoi in aois:
        where = _where(aoi)
        recipients = dict(getattr(aoi, "recipients", {}) or {})
        for rule in aoi.rules:
            what = f"{where}: rule {rule.id!r}"
            try:
                validate_params(rule.kind, dict(rule.params), rule_id=rule.id)
            except RuleError as exc:
                problems.append(f"{where}: {exc}")
            if rule.severity not in SEVERITIES:
                problems.append(f"{what}: severity {rule.severity!r} must be one of {', '.join(SEVERITIES)}")
            if not rule.channels:
                problems.append(f"{what}: no channels; add channels: [slack] and/or [email]")
            for channel in rule.channels:
                if channel not in CHANNEL_KINDS:
                    problems.append(
                        f"{what}: unknown channel {channel!r}; changedet delivers to {', '.join(CHANNEL_KINDS)}"
                    )
                    continue
                used.setdefault(channel, []).append(f"{aoi.id}/{rule.id}")
                if channel == "email" and require_delivery and not recipients.get("email"):
                    default = configured.get("email")
                    if not (default and default.settings.get("default_recipients")):
                        problems.append(
                            f"{what}: sends email but the AOI has no recipients.email and CHANGEDET_SMTP_TO is not set; "
                            "add recipients: {email: [analyst@example.org]} to the AOI file"
                        )
    if require_delivery:
        for channel, rules in sorted(used.items()):
            if channel not in configured:
                shown = ", ".join(rules[:3]) + (f" and {len(rules) - 3} more" if len(rules) > 3 else "")
                problems.append(f"channel {channel!r} is used by {shown} but not configured; {SETTINGS_HINT[channel]}")
    return problems


def check_alerting(aois: Iterable, *, env: Mapping[str, str] | None = None, require_delivery: bool = False) -> None:
    """Raise :class:`AlertConfigError` listing every problem (see :func:`alerting_problems`)."""
    problems = alerting_problems(aois, env=env, require_delivery=require_delivery)
    if problems:
        head = "alerting configuration has 1 problem" if len(problems) == 1 else (
            f"alerting configuration has {len(problems)} problems")
        raise AlertConfigError(head + ":\n  " + "\n  ".join(problems))

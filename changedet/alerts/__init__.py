"""Alerts: lifecycle, durable outbox and delivery.

:class:`Outbox` turns :class:`~changedet.baselines.Finding` objects into de-duplicated
:class:`Alert` records (open, escalated, acknowledged, resolved) and keeps the
notification events to deliver; :func:`flush` sends the due events to Slack and email
and records the outcome per channel (failed sends are retried with backoff by later
flushes).
"""

from changedet.alerts.delivery import ChannelConfig, DeliveryError, channels_from_env, flush
from changedet.alerts.outbox import ACTIONS, ACTIVE, EVENTS, STATUSES, Alert, Outbox, alert_id

__all__ = ["ACTIONS", "ACTIVE", "EVENTS", "STATUSES", "Alert", "ChannelConfig", "DeliveryError", "Outbox",
           "alert_id", "channels_from_env", "flush"]

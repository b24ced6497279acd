"""Alerts: lifecycle and durable outbox.

:class:`Outbox` turns :class:`~changedet.baselines.Finding` objects into de-duplicated
:class:`Alert` records (open, escalated, acknowledged, resolved) and keeps the
notification events to deliver; senders for the channels come later.
"""

from changedet.alerts.outbox import ACTIONS, ACTIVE, EVENTS, STATUSES, Alert, Outbox, alert_id

__all__ = ["ACTIONS", "ACTIVE", "EVENTS", "STATUSES", "Alert", "Outbox", "alert_id"]

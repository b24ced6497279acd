"""Durable, de-duplicated alerts (the transactional outbox pattern).

Rules produce :class:`~changedet.baselines.Finding` objects every run, often the same
one again (re-runs, backfills) or one per observation while a situation lasts. The
outbox turns them into at most one *active* alert per (AOI, rule, feature) and
records each notification-worthy event (``opened``, ``escalated``) in the same
database transaction as the alert row, *before* anything is sent. Senders (a later
issue) then poll :meth:`Outbox.pending_deliveries` per channel and report back with
:meth:`Outbox.mark_delivered` / :meth:`Outbox.mark_failed`; a crash between send and
mark means the event is sent again (at-least-once), never lost.

Layout under ``root``::

    outbox.sqlite           alerts, events, deliveries (the source of truth)
    alerts/<alert_id>.json  a readable copy of each alert, rewritten atomically after
                            each commit and restored from the database if missing

Lifecycle::

    (none) --open--> open --bigger--> escalated
      ^               |  \\--ack--> acknowledged --bigger--> escalated
      |               v
      +--cooldown-- resolved  (quiet for quiet_days, or resolved by hand)

Times: ``opened_at``, ``last_time`` and ``resolved_at`` (when resolved by
:meth:`Outbox.resolve_quiet`) are *observation* times, so a backfill replays the
same lifecycle as live runs did; ``updated_at`` is the wall-clock time of the last
change.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from changedet.baselines import SEVERITIES, Finding
from changedet.errors import StoreError
from changedet.metrics import iso_utc, open_sqlite, parse_iso_utc, to_utc, write_transaction

try:  # POSIX only; elsewhere JSON mirrors fall back to the in-process lock.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = ["ACTIONS", "ACTIVE", "EVENTS", "STATUSES", "STUCK_ATTEMPTS", "STUCK_HOURS", "Alert", "Outbox", "alert_id"]

log = logging.getLogger(__name__)

STATUSES = ("open", "escalated", "acknowledged", "resolved")
ACTIVE = ("open", "escalated", "acknowledged")
EVENTS = ("opened", "escalated")
ACTIONS = ("opened", "escalated", "updated", "suppressed")
#: A delivery is reported stuck (:meth:`Outbox.stuck`) after this many failed attempts
#: (with the default 60 s base backoff, about 8.5 h after the first failure when deliver
#: runs often) ...
STUCK_ATTEMPTS = 10
#: ... or when its event is still undelivered this many hours after it was recorded.
STUCK_HOURS = 24.0


# -- the alert -------------------------------------------------------------------------
@dataclass(frozen=True)
class Alert:
    """An alert as stored in the outbox.

    Attributes
    ----------
    id : str
        Deterministic and file-name safe: slugs of AOI, rule, feature and opening date
        plus a short hash of the unslugged key (see :func:`alert_id`).
    aoi_id, rule_id, feature_id, metric, severity : str
        From the findings (severity is the highest seen).
    status : str
        ``open``, ``escalated``, ``acknowledged`` or ``resolved``.
    opened_at : datetime.datetime
        Observation time of the finding that opened it.
    updated_at : datetime.datetime
        Wall-clock time of the last change.
    last_time : datetime.datetime
        Observation time of the latest finding.
    value, peak_value : float
        Latest value and most extreme value (max; min for downward findings).
    message : str
        Message of the latest finding.
    figures : mapping
        Figures of the latest finding.
    findings : int
        How many findings fed the alert.
    kind, aoi_name : str
        Rule kind and AOI display name (for senders).
    resolved_at : datetime.datetime or None
        When it was resolved.
    notified_value : float
        Value at the last notification (open or escalation); the next escalation
        needs ``escalate_ratio`` times this.
    sign : int
        +1 for upward findings, -1 for downward ones ("bigger" means lower).
    """

    id: str
    aoi_id: str
    rule_id: str
    feature_id: str
    metric: str
    severity: str
    status: str
    opened_at: datetime
    updated_at: datetime
    last_time: datetime
    value: float
    peak_value: float
    message: str
    figures: Mapping[str, Any]
    findings: int
    kind: str = ""
    aoi_name: str = ""
    resolved_at: datetime | None = None
    notified_value: float = math.nan
    sign: int = 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (times as ISO-8601 UTC strings)."""
        out = asdict(self)
        out["figures"] = dict(self.figures)
        for key in ("opened_at", "updated_at", "last_time", "resolved_at"):
            if out[key] is not None:
                out[key] = iso_utc(out[key])
        if not math.isfinite(out["notified_value"]):
            out["notified_value"] = None
        return out


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")
    return slug[:48] or "x"


def alert_id(aoi_id: str, rule_id: str, feature_id: str, opened: datetime) -> str:
    """Deterministic, file-name safe id of the alert opened for a key on a date.

    The hash is of the raw key, so two keys that slug alike (``a/b`` and ``a-b``)
    still get different ids.
    """
    day = to_utc(opened).date().isoformat()
    raw = f"{aoi_id}:{rule_id}:{feature_id}:{day}"
    digest = hashlib.sha256(raw.encode("utf-8")).hexdigest()[:8]
    return "--".join([_slug(aoi_id), _slug(rule_id), _slug(feature_id), day, digest])


# -- secrets never leave through error text --------------------------------------------
#: Object-store URL schemes: their path names data, not a secret, and is what an error
#: about them must show; only credentials in the URL are masked.
_STORE_SCHEMES = r"(?:s3a?|gs|gcs|az|abfss?|adl|hdfs|file|memory)://"
_REDACTIONS = (
    (re.compile(rf"(?i)\b({_STORE_SCHEMES})(?:[^/\s@]*@)?([^\s'\"<>?#]*)(?:[?#][^\s'\"<>]*)?"),
     lambda m: m.group(1) + ("***@" if "@" in m.group(0).split("/", 3)[2] else "") + m.group(2)),
    # Webhook URLs carry their secret in the path or query (Slack, Telegram bot tokens):
    # keep only scheme and host.
    (re.compile(rf"(?i)\b(?!{_STORE_SCHEMES})([a-z][a-z0-9+.-]*://)(?:[^/\s@]*@)?([^/\s?#:]+)[^\s'\"<>]*"),
     r"\1\2/***"),
    # The same without a scheme, or the path alone (a server echoing what it was asked):
    # Slack /services/T.../B.../secret, Discord /api/webhooks/<id>/<token>, Teams/Power
    # Automate *.webhook.office.com/...
    (re.compile(r"(?i)(/services/)[^/\s'\"<>]+/[^/\s'\"<>]+/[^\s'\"<>]+"), r"\1***"),
    (re.compile(r"(?i)(/api/webhooks/)\d+/[^\s'\"<>]+"), r"\1***"),
    (re.compile(r"(?i)\b([a-z0-9-]+\.webhook\.office\.com)/[^\s'\"<>]+"), r"\1/***"),
    # "PASSWORD hunter2": a secret after a space (words that follow in ordinary errors kept).
    (re.compile(r"(?i)\b(password|passwd|pwd|secret)(\s+)(?!(?:authentication|auth|for|is|was|required|"
                r"incorrect|invalid|mismatch|missing|not|expired|must|too)\b)[^\s&,;]+"), r"\1\2***"),
    (re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 ***"),
    (
        re.compile(r"(?i)\b(token|api[_-]?key|key|secret|password|passwd|pwd|signature|sig|auth)([=:]\s*)[^\s&,;]+"),
        r"\1\2***",
    ),
)
_MAX_ERROR = 500


def _redact(text: str) -> str:
    for pattern, repl in _REDACTIONS:
        text = pattern.sub(repl, text)
    return text[:_MAX_ERROR]


# -- SQL -------------------------------------------------------------------------------
# Portable SQL, as in changedet.metrics; PostgreSQL would need BIGSERIAL for events.id.
_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS alerts (
        id             TEXT PRIMARY KEY,
        aoi_id         TEXT NOT NULL,
        rule_id        TEXT NOT NULL,
        feature_id     TEXT NOT NULL,
        metric         TEXT NOT NULL,
        kind           TEXT NOT NULL,
        aoi_name       TEXT NOT NULL,
        severity       TEXT NOT NULL,
        status         TEXT NOT NULL,
        opened_at      TEXT NOT NULL,
        updated_at     TEXT NOT NULL,
        last_time      TEXT NOT NULL,
        resolved_at    TEXT,
        value          REAL NOT NULL,
        peak_value     REAL NOT NULL,
        notified_value REAL NOT NULL,
        sign           INTEGER NOT NULL,
        message        TEXT NOT NULL,
        figures        TEXT NOT NULL,
        findings       INTEGER NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS alerts_key ON alerts (aoi_id, rule_id, feature_id, opened_at)",
    # The database itself guarantees one active alert per key, whatever the callers do.
    """
    CREATE UNIQUE INDEX IF NOT EXISTS alerts_one_active ON alerts (aoi_id, rule_id, feature_id)
    WHERE status IN ('open', 'escalated', 'acknowledged')
    """,
    """
    CREATE TABLE IF NOT EXISTS events (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        alert_id     TEXT NOT NULL REFERENCES alerts (id),
        event        TEXT NOT NULL,
        created_at   TEXT NOT NULL,
        finding_time TEXT NOT NULL,
        value        REAL NOT NULL,
        message      TEXT NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS events_alert ON events (alert_id, event)",
    """
    CREATE TABLE IF NOT EXISTS deliveries (
        event_id        INTEGER NOT NULL REFERENCES events (id),
        channel         TEXT NOT NULL,
        status          TEXT NOT NULL,
        attempts        INTEGER NOT NULL,
        last_error      TEXT,
        next_attempt_at TEXT,
        updated_at      TEXT NOT NULL,
        PRIMARY KEY (event_id, channel)
    )
    """,
    # The evidence pack an alert still lacks: recorded in the transaction that records its
    # opened/escalated event, cleared once the pack is written. A run that fails or stops
    # in between leaves the row, and running that observation's day again rebuilds the
    # pack, whatever later days did to the alert. One row per alert: a pack folder holds
    # the pack of the alert's latest event, so a newer event's pack supersedes an older one.
    """
    CREATE TABLE IF NOT EXISTS evidence_pending (
        alert_id     TEXT PRIMARY KEY REFERENCES alerts (id),
        event        TEXT NOT NULL,
        finding_time TEXT NOT NULL,
        error        TEXT
    )
    """,
    # Recipients an event already reached on a channel whose server refused others of
    # them: a retry sends it to the others only. Created if missing, so an outbox made
    # before this table existed opens unchanged (nothing recorded = nobody reached yet).
    """
    CREATE TABLE IF NOT EXISTS delivery_recipients (
        event_id   INTEGER NOT NULL REFERENCES events (id),
        channel    TEXT NOT NULL,
        address    TEXT NOT NULL,
        reached_at TEXT NOT NULL,
        PRIMARY KEY (event_id, channel, address)
    )
    """,
)
_ACTIVE_SQL = "status IN ('open', 'escalated', 'acknowledged')"
_INSERT_ALERT = """
    INSERT INTO alerts (id, aoi_id, rule_id, feature_id, metric, kind, aoi_name, severity, status,
                        opened_at, updated_at, last_time, resolved_at, value, peak_value,
                        notified_value, sign, message, figures, findings)
    VALUES (:id, :aoi_id, :rule_id, :feature_id, :metric, :kind, :aoi_name, :severity, :status,
            :opened_at, :updated_at, :last_time, :resolved_at, :value, :peak_value,
            :notified_value, :sign, :message, :figures, :findings)
"""
_UPDATE_ALERT = """
    UPDATE alerts SET severity = :severity, status = :status, updated_at = :updated_at,
        last_time = :last_time, resolved_at = :resolved_at, value = :value,
        peak_value = :peak_value, notified_value = :notified_value, message = :message,
        figures = :figures, findings = :findings, aoi_name = :aoi_name
    WHERE id = :id
"""
_INSERT_EVENT = """
    INSERT INTO events (alert_id, event, created_at, finding_time, value, message)
    VALUES (:alert_id, :event, :created_at, :finding_time, :value, :message)
"""
_OLDEST_UNDELIVERED = """
    SELECT e.id, d.attempts FROM events e
    LEFT JOIN deliveries d ON d.event_id = e.id AND d.channel = :channel
    WHERE e.alert_id = :alert_id AND e.event = :event
      AND (d.status IS NULL OR d.status <> 'delivered')
    ORDER BY e.id LIMIT 1
"""
_UPSERT_DELIVERY = """
    INSERT INTO deliveries (event_id, channel, status, attempts, last_error, next_attempt_at, updated_at)
    VALUES (:event_id, :channel, :status, :attempts, :last_error, :next_attempt_at, :updated_at)
    ON CONFLICT (event_id, channel) DO UPDATE SET status = excluded.status,
        attempts = excluded.attempts, last_error = excluded.last_error,
        next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at
"""
# Due: never tried, failed with its backoff passed, or claimed by a sender whose lease
# ran out (it crashed or hung between claim and mark).
_DUE = "(d.event_id IS NULL OR (d.status IN ('failed', 'sending') AND d.next_attempt_at <= :now))"
_PENDING = f"""
    SELECT e.id, e.alert_id, e.event FROM events e
    LEFT JOIN deliveries d ON d.event_id = e.id AND d.channel = :channel
    WHERE {_DUE}
    ORDER BY e.id
"""
_CLAIMABLE = f"""
    SELECT e.id, e.alert_id, e.event, d.attempts FROM events e
    LEFT JOIN deliveries d ON d.event_id = e.id AND d.channel = :channel
    WHERE e.id = :event_id AND {_DUE}
"""

_SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}


def _active_row(db: sqlite3.Connection, key: Mapping[str, str]) -> sqlite3.Row | None:
    """The one active (open, escalated or acknowledged) alert of an (AOI, rule, feature) key."""
    return db.execute(
        f"SELECT * FROM alerts WHERE aoi_id = :aoi_id AND rule_id = :rule_id "
        f"AND feature_id = :feature_id AND {_ACTIVE_SQL}",
        key,
    ).fetchone()


def _row_to_alert(row: sqlite3.Row) -> Alert:
    return Alert(
        id=row["id"],
        aoi_id=row["aoi_id"],
        rule_id=row["rule_id"],
        feature_id=row["feature_id"],
        metric=row["metric"],
        severity=row["severity"],
        status=row["status"],
        opened_at=parse_iso_utc(row["opened_at"]),
        updated_at=parse_iso_utc(row["updated_at"]),
        last_time=parse_iso_utc(row["last_time"]),
        value=float(row["value"]),
        peak_value=float(row["peak_value"]),
        message=row["message"],
        figures=json.loads(row["figures"]),
        findings=int(row["findings"]),
        kind=row["kind"],
        aoi_name=row["aoi_name"],
        resolved_at=None if row["resolved_at"] is None else parse_iso_utc(row["resolved_at"]),
        notified_value=float(row["notified_value"]),
        sign=int(row["sign"]),
    )


def _params(alert: Alert) -> dict[str, Any]:
    d = alert.to_dict()
    d["figures"] = json.dumps(d["figures"], sort_keys=True, default=str)
    d["notified_value"] = alert.notified_value
    return d


def _beyond(value: float, reference: float, ratio: float, sign: int) -> bool:
    """Is ``value`` more extreme than ``ratio`` times ``reference`` in the finding's direction?"""
    if sign >= 0:
        return value > reference * ratio if reference > 0 else value > reference
    return value * ratio < reference if reference > 0 else value < reference


# -- the outbox ------------------------------------------------------------------------
class Outbox:
    """Alert store and notification outbox.

    Parameters
    ----------
    root : str or pathlib.Path
        Folder for ``outbox.sqlite`` and ``alerts/*.json`` (created if missing).
    clock : callable, optional
        Returns the current aware datetime; for ``updated_at``, manual resolution and
        retry scheduling (tests pass a fixed clock).
    retry_base_s, retry_cap_s : float
        Exponential backoff of failed deliveries: ``base * 2**(attempts-1)`` seconds,
        at most ``cap``.

    Notes
    -----
    One instance may be shared by threads; several instances or processes on the
    same root are safe as well: every read-check-write runs in one ``BEGIN
    IMMEDIATE`` transaction, and a partial unique index forbids two active alerts
    for one key.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        clock: Callable[[], datetime] | None = None,
        retry_base_s: float = 60.0,
        retry_cap_s: float = 6 * 3600.0,
    ) -> None:
        self.root = Path(root)
        self.alerts_dir = self.root / "alerts"
        try:
            self.alerts_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create outbox folder {self.alerts_dir}: {exc}") from None
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self.retry_base_s = float(retry_base_s)
        self.retry_cap_s = float(retry_cap_s)
        self._lock = threading.RLock()
        # FULL: an alert that was reported as opened must survive a power cut.
        self._conn: sqlite3.Connection | None = open_sqlite(self.root / "outbox.sqlite", synchronous="FULL")
        with self._txn("create the outbox tables") as db:
            for stmt in _SCHEMA:
                db.execute(stmt)
        # A crash between a commit and its JSON write leaves a file missing or stale.
        self.sync_files()

    # -- plumbing ----------------------------------------------------------------------
    def close(self) -> None:
        """Close the database connection (idempotent)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> "Outbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Outbox({str(self.root)!r})"

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"outbox {self.root} is closed; open a new Outbox")
        return self._conn

    @contextlib.contextmanager
    def _txn(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._lock, write_transaction(self._db, f"{what} in {self.root}") as db:
            try:
                yield db
            except sqlite3.Error as exc:
                raise StoreError(f"cannot {what} in outbox {self.root}: {exc}") from None

    def _read(self, sql: str, params: Mapping[str, Any] | None = None) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, params or {}).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read outbox {self.root}: {exc}") from None

    def _now(self) -> datetime:
        return to_utc(self._clock())

    @staticmethod
    def _fetch(db: sqlite3.Connection, alert_id_: str) -> Alert | None:
        row = db.execute("SELECT * FROM alerts WHERE id = :id", {"id": alert_id_}).fetchone()
        return None if row is None else _row_to_alert(row)

    # -- JSON mirror -------------------------------------------------------------------
    def _path(self, alert_id_: str) -> Path:
        return self.alerts_dir / f"{alert_id_}.json"

    @staticmethod
    def _render(alert: Alert) -> str:
        return json.dumps(alert.to_dict(), indent=2, sort_keys=True, default=str) + "\n"

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        # Re-reading the row and writing the file under one cross-process lock means the
        # last writer always writes the latest committed state.
        with self._lock:
            if fcntl is None:  # pragma: no cover
                yield
                return
            with open(self.root / ".alerts.lock", "a+") as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _write_file(self, alert_id_: str) -> None:
        """Rewrite one alert's JSON from the database, atomically (temp file + replace)."""
        try:
            with self._file_lock():
                alert = self._fetch(self._db, alert_id_)
                if alert is None:
                    return
                # Not mkstemp: its 0600 mode would stay on the file after the replace, so the
                # analysts' group or a web server publishing the data directory could not read
                # alerts; 0666 less the umask, like every other output (0644 by default).
                tmp = str(self.alerts_dir / f".tmp-{uuid.uuid4().hex}.json")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                try:
                    with os.fdopen(fd, "w", encoding="utf-8") as fh:
                        fh.write(self._render(alert))
                        fh.flush()
                        os.fsync(fh.fileno())
                    os.replace(tmp, self._path(alert_id_))
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
                    raise
        except (OSError, sqlite3.Error) as exc:
            # The database is the source of truth and already committed; a missing
            # mirror is repaired by sync_files(), so do not fail the caller.
            log.warning("could not write alert file for %s: %s", alert_id_, exc)

    def sync_files(self) -> int:
        """Rewrite every alert JSON that is missing or differs from the database.

        Returns
        -------
        int
            Number of files rewritten.
        """
        fixed = 0
        for alert in self.list():
            path = self._path(alert.id)
            try:
                current = path.read_text(encoding="utf-8")
            except OSError:
                current = None
            if current != self._render(alert):
                self._write_file(alert.id)
                fixed += 1
        return fixed

    # -- lifecycle ---------------------------------------------------------------------
    def open_or_update(
        self, finding: Finding, *, cooldown_days: float = 14, escalate_ratio: float = 1.25, pack: bool = False
    ) -> tuple[Alert, str]:
        """Feed one finding into the alert lifecycle.

        Parameters
        ----------
        finding : Finding
            From :func:`changedet.baselines.evaluate`.
        cooldown_days : float
            After an alert for the same key was resolved, findings observed less than
            this many days after the resolution are suppressed (no flapping).
        escalate_ratio : float
            An active alert escalates (and notifies again) when a value is more than
            this many times the value last notified (less than 1/ratio for downward
            findings).
        pack : bool
            Also record, in the same transaction, that the event's evidence pack is
            pending (see :meth:`pending_packs`), so that no stop between this call and
            the pack loses the pack for good.

        Returns
        -------
        (Alert, str)
            The alert concerned and the action: ``opened`` or ``escalated`` (an event
            to deliver was recorded), ``updated`` (no notification) or ``suppressed``
            (nothing changed: a replay of an observation already seen, or cooldown).
        """
        if not isinstance(finding, Finding):
            raise StoreError(f"open_or_update needs a Finding, got {type(finding).__name__}")
        if finding.severity not in _SEVERITY_RANK:
            raise StoreError(f"finding of rule {finding.rule_id!r} has unknown severity {finding.severity!r}")
        if not math.isfinite(finding.value):
            raise StoreError(f"finding of rule {finding.rule_id!r} has a non-finite value {finding.value!r}")
        if not cooldown_days >= 0 or not escalate_ratio >= 1:
            raise StoreError(
                f"cooldown_days={cooldown_days!r} must be >= 0 and escalate_ratio={escalate_ratio!r} >= 1"
            )
        t = to_utc(finding.time)
        key = {"aoi_id": finding.aoi_id, "rule_id": finding.rule_id, "feature_id": finding.feature_id}
        sign = -1 if float(finding.figures.get("sign", 1)) < 0 else 1
        now = self._now()
        figures = dict(finding.figures)

        with self._txn(f"record a finding of rule {finding.rule_id!r}") as db:
            row = _active_row(db, key)
            if row is not None:
                alert = _row_to_alert(row)
                if t <= alert.last_time:
                    return alert, "suppressed"
                escalate = _beyond(finding.value, alert.notified_value, escalate_ratio, sign)
                peak = max(alert.peak_value, finding.value) if sign > 0 else min(alert.peak_value, finding.value)
                severity = max(alert.severity, finding.severity, key=_SEVERITY_RANK.__getitem__)
                alert = Alert(
                    **{
                        **_alert_fields(alert),
                        "severity": severity,
                        "status": "escalated" if escalate else alert.status,
                        "updated_at": now,
                        "last_time": t,
                        "value": float(finding.value),
                        "peak_value": float(peak),
                        "notified_value": float(finding.value) if escalate else alert.notified_value,
                        "message": finding.message,
                        "figures": figures,
                        "findings": alert.findings + 1,
                        "aoi_name": finding.aoi_name,
                    }
                )
                db.execute(_UPDATE_ALERT, _params(alert))
                action = "updated"
                if escalate:
                    self._event(db, alert, "escalated", now)
                    action = "escalated"
                    if pack:
                        self._pack_pending(db, alert, action)
            else:
                latest = db.execute(
                    "SELECT * FROM alerts WHERE aoi_id = :aoi_id AND rule_id = :rule_id "
                    "AND feature_id = :feature_id ORDER BY opened_at DESC, last_time DESC LIMIT 1",
                    key,
                ).fetchone()
                if latest is not None:
                    last = _row_to_alert(latest)
                    if t <= last.last_time:
                        return last, "suppressed"
                    if last.resolved_at is not None and t - last.resolved_at < timedelta(days=cooldown_days):
                        return last, "suppressed"
                base_id = alert_id(finding.aoi_id, finding.rule_id, finding.feature_id, t)
                new_id, n = base_id, 1
                # Only with a zero cooldown can a key open twice on one day.
                while self._fetch(db, new_id) is not None:
                    n += 1
                    new_id = f"{base_id}-{n}"
                alert = Alert(
                    id=new_id,
                    **key,
                    metric=finding.metric,
                    severity=finding.severity,
                    status="open",
                    opened_at=t,
                    updated_at=now,
                    last_time=t,
                    value=float(finding.value),
                    peak_value=float(finding.value),
                    message=finding.message,
                    figures=figures,
                    findings=1,
                    kind=finding.kind,
                    aoi_name=finding.aoi_name,
                    resolved_at=None,
                    notified_value=float(finding.value),
                    sign=sign,
                )
                db.execute(_INSERT_ALERT, _params(alert))
                self._event(db, alert, "opened", now)
                action = "opened"
                if pack:
                    self._pack_pending(db, alert, action)
        self._write_file(alert.id)
        return alert, action

    @staticmethod
    def _event(db: sqlite3.Connection, alert: Alert, event: str, now: datetime) -> None:
        db.execute(
            _INSERT_EVENT,
            {
                "alert_id": alert.id,
                "event": event,
                "created_at": iso_utc(now),
                "finding_time": iso_utc(alert.last_time),
                "value": alert.value,
                "message": alert.message,
            },
        )

    @staticmethod
    def _pack_pending(db: sqlite3.Connection, alert: Alert, event: str) -> None:
        db.execute(
            "INSERT OR REPLACE INTO evidence_pending (alert_id, event, finding_time, error) "
            "VALUES (:alert_id, :event, :t, NULL)",
            {"alert_id": alert.id, "event": event, "t": iso_utc(alert.last_time)},
        )

    def pending_packs(self, aoi_id: str, time: datetime | str) -> list[tuple[Alert, str]]:
        """Alerts of ``aoi_id`` whose evidence pack of the observation at ``time`` is not written.

        Returns
        -------
        list of (Alert, str)
            The alert as it is now and the event of the missing pack (``opened`` or
            ``escalated``), oldest alert first.
        """
        rows = self._read(
            "SELECT p.alert_id, p.event FROM evidence_pending p JOIN alerts a ON a.id = p.alert_id "
            "WHERE a.aoi_id = :aoi_id AND p.finding_time = :t ORDER BY a.opened_at, a.id",
            {"aoi_id": aoi_id, "t": iso_utc(to_utc(time))},
        )
        return [(self.get(r["alert_id"]), r["event"]) for r in rows]

    def pack_written(self, alert_id: str, time: datetime | str) -> None:
        """Clear the pending pack of ``alert_id`` for the observation at ``time`` (if it is that one)."""
        with self._txn(f"clear the pending evidence pack of {alert_id}") as db:
            db.execute("DELETE FROM evidence_pending WHERE alert_id = :a AND finding_time = :t",
                       {"a": alert_id, "t": iso_utc(to_utc(time))})

    def pack_failed(self, alert_id: str, time: datetime | str, error: str) -> None:
        """Note why the pending pack of ``alert_id`` at ``time`` failed (secrets masked)."""
        with self._txn(f"note the failed evidence pack of {alert_id}") as db:
            db.execute("UPDATE evidence_pending SET error = :e WHERE alert_id = :a AND finding_time = :t",
                       {"a": alert_id, "t": iso_utc(to_utc(time)), "e": _redact(str(error))})

    def _set_status(self, alert_id_: str, status: str, resolved_at: datetime | None, what: str) -> Alert:
        with self._txn(f"{what} alert {alert_id_!r}") as db:
            alert = self._fetch(db, alert_id_)
            if alert is None:
                raise StoreError(f"no alert {alert_id_!r} in outbox {self.root}; list the alerts with `changedet alerts list` (Outbox.list())")
            if alert.status == status:
                return alert  # idempotent
            if alert.status == "resolved":
                raise StoreError(f"alert {alert_id_!r} is resolved and cannot be {status}; a new finding opens a new alert")
            alert = Alert(
                **{**_alert_fields(alert), "status": status, "updated_at": self._now(), "resolved_at": resolved_at}
            )
            db.execute(_UPDATE_ALERT, _params(alert))
        self._write_file(alert.id)
        return alert

    def ack(self, alert_id: str) -> Alert:
        """Acknowledge an active alert (it stays active; escalation still notifies)."""
        return self._set_status(alert_id, "acknowledged", None, "acknowledge")

    def resolve(self, alert_id: str, *, time: datetime | str | None = None, cancel_failed: bool = False) -> Alert:
        """Resolve an alert by hand.

        Parameters
        ----------
        alert_id : str
            The alert.
        time : datetime or str, optional
            Resolution time for the cooldown (default: now). Pass an observation time
            when resolving during a backfill.
        cancel_failed : bool
            Also cancel the alert's deliveries that failed and wait for a retry (or whose
            sender's claim ran out): they are marked ``cancelled`` (kept, never deleted,
            and no longer retried nor reported stuck). Also done when the alert is already
            resolved. Events never tried on a channel are not touched.
        """
        when = self._now() if time is None else to_utc(time)
        alert = self._set_status(alert_id, "resolved", when, "resolve")
        if cancel_failed:
            self.cancel_failed(alert_id)
        return alert

    def cancel_failed(self, alert_id: str) -> int:
        """Mark the failed (retry-pending) deliveries of ``alert_id``'s events ``cancelled``.

        A claim another sender holds right now is left alone; one whose lease ran out is
        cancelled. Returns how many deliveries were cancelled.
        """
        now = iso_utc(self._now())
        with self._txn(f"cancel the failed deliveries of alert {alert_id!r}") as db:
            cur = db.execute(
                "UPDATE deliveries SET status = 'cancelled', updated_at = :now "
                "WHERE event_id IN (SELECT id FROM events WHERE alert_id = :a) "
                "AND (status = 'failed' OR (status = 'sending' AND next_attempt_at <= :now))",
                {"a": alert_id, "now": now},
            )
            return int(cur.rowcount)

    def resolve_quiet(
        self, *, aoi_id: str, rule_id: str, feature_id: str, time: datetime | str, quiet_days: float = 28
    ) -> Alert | None:
        """Resolve the active alert of a key if no finding fed it for ``quiet_days``.

        Parameters
        ----------
        aoi_id, rule_id, feature_id : str
            The key.
        time : datetime or str
            Current observation time; becomes ``resolved_at``.
        quiet_days : float
            Quiet period.

        Returns
        -------
        Alert or None
            The resolved alert, or None when there is no active alert or it is not
            quiet long enough.
        """
        t = to_utc(time)
        key = {"aoi_id": aoi_id, "rule_id": rule_id, "feature_id": feature_id}
        with self._txn(f"resolve quiet alerts of rule {rule_id!r}") as db:
            row = _active_row(db, key)
            if row is None:
                return None
            alert = _row_to_alert(row)
            if t - alert.last_time < timedelta(days=quiet_days):
                return None
            alert = Alert(**{**_alert_fields(alert), "status": "resolved", "updated_at": self._now(), "resolved_at": t})
            db.execute(_UPDATE_ALERT, _params(alert))
        self._write_file(alert.id)
        return alert

    # -- queries -----------------------------------------------------------------------
    def get(self, alert_id: str) -> Alert:
        """Return one alert (restoring its JSON file if it went missing).

        Raises
        ------
        StoreError
            If there is no such alert.
        """
        with self._lock:
            try:
                alert = self._fetch(self._db, alert_id)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read outbox {self.root}: {exc}") from None
        if alert is None:
            raise StoreError(f"no alert {alert_id!r} in outbox {self.root}; list the alerts with `changedet alerts list` (Outbox.list())")
        if not self._path(alert_id).exists():
            self._write_file(alert_id)
        return alert

    def list(self, *, status: str | Iterable[str] | None = None, aoi_id: str | None = None) -> list[Alert]:
        """Alerts, oldest first, optionally filtered by status (one or several) and AOI."""
        clauses, params = [], {}
        if status is not None:
            wanted = [status] if isinstance(status, str) else list(status)
            bad = [s for s in wanted if s not in STATUSES]
            if bad:
                raise StoreError(f"unknown alert status {bad[0]!r}; use one of {', '.join(STATUSES)}")
            names = [f":s{i}" for i in range(len(wanted))]
            clauses.append(f"status IN ({', '.join(names) or 'NULL'})")
            params.update({f"s{i}": s for i, s in enumerate(wanted)})
        if aoi_id is not None:
            clauses.append("aoi_id = :aoi_id")
            params["aoi_id"] = aoi_id
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._read(f"SELECT * FROM alerts {where} ORDER BY opened_at, id", params)
        return [_row_to_alert(r) for r in rows]

    # -- delivery bookkeeping ----------------------------------------------------------
    def pending_deliveries(self, channel: str, *, now: datetime | None = None) -> list[tuple[Alert, str]]:
        """Events not yet delivered to ``channel`` and due (oldest first).

        An event is due when it was never tried on the channel, its last attempt
        failed and its backoff has passed, or a sender claimed it (:meth:`claim`) and
        its lease ran out. Each event appears once; two escalations of one alert not
        yet delivered appear twice, each with the alert's current state.

        Returns
        -------
        list of (Alert, str)
            The alert as it is now and the event (``opened`` or ``escalated``).
        """
        cache: dict[str, Alert] = {}
        out = []
        for _id, alert_id_, event in self.pending_events(channel, now=now):
            if alert_id_ not in cache:
                cache[alert_id_] = self.get(alert_id_)
            out.append((cache[alert_id_], event))
        return out

    def pending_events(self, channel: str, *, now: datetime | None = None) -> list[tuple[int, str, str]]:
        """``(event_id, alert_id, event)`` of the events due on ``channel``, oldest first."""
        when = iso_utc(self._now() if now is None else now)
        return [(int(r["id"]), r["alert_id"], r["event"]) for r in self._read(_PENDING, {"channel": channel, "now": when})]

    def waiting(self, channel: str, *, now: datetime | None = None) -> tuple[int, datetime | None]:
        """Deliveries on ``channel`` that failed and wait for their retry: (how many, next due time).

        ``changedet alerts deliver`` reports them, so a run that sends nothing while
        retries are backing off does not read as "nothing to send". Deliveries another
        sender holds (its lease not run out) are in flight, not waiting: see :meth:`in_flight`.
        """
        return self._count_status(channel, "failed", now)

    def in_flight(self, channel: str, *, now: datetime | None = None) -> tuple[int, datetime | None]:
        """Deliveries on ``channel`` another sender claimed and is sending: (how many, lease end)."""
        return self._count_status(channel, "sending", now)

    def stuck(
        self, channel: str | None = None, *, now: datetime | None = None,
        max_attempts: int = STUCK_ATTEMPTS, max_age_h: float = STUCK_HOURS,
    ) -> list[dict[str, Any]]:
        """Deliveries that keep failing: ``max_attempts`` failed attempts or more, or at
        least 2 failed attempts and not delivered ``max_age_h`` hours after the event was
        recorded. Cancelled deliveries (see :meth:`resolve`) are not stuck.

        They are still retried (backoff capped at ``retry_cap_s``; an alert is never
        dropped), but a person has to fix what makes them fail (a wrong address, a
        revoked webhook, a channel no longer configured): ``changedet alerts deliver``
        lists them and exits non-zero. Deliveries never tried and deliveries another
        sender holds right now are not stuck.

        Parameters
        ----------
        channel : str, optional
            One channel (default: every channel).
        now : datetime, optional
            Current time (default: the outbox clock).
        max_attempts : int
            Failed attempts from which a delivery is stuck (>= 1).
        max_age_h : float
            Hours after the event was recorded from which an undelivered, failed
            delivery is stuck (> 0).

        Returns
        -------
        list of dict
            Oldest event first: ``alert_id``, ``event``, ``channel``, ``attempts``,
            ``since`` (when the event was recorded, ISO-8601 UTC), ``last_error``,
            ``next_attempt_at``, ``alert_status`` (the alert's status now).
        """
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise StoreError(f"max_attempts={max_attempts!r} must be a whole number of attempts >= 1, e.g. 10")
        if not (isinstance(max_age_h, (int, float)) and not isinstance(max_age_h, bool) and 0 < max_age_h < math.inf):
            raise StoreError(f"max_age_h={max_age_h!r} must be a positive number of hours, e.g. 24")
        t = self._now() if now is None else to_utc(now)
        rows = self._read(
            "SELECT e.alert_id, e.event, d.channel, d.attempts, e.created_at AS since, d.last_error, "
            "d.next_attempt_at, a.status AS alert_status FROM deliveries d JOIN events e ON e.id = d.event_id "
            "JOIN alerts a ON a.id = e.alert_id "
            "WHERE d.status NOT IN ('delivered', 'cancelled') AND (:channel IS NULL OR d.channel = :channel) "
            # A claim whose lease still runs is a send in progress, not a failure.
            "AND NOT (d.status = 'sending' AND d.next_attempt_at > :now) "
            # The age rule needs two failures: an event recorded long before its first try
            # (a backlog kept while no channel was set) is not stuck after one greylisting.
            "AND d.attempts > 0 AND (d.attempts >= :n OR (d.attempts >= 2 AND e.created_at <= :cutoff)) "
            "ORDER BY e.id, d.channel",
            {"channel": channel, "now": iso_utc(t), "n": int(max_attempts),
             "cutoff": iso_utc(t - timedelta(hours=float(max_age_h)))},
        )
        return [dict(r) for r in rows]

    def _count_status(self, channel: str, status: str, now: datetime | None) -> tuple[int, datetime | None]:
        when = iso_utc(self._now() if now is None else now)
        row = self._read(
            "SELECT COUNT(*) AS n, MIN(next_attempt_at) AS next FROM deliveries "
            "WHERE channel = :channel AND status = :status AND next_attempt_at > :now",
            {"channel": channel, "status": status, "now": when},
        )[0]
        return int(row["n"]), (parse_iso_utc(row["next"]) if row["next"] else None)

    def claim(
        self, event_id: int, channel: str, *, now: datetime | None = None, lease_s: float = 300.0
    ) -> tuple[Alert, str] | None:
        """Take one due event for sending on ``channel``, so that no other sender does.

        In one write transaction the event is checked to be still due and marked
        ``sending`` until ``now + lease_s``; a second sender (another process running
        :func:`~changedet.alerts.delivery.flush` at the same time) then finds it not
        due and skips it. A sender that dies before :meth:`mark_delivered` /
        :meth:`mark_failed` leaves the claim to expire, after which the event is due
        again (at-least-once, never lost).

        Parameters
        ----------
        event_id : int
            From :meth:`pending_events`.
        channel : str
            Channel name.
        now : datetime, optional
            Current time (default: the outbox clock).
        lease_s : float
            How long the claim holds; longer than any send may take.

        Returns
        -------
        (Alert, str) or None
            The alert and event to send, or None if the event is no longer due.
        """
        if not lease_s > 0:
            raise StoreError(f"lease_s={lease_s!r} must be > 0 seconds")
        t = self._now() if now is None else to_utc(now)
        with self._txn(f"claim event {event_id} on {channel!r}") as db:
            row = db.execute(_CLAIMABLE, {"channel": channel, "event_id": int(event_id), "now": iso_utc(t)}).fetchone()
            if row is None:
                return None
            db.execute(
                _UPSERT_DELIVERY,
                {
                    "event_id": int(event_id),
                    "channel": channel,
                    "status": "sending",
                    "attempts": int(row["attempts"] or 0),
                    "last_error": None,
                    "next_attempt_at": iso_utc(t + timedelta(seconds=lease_s)),
                    "updated_at": iso_utc(t),
                },
            )
            alert = self._fetch(db, row["alert_id"])
        return (alert, row["event"]) if alert is not None else None

    def _delivery(
        self, alert_id_: str, event: str, channel: str, what: str, update: Callable[[int, int], dict],
        event_id: int | None = None,
    ) -> Any:
        if event not in EVENTS:
            raise StoreError(f"unknown event {event!r}; use one of {', '.join(EVENTS)}")
        with self._txn(f"{what} {event!r} of alert {alert_id_!r} on {channel!r}") as db:
            if event_id is None:
                row = db.execute(
                    _OLDEST_UNDELIVERED, {"alert_id": alert_id_, "event": event, "channel": channel}
                ).fetchone()
            else:
                # The claimed event itself; never downgrade one already delivered (a
                # sender whose lease ran out may report after another one succeeded).
                row = db.execute(
                    "SELECT e.id, d.attempts FROM events e LEFT JOIN deliveries d "
                    "ON d.event_id = e.id AND d.channel = :channel WHERE e.id = :event_id "
                    "AND e.alert_id = :alert_id AND e.event = :event "
                    "AND (d.status IS NULL OR d.status <> 'delivered')",
                    {"alert_id": alert_id_, "event": event, "channel": channel, "event_id": int(event_id)},
                ).fetchone()
            if row is None:
                known = db.execute(
                    "SELECT 1 FROM events WHERE alert_id = :a AND event = :e", {"a": alert_id_, "e": event}
                ).fetchone()
                if known is None:
                    raise StoreError(f"alert {alert_id_!r} has no {event!r} event; see Outbox.pending_deliveries()")
                return None  # everything already delivered: marking again is a no-op
            params = update(row["id"], int(row["attempts"] or 0))
            db.execute(_UPSERT_DELIVERY, {"event_id": row["id"], "channel": channel, **params})
            return params

    def mark_delivered(self, alert_id: str, event: str, channel: str, *, event_id: int | None = None) -> None:
        """Record that an ``event`` of an alert reached ``channel``.

        ``event_id`` (from :meth:`claim`) names the event; without it, the oldest
        undelivered ``event`` of the alert is meant.
        """
        now = iso_utc(self._now())
        self._delivery(
            alert_id,
            event,
            channel,
            "mark delivered",
            lambda _id, attempts: {
                "status": "delivered",
                "attempts": attempts + 1,
                "last_error": None,
                "next_attempt_at": None,
                "updated_at": now,
            },
            event_id,
        )

    def mark_failed(
        self, alert_id: str, event: str, channel: str, error: str, *, now: datetime | None = None,
        event_id: int | None = None,
    ) -> datetime | None:
        """Record a failed send and schedule the next attempt with exponential backoff.

        Parameters
        ----------
        alert_id, event, channel : str
            Which delivery (the oldest undelivered ``event`` of the alert).
        error : str
            What went wrong; URLs and token-like strings are redacted and the text is
            cut to 500 characters so that no secret ends up in the database.
        now : datetime, optional
            Time of the failure (default: the outbox clock).
        event_id : int, optional
            The claimed event (see :meth:`claim`); default the oldest undelivered one.

        Returns
        -------
        datetime or None
            When the delivery is due again (None if it had already been delivered).
        """
        t = self._now() if now is None else to_utc(now)
        text = _redact(str(error))

        def update(_id: int, attempts: int) -> dict:
            delay = min(self.retry_base_s * 2.0 ** attempts, self.retry_cap_s)
            return {
                "status": "failed",
                "attempts": attempts + 1,
                "last_error": text,
                "next_attempt_at": iso_utc(t + timedelta(seconds=delay)),
                "updated_at": iso_utc(t),
            }

        params = self._delivery(alert_id, event, channel, "mark failed", update, event_id)
        return None if params is None else parse_iso_utc(params["next_attempt_at"])

    def recipients_reached(self, event_id: int, channel: str) -> set[str]:
        """Addresses (lower case) that event ``event_id`` already reached on ``channel``.

        Recorded by :meth:`mark_recipients_reached` when a server accepted some
        recipients and refused others; empty when the event never partly reached it.
        """
        rows = self._read("SELECT address FROM delivery_recipients WHERE event_id = :e AND channel = :c",
                          {"e": int(event_id), "c": channel})
        return {r["address"] for r in rows}

    def mark_recipients_reached(self, event_id: int, channel: str, addresses: Iterable[str]) -> None:
        """Record that event ``event_id`` reached ``addresses`` on ``channel`` (the others are still due).

        Addresses are stored stripped and in lower case (mail servers compare them so);
        recording one twice is a no-op.
        """
        now = iso_utc(self._now())
        rows = [{"e": int(event_id), "c": channel, "a": str(a).strip().lower(), "t": now}
                for a in addresses if str(a).strip()]
        if not rows:
            return
        with self._txn(f"record the recipients of event {event_id} on {channel!r}") as db:
            db.executemany(
                "INSERT OR IGNORE INTO delivery_recipients (event_id, channel, address, reached_at) "
                "VALUES (:e, :c, :a, :t)",
                rows,
            )

    def delivery_state(self, alert_id: str, event: str, channel: str) -> list[dict[str, Any]]:
        """Delivery rows of one alert's events on a channel (for inspection and tests)."""
        rows = self._read(
            "SELECT e.id AS event_id, d.status, d.attempts, d.last_error, d.next_attempt_at "
            "FROM events e LEFT JOIN deliveries d ON d.event_id = e.id AND d.channel = :channel "
            "WHERE e.alert_id = :alert_id AND e.event = :event ORDER BY e.id",
            {"alert_id": alert_id, "event": event, "channel": channel},
        )
        return [dict(r) for r in rows]


def _alert_fields(alert: Alert) -> dict[str, Any]:
    """An alert's fields for building a modified copy."""
    return {k: getattr(alert, k) for k in alert.__dataclass_fields__}

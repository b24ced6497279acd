"""Per-AOI metric time series in SQL.

Every pipeline run records numbers such as "railcars in the yard" per AOI (site
level, ``feature_id == SITE``) or per feature inside it, each with its provenance
(scene ids, code version, config hash...). Baseline rules then read them back as
:class:`pandas.Series`.

Storage is one SQLite file in WAL mode with a busy timeout, so a backfill and a daily
run in two processes can write at the same time. The SQL is plain enough (``ON
CONFLICT ... DO UPDATE``, ISO-8601 text times, named parameters) to port to
PostgreSQL later: only :func:`_connect` and the statement table would change.

Times are stored as fixed-width ISO-8601 UTC strings (``2023-10-05T00:00:00.000000Z``)
so that text comparison equals time comparison in range queries.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from changedet.errors import DateError, StoreError

__all__ = ["SITE", "MetricStore", "to_utc", "iso_utc", "parse_iso_utc", "sqlite_path", "open_sqlite", "write_transaction"]

SITE = "__site__"
"""``feature_id`` of site-level metrics (the whole AOI rather than one feature in it)."""

# A busy writer holds the lock for milliseconds; 30 s only matters when a disk stalls.
BUSY_TIMEOUT_S = 30.0


# -- time handling ---------------------------------------------------------------------
def to_utc(value: datetime | date | str | pd.Timestamp | np.datetime64) -> datetime:
    """Convert a time to a tz-aware UTC :class:`datetime.datetime`.

    Parameters
    ----------
    value : datetime, date, str, pandas.Timestamp or numpy.datetime64
        Naive datetimes (and strings without offset) are taken as UTC; dates become
        midnight UTC; aware values are converted to UTC.

    Returns
    -------
    datetime.datetime
        Aware, ``tzinfo is timezone.utc``, microsecond resolution.

    Raises
    ------
    DateError
        If the value cannot be parsed as a time.
    """
    if isinstance(value, datetime):  # also pandas.Timestamp (a datetime subclass)
        ts = pd.Timestamp(value)
    elif isinstance(value, date):
        ts = pd.Timestamp(value.year, value.month, value.day)
    elif isinstance(value, (str, np.datetime64)):
        try:
            ts = pd.Timestamp(value)
        except (ValueError, TypeError, OverflowError) as exc:
            raise DateError(f"time {value!r} is not a valid date or ISO-8601 time: {exc}") from None
    else:
        raise DateError(f"time {value!r} of type {type(value).__name__} is not a date, datetime or ISO string")
    if ts is pd.NaT or pd.isna(ts):
        raise DateError(f"time {value!r} is missing (NaT)")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    # Nanoseconds cannot be stored in the text format; drop them rather than warn.
    return ts.floor("us").to_pydatetime().replace(tzinfo=timezone.utc)


def iso_utc(value: datetime | date | str | pd.Timestamp | np.datetime64) -> str:
    """Fixed-width ISO-8601 UTC text for storage (sorts like the times it encodes)."""
    return to_utc(value).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_iso_utc(text: str) -> datetime:
    """Inverse of :func:`iso_utc`."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


# -- connections -----------------------------------------------------------------------
def sqlite_path(target: str | Path) -> Path:
    """Resolve a store location (file path or ``sqlite:///abs/path`` URL) to a path.

    Raises
    ------
    StoreError
        For another URL scheme (PostgreSQL support comes later) or an empty path.
    """
    text = str(target)
    if "://" in text:
        scheme, _, rest = text.partition("://")
        if scheme.lower() != "sqlite":
            raise StoreError(
                f"store URL scheme {scheme!r} is not supported yet; "
                "use a file path or sqlite:///absolute/path.sqlite"
            )
        if not rest.startswith("/") or rest.strip("/") == "":
            raise StoreError(f"store URL {text!r} must be sqlite:///absolute/path.sqlite")
        # sqlite:///abs and sqlite:////abs both mean /abs.
        return Path("/" + rest.lstrip("/"))
    if not text.strip():
        raise StoreError("store path is empty; give a file path such as data/metrics.sqlite")
    return Path(text)


def open_sqlite(path: Path, *, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """Open a SQLite database for concurrent use by several processes.

    WAL lets readers proceed while one writer commits; the busy timeout makes a
    second writer wait for the lock instead of failing at once. Autocommit mode
    (``isolation_level=None``) leaves transaction boundaries to
    :func:`write_transaction`, so no statement runs in an implicit transaction.

    Parameters
    ----------
    path : pathlib.Path
        Database file; parent folders are created.
    synchronous : str
        ``NORMAL`` (atomic, may lose the last commits on power loss) or ``FULL``
        (durable at commit, used by the alert outbox).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot open database {path}: {exc}") from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(
                f"database {path} could not switch to WAL mode (got {mode!r}); "
                "network file systems do not support it, use a local disk"
            )
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"cannot configure database {path}: {exc}") from None
    conn.row_factory = sqlite3.Row
    return conn


@contextlib.contextmanager
def write_transaction(conn: sqlite3.Connection, what: str) -> Iterator[sqlite3.Connection]:
    """Run the block in one write transaction; roll back on any error.

    ``BEGIN IMMEDIATE`` takes the write lock up front: a read-then-write block (the
    outbox's check-then-insert) can then not interleave with another writer, and the
    busy timeout applies to the BEGIN instead of a deadlock-prone lock upgrade later.
    """
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise StoreError(f"cannot start a transaction to {what}: {exc}") from None
    try:
        yield conn
    except BaseException:
        # SQLite may already have rolled back (e.g. after SQLITE_FULL); that is fine.
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise StoreError(f"cannot commit transaction to {what}: {exc}") from None


# -- statements ------------------------------------------------------------------------
# Kept together and in portable SQL so a PostgreSQL backend only has to swap the
# parameter style (:name -> %(name)s) and the REAL type.
_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS metrics (
        aoi_id      TEXT NOT NULL,
        feature_id  TEXT NOT NULL,
        metric      TEXT NOT NULL,
        time        TEXT NOT NULL,
        value       REAL NOT NULL,
        provenance  TEXT,
        recorded_at TEXT NOT NULL,
        PRIMARY KEY (aoi_id, feature_id, metric, time)
    )
    """,
)
_UPSERT = """
    INSERT INTO metrics (aoi_id, feature_id, metric, time, value, provenance, recorded_at)
    VALUES (:aoi_id, :feature_id, :metric, :time, :value, :provenance, :recorded_at)
    ON CONFLICT (aoi_id, feature_id, metric, time)
    DO UPDATE SET value = excluded.value, provenance = excluded.provenance,
                  recorded_at = excluded.recorded_at
"""
_SERIES = """
    SELECT time, value FROM metrics
    WHERE aoi_id = :aoi_id AND feature_id = :feature_id AND metric = :metric
      AND time >= :start AND time <= :end
    ORDER BY time
"""
_METRICS = "SELECT DISTINCT metric FROM metrics WHERE aoi_id = :aoi_id ORDER BY metric"
_FEATURES = """
    SELECT DISTINCT feature_id FROM metrics WHERE aoi_id = :aoi_id AND metric = :metric
    ORDER BY feature_id
"""
_PROVENANCE = """
    SELECT provenance FROM metrics
    WHERE aoi_id = :aoi_id AND feature_id = :feature_id AND metric = :metric AND time = :time
"""
# Bounds for open-ended range queries; every stored time sorts between them.
_MIN_TIME = "0000"
_MAX_TIME = "9999-99"


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise StoreError(f"{what} must be a non-empty string, got {value!r}")
    return value


class MetricStore:
    """Metric time series per (AOI, feature, metric) with provenance.

    Parameters
    ----------
    path : str or pathlib.Path
        SQLite file (parent folders are created) or ``sqlite:///abs/path`` URL.

    Notes
    -----
    One instance may be shared by threads (calls are serialised by a lock); several
    instances or processes on the same file are safe too (WAL + busy timeout).
    Use as a context manager or call :meth:`close`.

    Examples
    --------
    >>> with MetricStore(tmp / "m.sqlite") as store:  # doctest: +SKIP
    ...     store.record(aoi_id="tumangang", metric="railcars", time="2023-10-05", value=72)
    ...     store.series("tumangang", "railcars")
    """

    def __init__(self, path: str | Path) -> None:
        self.path = sqlite_path(path)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = open_sqlite(self.path)
        with self._lock, write_transaction(self._conn, f"create the metric tables in {self.path}"):
            for stmt in _SCHEMA:
                self._conn.execute(stmt)

    # -- lifecycle ---------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> "MetricStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MetricStore({str(self.path)!r})"

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"metric store {self.path} is closed; open a new MetricStore")
        return self._conn

    # -- writing -----------------------------------------------------------------------
    @staticmethod
    def _row(
        *,
        aoi_id: str,
        metric: str,
        time: datetime | date | str,
        value: float,
        feature_id: str = SITE,
        provenance: Mapping | None = None,
        recorded_at: str,
    ) -> dict[str, Any]:
        """Validate one observation and turn it into statement parameters."""
        _name(aoi_id, "aoi_id")
        _name(metric, "metric")
        _name(feature_id, "feature_id")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise StoreError(f"value {value!r} of {aoi_id}/{metric} is not a number") from None
        if not math.isfinite(number):
            # NaN would become NULL in SQL; a missing observation must simply not be recorded.
            raise StoreError(
                f"value {value!r} of {aoi_id}/{metric} at {time} is not finite; "
                "skip observations that could not be measured instead of recording them"
            )
        if provenance is not None and not isinstance(provenance, Mapping):
            raise StoreError(f"provenance of {aoi_id}/{metric} must be a mapping, got {type(provenance).__name__}")
        try:
            prov = None if provenance is None else json.dumps(dict(provenance), sort_keys=True, default=str)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"provenance of {aoi_id}/{metric} is not JSON-serialisable: {exc}") from None
        return {
            "aoi_id": aoi_id,
            "feature_id": feature_id,
            "metric": metric,
            "time": iso_utc(time),
            "value": number,
            "provenance": prov,
            "recorded_at": recorded_at,
        }

    def record(
        self,
        *,
        aoi_id: str,
        metric: str,
        time: datetime | date | str,
        value: float,
        feature_id: str = SITE,
        provenance: Mapping | None = None,
    ) -> None:
        """Record (insert or replace) one observation.

        Parameters
        ----------
        aoi_id, metric : str
            What was measured where.
        time : datetime, date or str
            Observation time; naive means UTC, a date means midnight UTC.
        value : float
            Finite number.
        feature_id : str
            Feature inside the AOI, or :data:`SITE` for the whole AOI.
        provenance : mapping, optional
            JSON-serialisable facts about how the value was made (scene ids, code
            version, config hash); replaced together with the value.

        Raises
        ------
        StoreError
            Invalid names/value/provenance or a database failure.
        DateError
            Unparseable time.
        """
        self.record_many(
            [dict(aoi_id=aoi_id, metric=metric, time=time, value=value, feature_id=feature_id, provenance=provenance)]
        )

    def record_many(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Record many observations in one transaction (all or none).

        Parameters
        ----------
        rows : iterable of mapping
            Each with the keyword arguments of :meth:`record`.
        """
        now = iso_utc(datetime.now(timezone.utc))
        params = []
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise StoreError(f"row {i} is a {type(row).__name__}, expected a dict of record() arguments")
            try:
                params.append(self._row(**row, recorded_at=now))
            except TypeError as exc:  # unknown or missing keys
                raise StoreError(f"row {i} {dict(row)!r} does not match record(): {exc}") from None
        if not params:
            return
        with self._lock, write_transaction(self._db, f"record {len(params)} metric values in {self.path}") as db:
            try:
                db.executemany(_UPSERT, params)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot record metrics in {self.path}: {exc}") from None

    # -- reading -----------------------------------------------------------------------
    def _query(self, sql: str, params: Mapping[str, Any]) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read metrics from {self.path}: {exc}") from None

    def series(
        self,
        aoi_id: str,
        metric: str,
        *,
        feature_id: str = SITE,
        start: datetime | date | str | None = None,
        end: datetime | date | str | None = None,
    ) -> pd.Series:
        """Return one metric's time series.

        Parameters
        ----------
        aoi_id, metric, feature_id : str
            Which series.
        start, end : datetime, date or str, optional
            Inclusive bounds (same conventions as :meth:`record`).

        Returns
        -------
        pandas.Series
            float64 values on a sorted tz-aware UTC :class:`~pandas.DatetimeIndex`
            named ``time``; the series is named ``metric``. Empty when nothing matches.
        """
        rows = self._query(
            _SERIES,
            {
                "aoi_id": aoi_id,
                "feature_id": feature_id,
                "metric": metric,
                "start": _MIN_TIME if start is None else iso_utc(start),
                "end": _MAX_TIME if end is None else iso_utc(end),
            },
        )
        if rows:
            times = pd.to_datetime([r["time"] for r in rows], utc=True, format="ISO8601")
            index = pd.DatetimeIndex(times, name="time")
        else:
            index = pd.DatetimeIndex([], dtype="datetime64[us, UTC]", name="time")
        return pd.Series([float(r["value"]) for r in rows], index=index, dtype="float64", name=metric)

    def metrics(self, aoi_id: str) -> list[str]:
        """Names of the metrics recorded for an AOI (any feature), sorted."""
        return [r["metric"] for r in self._query(_METRICS, {"aoi_id": aoi_id})]

    def features(self, aoi_id: str, metric: str) -> list[str]:
        """Feature ids (including :data:`SITE` if present) with values of ``metric``."""
        return [r["feature_id"] for r in self._query(_FEATURES, {"aoi_id": aoi_id, "metric": metric})]

    def provenance(
        self, aoi_id: str, metric: str, time: datetime | date | str, feature_id: str = SITE
    ) -> dict | None:
        """Provenance stored with one observation, or None (no observation or none stored)."""
        rows = self._query(
            _PROVENANCE,
            {"aoi_id": aoi_id, "feature_id": feature_id, "metric": metric, "time": iso_utc(time)},
        )
        if not rows or rows[0]["provenance"] is None:
            return None
        return json.loads(rows[0]["provenance"])

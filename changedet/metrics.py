"""Per-AOI metric time series in SQL.

Every pipeline run records numbers such as "railcars in the yard" per AOI (site
level, ``feature_id == SITE``) or per feature inside it, each with its provenance
(scene ids, code version, config hash...). Baseline rules then read them back as
:class:`pandas.Series`.

Storage is one SQLite file in WAL mode with a busy timeout by default, so a backfill
and a daily run in two processes can write at the same time; or a PostgreSQL database
given by URL (``postgresql://user:password@host:5432/db``, through psycopg 3) when
several machines share the store. The SQL is the same for both (``ON CONFLICT ... DO
UPDATE``, ISO-8601 text times, named parameters); only the parameter style and the
float type differ.

Times are stored as fixed-width ISO-8601 UTC strings (``2023-10-05T00:00:00.000000Z``)
so that text comparison equals time comparison in range queries.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from changedet.errors import DateError, StoreError

__all__ = ["SITE", "MetricStore", "to_utc", "iso_utc", "parse_iso_utc", "sqlite_path", "open_sqlite",
           "write_transaction", "is_postgres_url", "redact_url"]

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
_PG_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")


def is_postgres_url(target: str | Path) -> bool:
    """Whether a store location is a PostgreSQL URL (``postgresql://...``)."""
    text = str(target)
    return "://" in text and text.partition("://")[0].lower() in _PG_SCHEMES


def redact_url(url: str) -> str:
    """A database URL with its password replaced by ``***`` (for messages and repr)."""
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@]*):[^@/]*@", r"\1:***@", str(url))


def sqlite_path(target: str | Path) -> Path:
    """Resolve a store location (file path or ``sqlite:///abs/path`` URL) to a path.

    Raises
    ------
    StoreError
        For another URL scheme or an empty path.
    """
    text = str(target)
    if "://" in text:
        scheme, _, rest = text.partition("://")
        if scheme.lower() != "sqlite":
            raise StoreError(
                f"store URL scheme {scheme!r} is not supported; use a file path, "
                "sqlite:///absolute/path.sqlite or postgresql://user:password@host:5432/db"
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


# -- backends --------------------------------------------------------------------------
class _Backend:
    """The few operations MetricStore needs, per database engine."""

    def create_schema(self, statements: Iterable[str]) -> None:
        raise NotImplementedError

    def write_many(self, sql: str, params: list[dict[str, Any]], what: str) -> None:
        raise NotImplementedError

    def query(self, sql: str, params: Mapping[str, Any], what: str) -> list[Mapping[str, Any]]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _SqliteBackend(_Backend):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = open_sqlite(path)

    def create_schema(self, statements: Iterable[str]) -> None:
        with write_transaction(self.conn, f"create the metric tables in {self.path}") as db:
            for stmt in statements:
                db.execute(stmt)

    def write_many(self, sql: str, params: list[dict[str, Any]], what: str) -> None:
        with write_transaction(self.conn, what) as db:
            try:
                db.executemany(sql, params)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot {what}: {exc}") from None

    def query(self, sql: str, params: Mapping[str, Any], what: str) -> list[Mapping[str, Any]]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot {what}: {exc}") from None

    def close(self) -> None:
        self.conn.close()


# ``:name`` -> ``%(name)s``; a literal % must be doubled for psycopg.
_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_][A-Za-z0-9_]*)")


def pg_sql(sql: str) -> str:
    """Translate the portable SQL of this package (``:name`` parameters, REAL) to PostgreSQL."""
    sql = sql.replace("%", "%%")
    sql = re.sub(r"\bREAL\b", "DOUBLE PRECISION", sql)
    return _NAMED.sub(r"%(\1)s", sql)


class _PostgresBackend(_Backend):
    # Serialises concurrent CREATE TABLE IF NOT EXISTS, which can otherwise fail with a
    # unique violation on the catalog when two processes create the table at once.
    _SCHEMA_LOCK_KEY = 0x63686764  # "chgd"

    def __init__(self, url: str, where: str) -> None:
        try:
            import psycopg
            from psycopg.rows import dict_row
        except ImportError:
            raise StoreError(
                f"metric store {where} needs the PostgreSQL driver; install it with "
                "pip install 'psycopg[binary]'"
            ) from None
        self._psycopg = psycopg
        self.where = where
        conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
        try:
            self.conn = psycopg.connect(conninfo, autocommit=True, row_factory=dict_row, connect_timeout=10)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to PostgreSQL {where}: {_pg_error(exc, url)}") from None

    def _txn(self, what: str, fn) -> Any:
        psycopg = self._psycopg
        try:
            with self.conn.transaction():
                with self.conn.cursor() as cur:
                    return fn(cur)
        except psycopg.Error as exc:
            raise StoreError(f"cannot {what}: {_pg_error(exc)}") from None

    def create_schema(self, statements: Iterable[str]) -> None:
        def run(cur):
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (self._SCHEMA_LOCK_KEY,))
            for stmt in statements:
                cur.execute(pg_sql(stmt))

        self._txn(f"create the metric tables in {self.where}", run)

    def write_many(self, sql: str, params: list[dict[str, Any]], what: str) -> None:
        self._txn(what, lambda cur: cur.executemany(pg_sql(sql), params))

    def query(self, sql: str, params: Mapping[str, Any], what: str) -> list[Mapping[str, Any]]:
        return self._txn(what, lambda cur: cur.execute(pg_sql(sql), dict(params)).fetchall())

    def close(self) -> None:
        self.conn.close()


def _pg_error(exc: BaseException, url: str | None = None) -> str:
    """One line of a driver error, without the URL's password."""
    text = " ".join(str(exc).split())
    if url:
        text = text.replace(url, redact_url(url))
        password = re.match(r"^[^:]+://[^:/@]*:([^@/]*)@", url)
        if password and password.group(1):
            text = text.replace(password.group(1), "***")
    return text[:300]


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
        SQLite file (parent folders are created), ``sqlite:///abs/path`` URL, or
        PostgreSQL URL ``postgresql://user:password@host:5432/db`` (the database must
        exist; the table is created on first use).

    Notes
    -----
    One instance may be shared by threads (calls are serialised by a lock); several
    instances or processes on the same file or database are safe too (WAL + busy
    timeout in SQLite; row-level upserts in PostgreSQL). The password of a URL never
    appears in ``repr`` or error messages.
    Use as a context manager or call :meth:`close`.

    Examples
    --------
    >>> with MetricStore(tmp / "m.sqlite") as store:  # doctest: +SKIP
    ...     store.record(aoi_id="tumangang", metric="railcars", time="2023-10-05", value=72)
    ...     store.series("tumangang", "railcars")
    """

    def __init__(self, path: str | Path) -> None:
        self._lock = threading.RLock()
        if is_postgres_url(path):
            self.path = None
            self.where = redact_url(str(path))
            self._backend: _Backend | None = _PostgresBackend(str(path), self.where)
        else:
            self.path = sqlite_path(path)
            self.where = str(self.path)
            self._backend = _SqliteBackend(self.path)
        with self._lock:
            self._backend.create_schema(_SCHEMA)

    # -- lifecycle ---------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            if self._backend is not None:
                self._backend.close()
                self._backend = None

    def __enter__(self) -> "MetricStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MetricStore({self.where!r})"

    @property
    def _db(self) -> "_Backend":
        if self._backend is None:
            raise StoreError(f"metric store {self.where} is closed; open a new MetricStore")
        return self._backend

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
        with self._lock:
            self._db.write_many(_UPSERT, params, f"record {len(params)} metric values in {self.where}")

    # -- reading -----------------------------------------------------------------------
    def _query(self, sql: str, params: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        with self._lock:
            return self._db.query(sql, params, f"read metrics from {self.where}")

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
        # Sorted here, not by SQL, so that every backend and collation agrees.
        return sorted(r["metric"] for r in self._query(_METRICS, {"aoi_id": aoi_id}))

    def features(self, aoi_id: str, metric: str) -> list[str]:
        """Feature ids (including :data:`SITE` if present) with values of ``metric``."""
        return sorted(r["feature_id"] for r in self._query(_FEATURES, {"aoi_id": aoi_id, "metric": metric}))

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

"""Metric store: upsert, ordering, time zones, provenance, atomicity, concurrent writers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from changedet.errors import ChangedetError, DateError, StoreError
from changedet.metrics import SITE, MetricStore, iso_utc, to_utc

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path):
    with MetricStore(tmp_path / "sub" / "metrics.sqlite") as s:
        yield s


def test_creates_parent_dirs_and_accepts_sqlite_url(tmp_path):
    path = tmp_path / "a" / "b" / "m.sqlite"
    with MetricStore(f"sqlite:///{path}") as s:
        s.record(aoi_id="x", metric="railcars", time="2023-01-01", value=1)
    assert path.exists()
    with MetricStore(path) as s:  # the same file through a plain path
        assert s.series("x", "railcars").tolist() == [1.0]


def test_other_url_schemes_are_refused(tmp_path):
    with pytest.raises(StoreError, match="not supported; use a file path"):
        MetricStore("mysql://user@host/db")


def test_unreachable_postgres_names_the_server_but_not_the_password():
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    with pytest.raises(StoreError, match=r"cannot connect to PostgreSQL postgresql://bob:\*\*\*@127.0.0.1:1/db") as info:
        MetricStore("postgresql://bob:s3cretPW@127.0.0.1:1/db")
    assert "s3cretPW" not in str(info.value)


def test_upsert_replaces_value_and_provenance(store):
    store.record(aoi_id="tum", metric="railcars", time="2023-10-05", value=70, provenance={"scene": "A"})
    store.record(aoi_id="tum", metric="railcars", time="2023-10-05", value=72, provenance={"scene": "B"})
    s = store.series("tum", "railcars")
    assert s.tolist() == [72.0]
    assert store.provenance("tum", "railcars", "2023-10-05") == {"scene": "B"}


def test_series_sorted_typed_and_named(store):
    for day, v in [(5, 3), (1, 1), (3, 2)]:
        store.record(aoi_id="tum", metric="railcars", time=date(2023, 1, day), value=v)
    s = store.series("tum", "railcars")
    assert s.name == "railcars"
    assert s.dtype == "float64"
    assert isinstance(s.index, pd.DatetimeIndex)
    assert str(s.index.tz) == "UTC"
    assert s.index.is_monotonic_increasing
    assert s.tolist() == [1.0, 2.0, 3.0]
    assert s.index[0] == pd.Timestamp("2023-01-01", tz="UTC")


def test_series_start_end_inclusive_and_empty(store):
    for day in range(1, 11):
        store.record(aoi_id="a", metric="m", time=date(2023, 1, day), value=day)
    s = store.series("a", "m", start="2023-01-03", end=datetime(2023, 1, 5))
    assert s.tolist() == [3.0, 4.0, 5.0]
    empty = store.series("a", "nothing")
    assert empty.empty and str(empty.index.tz) == "UTC" and empty.name == "nothing"


def test_time_zone_handling(store):
    # The same instant written three ways is one observation.
    store.record(aoi_id="a", metric="m", time="2023-06-01T12:00:00+02:00", value=1)
    store.record(aoi_id="a", metric="m", time=datetime(2023, 6, 1, 10, 0), value=2)  # naive = UTC
    store.record(aoi_id="a", metric="m", time=datetime(2023, 6, 1, 10, 0, tzinfo=timezone.utc), value=3)
    s = store.series("a", "m")
    assert len(s) == 1 and s.iloc[0] == 3.0
    assert s.index[0] == pd.Timestamp("2023-06-01T10:00:00Z")
    # A date is midnight UTC; sub-second times survive the round trip.
    store.record(aoi_id="a", metric="m", time=date(2023, 6, 2), value=4)
    store.record(aoi_id="a", metric="m", time="2023-06-03T01:02:03.250Z", value=5)
    s = store.series("a", "m")
    assert s.index[1] == pd.Timestamp("2023-06-02T00:00:00Z")
    assert s.index[2] == pd.Timestamp("2023-06-03T01:02:03.250Z")


def test_iso_text_sorts_like_time():
    times = [datetime(2023, 1, 1, 0, 0, 0, 500000), datetime(2023, 1, 1, 0, 0, 1), datetime(999, 1, 1)]
    assert sorted(iso_utc(t) for t in times) == [iso_utc(t) for t in sorted(times)]
    assert to_utc(date(2020, 2, 29)) == datetime(2020, 2, 29, tzinfo=timezone.utc)


def test_features_and_metrics_listing(store):
    store.record(aoi_id="a", metric="railcars", time="2023-01-01", value=1)
    store.record(aoi_id="a", metric="railcars", time="2023-01-01", value=2, feature_id="track-3")
    store.record(aoi_id="a", metric="containers_teu", time="2023-01-01", value=3)
    store.record(aoi_id="b", metric="ships", time="2023-01-01", value=3)
    assert store.metrics("a") == ["containers_teu", "railcars"]
    assert store.features("a", "railcars") == [SITE, "track-3"]
    assert store.series("a", "railcars", feature_id="track-3").tolist() == [2.0]
    assert store.series("a", "railcars").tolist() == [1.0]


def test_provenance_round_trip_and_missing(store):
    prov = {"scenes": ["S2A_1", "S2B_2"], "code": "0.1.0", "config_hash": "abc", "n": 3}
    store.record(aoi_id="a", metric="m", time="2023-01-01", value=1, provenance=prov)
    store.record(aoi_id="a", metric="m", time="2023-01-02", value=1)
    assert store.provenance("a", "m", date(2023, 1, 1)) == prov
    assert store.provenance("a", "m", "2023-01-02") is None
    assert store.provenance("a", "m", "2023-01-03") is None


def test_record_many_is_one_transaction(store):
    rows = [dict(aoi_id="a", metric="m", time=date(2023, 1, d), value=d) for d in range(1, 6)]
    store.record_many(rows)
    assert len(store.series("a", "m")) == 5
    bad = [dict(aoi_id="a", metric="m", time=date(2023, 2, 1), value=1), dict(aoi_id="a", metric="m", time="x", value=2)]
    with pytest.raises(DateError):
        store.record_many(bad)
    assert len(store.series("a", "m")) == 5  # nothing of the failed batch was written


def test_invalid_input_raises_changedet_errors(store):
    with pytest.raises(StoreError, match="not finite"):
        store.record(aoi_id="a", metric="m", time="2023-01-01", value=float("nan"))
    with pytest.raises(StoreError, match="aoi_id"):
        store.record(aoi_id="", metric="m", time="2023-01-01", value=1)
    with pytest.raises(DateError):
        store.record(aoi_id="a", metric="m", time="not a date", value=1)
    with pytest.raises(StoreError, match="unknown|does not match"):
        store.record_many([{"aoi_id": "a", "metric": "m", "time": "2023-01-01", "value": 1, "colour": "red"}])
    with pytest.raises(StoreError, match="mapping"):
        store.record(aoi_id="a", metric="m", time="2023-01-01", value=1, provenance=["scene-1"])
    assert issubclass(StoreError, ChangedetError) and issubclass(DateError, ChangedetError)


def test_closed_store_says_so(tmp_path):
    s = MetricStore(tmp_path / "m.sqlite")
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        s.series("a", "m")


def test_wal_mode(store):
    mode = store._db.conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_concurrent_writer_threads(tmp_path):
    path = tmp_path / "m.sqlite"
    MetricStore(path).close()
    errors = []

    def writer(k: int) -> None:
        try:
            with MetricStore(path) as s:
                for i in range(100):
                    s.record(aoi_id="a", metric=f"m{k}", time=datetime(2023, 1, 1) + timedelta(hours=i), value=i)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with MetricStore(path) as s:
        for k in range(4):
            assert len(s.series("a", f"m{k}")) == 100


def test_shared_instance_across_threads(store):
    def writer(k: int) -> None:
        store.record_many(
            [dict(aoi_id="a", metric="m", feature_id=f"f{k}", time=date(2023, 1, d), value=d) for d in range(1, 29)]
        )

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.features("a", "m") == ["f0", "f1", "f2", "f3"]


def test_concurrent_writer_processes(tmp_path):
    path = tmp_path / "m.sqlite"
    MetricStore(path).close()
    script = textwrap.dedent(
        """
        import sys
        from datetime import datetime, timedelta
        from changedet.metrics import MetricStore
        k = sys.argv[2]
        with MetricStore(sys.argv[1]) as s:
            for i in range(150):
                s.record(aoi_id="a", metric="m" + k, time=datetime(2023, 1, 1) + timedelta(hours=i), value=i,
                         provenance={"writer": k})
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(path), str(k)], cwd=REPO, stderr=subprocess.PIPE, text=True)
        for k in range(3)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    with MetricStore(path) as s:
        for k in range(3):
            series = s.series("a", f"m{k}")
            assert len(series) == 150
            assert series.iloc[-1] == 149.0
            assert s.provenance("a", f"m{k}", datetime(2023, 1, 1)) == {"writer": str(k)}

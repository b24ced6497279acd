"""Prefect flows in ephemeral mode (no server to install): they wire library calls only."""

import os
from datetime import date, datetime, timezone

import pytest


@pytest.fixture(scope="module")
def prefect_env(tmp_path_factory):
    """A throw-away Prefect server and database, stopped cleanly at the end (Prefect's own harness)."""
    from prefect.testing.utilities import prefect_test_harness

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    with prefect_test_harness(server_startup_timeout=180):
        yield


def test_day_for_uses_the_aoi_timezone():
    from changedet.aoi import load_aoi
    from flows.daily import day_for

    aoi = load_aoi("tumangang_railyard")  # Asia/Pyongyang, UTC+9
    assert day_for(aoi, datetime(2023, 10, 4, 16, 30, tzinfo=timezone.utc)) == date(2023, 10, 5)
    assert day_for(aoi, datetime(2023, 10, 4, 14, 0, tzinfo=timezone.utc)) == date(2023, 10, 4)


def test_daily_monitor_and_backfill_run_in_ephemeral_mode(prefect_env, tmp_path):
    from flows.backfill import backfill
    from flows.daily import daily_monitor

    data = str(tmp_path / "data")
    results = daily_monitor(aoi_ids=["rajin_port"], day=date(2023, 7, 6), data_dir=data)
    assert [r["aoi_id"] for r in results] == ["rajin_port"]
    assert results[0]["status"] in ("processed", "cloudy", "not_registered")

    out = backfill(["dunai_port"], date(2023, 6, 1), date(2023, 6, 29), every_days=7, data_dir=data, chunk_days=2)
    days = [r["day"] for r in out["dunai_port"]]
    assert days == ["2023-06-01", "2023-06-08", "2023-06-15", "2023-06-22", "2023-06-29"]
    # Re-running a finished range does nothing new.
    again = backfill(["dunai_port"], date(2023, 6, 1), date(2023, 6, 29), every_days=7, data_dir=data)
    assert all(r["status"] in ("already_processed", "no_scene", "cloudy", "not_registered")
               for r in again["dunai_port"])

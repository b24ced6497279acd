"""``daily_monitor``: process every (or a selection of) AOI for one day."""

from __future__ import annotations

import os
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from changedet.aoi import list_aois, load_aoi
from flows.tasks import process_aoi_day


def default_data_dir() -> str:
    return os.environ.get("CHANGEDET_DATA_DIR", "changedet-data")


def day_for(aoi, scheduled: datetime | None) -> date:
    """The local calendar day of a scheduled start in the AOI's timezone.

    Deriving the day from the *scheduled* time (not the wall clock) makes a late or
    re-run schedule process the day it was meant for.
    """
    when = scheduled or datetime.now(timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(ZoneInfo(aoi.timezone)).date()


@flow(name="daily_monitor", log_prints=True)
def daily_monitor(aoi_ids: list[str] | None = None, day: date | None = None, data_dir: str | None = None,
                  seed: int = 0) -> list[dict]:
    """Acquire, co-register, count and alert for each AOI on one day.

    Parameters
    ----------
    aoi_ids : list of str, optional
        AOIs to process (default: the whole registry).
    day : date, optional
        Day to process; default: the local day of the flow run's scheduled start.
    data_dir : str, optional
        Cubes, metrics and outbox (default: ``$CHANGEDET_DATA_DIR`` or ``changedet-data``).
    """
    logger = get_run_logger()
    aois = [load_aoi(a) for a in aoi_ids] if aoi_ids else list_aois()
    scheduled = flow_run.scheduled_start_time if flow_run.id else None
    data_dir = data_dir or default_data_dir()
    futures = [process_aoi_day.submit(a.id, day or day_for(a, scheduled), data_dir, seed) for a in aois]
    results = [f.result() for f in futures]
    alerts = [al for r in results for al in r["alerts"]]
    logger.info("%d AOIs processed, %d alerts opened or escalated", len(results), len(alerts))
    return results


if __name__ == "__main__":  # pragma: no cover
    daily_monitor()

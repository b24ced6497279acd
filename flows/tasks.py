"""Prefect tasks: thin wrappers over ``changedet.pipeline``."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from changedet.aoi import load_aoi
from changedet.pipeline import RunConfig, run_day


def _as_dict(result) -> dict[str, Any]:
    doc = asdict(result)
    doc["day"] = result.day.isoformat()
    return doc


# The cube and the outbox are the idempotency layer (a processed scene is skipped, a
# replayed finding suppressed), so Prefect's own result cache is not needed to make
# retries and re-runs safe.
@task(retries=2, retry_delay_seconds=10, cache_policy=NO_CACHE, task_run_name="{aoi_id} {day}")
def process_aoi_day(aoi_id: str, day: date, data_dir: str, seed: int = 0) -> dict[str, Any]:
    """Run the daily slice for one AOI and day; logs carry AOI and date."""
    logger = get_run_logger()
    result = run_day(load_aoi(aoi_id), day, RunConfig(data_dir=Path(data_dir), seed=seed))
    logger.info("%s", result.summary())
    for alert in result.alerts:
        logger.warning("ALERT %s %s: %s", alert["action"], alert["alert_id"], alert["message"])
    return _as_dict(result)


@task(retries=1, retry_delay_seconds=10, cache_policy=NO_CACHE, task_run_name="{aoi_id} backfill chunk")
def process_aoi_days(aoi_id: str, days: list[date], data_dir: str, seed: int = 0) -> list[dict[str, Any]]:
    """Run consecutive days for one AOI in order (alerts depend on the order)."""
    logger = get_run_logger()
    aoi = load_aoi(aoi_id)
    cfg = RunConfig(data_dir=Path(data_dir), seed=seed)
    out = []
    for d in sorted(days):
        result = run_day(aoi, d, cfg)
        logger.info("%s", result.summary())
        out.append(_as_dict(result))
    return out

"""``backfill``: re-run a date range for AOIs, resumable (processed scenes are skipped)."""

from __future__ import annotations

from datetime import date

from prefect import flow, get_run_logger

from changedet.aoi import list_aois, load_aoi
from changedet.pipeline import dates_between
from flows.daily import default_data_dir
from flows.tasks import process_aoi_days


@flow(name="backfill", log_prints=True)
def backfill(aoi_ids: list[str] | None, start: date, end: date, every_days: int = 7,
             data_dir: str | None = None, seed: int = 0, chunk_days: int = 8) -> dict[str, list[dict]]:
    """Process ``start``..``end`` every ``every_days`` days; AOIs run in parallel, days in order.

    Chunks of ``chunk_days`` dates are separate task runs, so a crash loses at most one
    chunk's progress and a re-run skips everything already in the cubes.
    """
    logger = get_run_logger()
    aois = [load_aoi(a) for a in aoi_ids] if aoi_ids else list_aois()
    days = dates_between(start, end, every_days)
    data_dir = data_dir or default_data_dir()
    out: dict[str, list[dict]] = {}
    futures = {}
    for a in aois:
        chunks = [days[i:i + chunk_days] for i in range(0, len(days), chunk_days)]
        prev = None
        for ch in chunks:
            # Each AOI's chunks wait on the previous one: alerts depend on the order of days.
            prev = process_aoi_days.submit(a.id, ch, data_dir, seed, wait_for=[prev] if prev else None)
            futures.setdefault(a.id, []).append(prev)
    for aoi_id, fs in futures.items():
        out[aoi_id] = [r for f in fs for r in f.result()]
    logger.info("backfill of %d AOIs x %d dates done", len(aois), len(days))
    return out

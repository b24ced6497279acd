"""``report``: render the analyst report (``changedet.report.build_report``) from stored results."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from prefect import flow

from flows.daily import default_data_dir
from flows.tasks import render_report


@flow(name="report", log_prints=True)
def report(data_dir: str | None = None, out_dir: str | None = None, aoi_ids: list[str] | None = None,
           start: date | None = None, end: date | None = None, registry: str | None = None) -> str:
    """Build the report for ``aoi_ids`` (default all) between ``start`` and ``end``.

    ``out_dir`` defaults to ``<data_dir>/reports``. Returns the report's path.
    """
    data_dir = data_dir or default_data_dir()
    out_dir = out_dir or str(Path(data_dir) / "reports")
    return render_report(data_dir, out_dir, aoi_ids, start, end, registry)

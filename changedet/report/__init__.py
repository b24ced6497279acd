"""Static HTML reports: one page per AOI and an index over all of them.

``build_report(data_dir, out_dir)`` turns what runs left in a data directory into pages
an analyst can open from disk or publish as is; the figures come from
:mod:`changedet.figures` (scale bar, north arrow, date, sensor, attribution on every map).
"""

from changedet.report.build import ReportError, ReportIncomplete, baseline_band, build_report

__all__ = ["ReportError", "ReportIncomplete", "baseline_band", "build_report"]

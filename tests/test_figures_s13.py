"""Series figures are honest: lines break at data gaps, observations are marked, the legend lists only what is drawn.

The figure's matplotlib artists are inspected (not pixels): the observed line, the
baseline band and median, the gap shading and the legend texts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from changedet import figures as F


def _fig(series, baseline=None, **kw):
    return F._series_figure(series, title="t", units="railcars", baseline=baseline, alerts=kw.pop("alerts", ()),
                            width_px=800, height_px=320, **kw)


def _artist(fig, gid):
    found = [a for a in fig.axes[0].get_children() if a.get_gid() == gid]
    assert len(found) == 1, f"{gid}: {found}"
    return found[0]


def _legend(fig):
    leg = fig.axes[0].get_legend()
    return [] if leg is None else [t.get_text() for t in leg.get_texts()]


def _segments(line):
    """Runs of consecutive finite points of a Line2D, as lists of x values (matplotlib day numbers)."""
    x = np.asarray(line.get_xdata(orig=False), dtype="float64")
    y = np.asarray(line.get_ydata(orig=False), dtype="float64")
    ok = np.isfinite(y)
    runs, cur = [], []
    for xi, oki in zip(x, ok):
        if oki:
            cur.append(xi)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return runs


def _tumangang():
    """Weekly railcar counts to 07-20, nothing until 10-05 (77 days), then weekly again."""
    a = pd.date_range("2023-05-04", "2023-07-20", freq="7D")
    b = pd.date_range("2023-10-05", periods=8, freq="7D")
    idx = a.append(b)
    return pd.Series(np.r_[np.full(len(a), 12.0), np.full(len(b), 55.0)], index=idx)


def test_line_breaks_at_long_gap_and_gap_is_shaded():
    s = _tumangang()
    fig = _fig(s)
    runs = _segments(_artist(fig, "series-line"))
    # Two runs: before and after the gap; no line segment spans the 77 days.
    assert [len(r) for r in runs] == [int((s.index <= "2023-07-20").sum()), int((s.index >= "2023-10-05").sum())]
    for r in runs:
        assert np.diff(r).max() <= 7.0 + 1e-6
    gap = _artist(fig, "gap-0")
    xs = gap.get_path().transformed(gap.get_patch_transform()).vertices[:, 0] if hasattr(gap, "get_patch_transform") \
        else gap.get_xy()[:, 0]
    x0, x1 = xs.min(), xs.max()
    import matplotlib.dates as mdates
    assert mdates.num2date(x0).date().isoformat() == "2023-07-20"
    assert mdates.num2date(x1).date().isoformat() == "2023-10-05"
    assert any(t.startswith("no observations") for t in _legend(fig))


def test_every_observation_is_marked():
    s = _tumangang()
    line = _artist(_fig(s), "series-line")
    assert line.get_marker() == "o"
    y = np.asarray(line.get_ydata(), dtype="float64")
    assert np.isfinite(y).sum() == len(s)


def test_one_missed_acquisition_stays_joined():
    idx = pd.date_range("2023-01-01", periods=12, freq="5D").delete(6)   # one 10-day step
    fig = _fig(pd.Series(np.arange(len(idx), dtype=float), index=idx))
    assert len(_segments(_artist(fig, "series-line"))) == 1
    assert not [a for a in fig.axes[0].get_children() if str(a.get_gid()).startswith("gap-")]
    assert not any(t.startswith("no observations") for t in _legend(fig))


def test_nan_observations_are_not_drawn_and_do_not_shorten_the_limit():
    idx = pd.date_range("2023-01-01", periods=10, freq="5D")
    vals = np.arange(10, dtype=float)
    vals[4] = np.nan   # a cloudy acquisition
    line = _artist(_fig(pd.Series(vals, index=idx)), "series-line")
    assert np.isfinite(np.asarray(line.get_ydata(), float)).sum() == 9
    assert len(_segments(line)) == 1


def test_explicit_gap_limit_from_cadence():
    idx = pd.date_range("2023-01-01", periods=6, freq="5D").delete(3)   # a 10-day step
    s = pd.Series(np.ones(len(idx)), index=idx)
    assert len(_segments(_artist(_fig(s, max_gap_days=8), "series-line"))) == 2
    assert len(_segments(_artist(_fig(s, max_gap_days=12), "series-line"))) == 1
    for bad in (0, -1, float("nan"), "two"):
        with pytest.raises(F.FigureError, match="max_gap_days"):
            _fig(s, max_gap_days=bad)


def test_gap_limit_default_is_factor_of_typical_spacing():
    idx = pd.date_range("2023-01-01", periods=10, freq="6D")
    assert F.series_gap_limit(idx) == pd.Timedelta(days=6 * F.GAP_FACTOR)
    assert F.series_gap_limit(idx[:2]) is None   # too few to know a cadence: nothing broken


def test_few_observations_gap_is_found():
    # The audited Tumangang case: 07-13, 07-20, then nothing until 10-05.
    idx = pd.DatetimeIndex(["2023-07-13", "2023-07-20", "2023-10-05"])
    assert F.series_gap_limit(idx) == pd.Timedelta(days=3 * 7 * F.GAP_FACTOR)   # 52.5 d < 77 d
    fig = _fig(pd.Series([14.0, 15.0, 72.0], index=idx))
    assert [len(r) for r in _segments(_artist(fig, "series-line"))] == [2, 1]
    # Two scenes on one day do not make the cadence hours long.
    idx2 = pd.DatetimeIndex(["2023-07-13 01:00", "2023-07-13 03:00", "2023-07-20", "2023-07-27"])
    assert pd.Timedelta(days=6.8 * F.GAP_FACTOR) < F.series_gap_limit(idx2) <= pd.Timedelta(days=7 * F.GAP_FACTOR)


def test_many_gaps_still_found():
    days = np.cumsum([0, 7, 7, 77, 7, 77, 7])
    idx = pd.Timestamp("2023-01-01") + pd.to_timedelta(days, unit="D")
    assert len(_segments(_artist(_fig(pd.Series(np.ones(len(idx)), index=idx)), "series-line"))) == 3


def test_uneven_regular_sampling_is_not_broken():
    # Several sensors / overlapping orbits: steps of 1, 1 and 4 days repeat; none is a gap
    # (a median-based limit, 2.5 days, would break every 4-day step).
    days = np.cumsum([0] + [1, 1, 4] * 6)
    idx = pd.Timestamp("2023-01-01") + pd.to_timedelta(days, unit="D")
    line = _artist(_fig(pd.Series(np.ones(len(idx)), index=idx)), "series-line")
    assert len(_segments(line)) == 1


def test_legend_lists_only_what_is_drawn_when_baseline_has_no_history():
    s = _tumangang()
    empty = pd.DataFrame({"lo": np.nan, "mid": np.nan, "hi": np.nan}, index=s.index)
    fig = _fig(s, empty)
    labels = _legend(fig)
    assert "observed" in labels
    assert not any("normal range" in t or "baseline median" in t for t in labels)
    gids = {a.get_gid() for a in fig.axes[0].get_children()}
    assert not gids & {"baseline-band", "baseline-mid", "baseline-range"}


def test_baseline_drawn_is_listed_and_broken_at_gap():
    s = _tumangang()
    b = pd.DataFrame({"lo": 8.0, "mid": 12.0, "hi": 16.0}, index=s.index)
    b.iloc[:3] = np.nan   # no history yet at the start
    fig = _fig(s, b)
    labels = _legend(fig)
    assert any("normal range" in t for t in labels) and "baseline median" in labels
    band = _artist(fig, "baseline-band")
    assert len(band.get_paths()) == 2   # one polygon each side of the gap, none across it
    assert len(_segments(_artist(fig, "baseline-mid"))) == 2


def test_empty_series_has_no_legend_for_undrawn_line(tmp_path):
    fig = _fig(pd.Series([], index=pd.DatetimeIndex([]), dtype=float))
    assert "observed" not in _legend(fig)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "no observations" in texts


def test_png_and_svg_accept_gap_limit(tmp_path):
    s = _tumangang()
    assert F.series_png(s, tmp_path / "s.png", title="t", max_gap_days=20).exists()
    svg = F.series_svg(s, title="t", id_prefix="m1")
    assert 'id="m1-gap-0"' in svg and 'id="m1-series-line"' in svg

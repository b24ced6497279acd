"""Baseline rules: is the latest observation of a metric out of the ordinary?

A rule compares one observation of a metric series with the observations *strictly
before it* (so a backfill and a live run agree) and returns a :class:`Finding` with
the figures behind the decision and a plain-language message, or None.

Rule kinds
----------
``robust_z``
    Deviation from the median of a trailing window in units of a floored, scaled MAD.
``historical_max``
    The value clearly exceeds everything seen before.
``trend``
    Sustained growth over a trailing window (Theil–Sen slope whose confidence
    interval is above zero, with enough relative and absolute growth).
``seasonal``
    Deviation from the same weeks of earlier years (median and MAD of the
    observations within ``halfwidth_days`` of the same day of year), for metrics
    with a yearly rhythm (harvest trains, ice-bound ports).
``ewma``
    Exponentially weighted moving average of the standardised recent observations
    against the baseline before them: catches a moderate shift that persists.
``cusum``
    One-sided cumulative sum of the standardised recent observations above (or
    below) the baseline: catches sustained growth that no single day shows.

Every kind also takes the lifecycle parameters of :data:`LIFECYCLE_PARAMS`
(cooldown after resolution, escalation ratio, quiet days before auto-resolution),
read with :func:`lifecycle_params` and applied by the outbox and the pipeline.

Parameters of each kind, with defaults, are in :data:`RULE_PARAMS`;
:func:`validate_params` checks a rule's parameters up front (config loading) and
:func:`evaluate` does so again on every call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from changedet.errors import ChangedetError, RuleError
from changedet.metrics import SITE, to_utc

__all__ = [
    "Finding",
    "RULE_KINDS",
    "RULE_PARAMS",
    "SEVERITIES",
    "LIFECYCLE_PARAMS",
    "evaluate",
    "evaluate_all",
    "lifecycle_params",
    "validate_params",
]

SEVERITIES = ("low", "medium", "high")

# Normal-consistent MAD: 1.4826 * MAD estimates the standard deviation of Gaussian data.
MAD_TO_SIGMA = 1.4826
# Allowance of the one-sided CUSUM in standard units: drifts smaller than half a sigma
# per observation do not accumulate.
CUSUM_K = 0.5
_DAY = pd.Timedelta(days=1)


# -- parameter validation --------------------------------------------------------------
@dataclass(frozen=True)
class _Param:
    default: Any
    check: Callable[[Any], bool]
    expect: str


def _is_number(v: Any) -> bool:
    # bool is an int subclass, but "k: true" in YAML is a mistake, not 1.
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)) and math.isfinite(v)


def _num(lo: float | None = None, *, lo_open: bool = False) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        if not _is_number(v):
            return False
        if lo is None:
            return True
        return v > lo if lo_open else v >= lo

    return check


#: Longest accepted span of any day-valued parameter (window, cooldown, quiet period): a
#: century, far beyond any monitoring history, yet well inside what pandas and datetime
#: can subtract from a date (``window_days: 1e12`` passed validation and then overflowed
#: the time arithmetic of every run).
MAX_DAYS = 36525.0


def _days(*, lo_open: bool) -> Callable[[Any], bool]:
    inner = _num(0, lo_open=lo_open)
    return lambda v: inner(v) and v <= MAX_DAYS


def _int(lo: int) -> Callable[[Any], bool]:
    return lambda v: _is_number(v) and float(v).is_integer() and v >= lo


RULE_PARAMS: dict[str, dict[str, _Param]] = {
    "robust_z": {
        "window_days": _Param(90.0, _days(lo_open=True), "a number of days > 0 and <= 36525 (100 years)"),
        "min_history": _Param(6, _int(1), "an integer >= 1"),
        "k": _Param(4.0, _num(0, lo_open=True), "a number > 0"),
        "min_delta": _Param(0.0, _num(0), "a number >= 0"),
        "mad_floor": _Param(1.0, _num(0), "a number >= 0"),
        "rel_floor": _Param(0.1, _num(0), "a number >= 0"),
        "direction": _Param("up", lambda v: v in ("up", "down", "both"), "one of up, down, both"),
    },
    "historical_max": {
        "min_history": _Param(6, _int(1), "an integer >= 1"),
        "factor": _Param(1.5, _num(1), "a number >= 1"),
        "min_delta": _Param(0.0, _num(0), "a number >= 0"),
    },
    "trend": {
        "window_days": _Param(84.0, _days(lo_open=True), "a number of days > 0 and <= 36525 (100 years)"),
        # Theil-Sen needs a few points before its confidence interval means anything.
        "min_history": _Param(6, _int(3), "an integer >= 3"),
        "min_rel_growth": _Param(0.25, _num(0), "a number >= 0"),
        "min_delta": _Param(0.0, _num(0), "a number >= 0"),
        # 0.90 finds a build-up within an acquisition of it becoming visible
        # (bench/bench_alerts.py); on pure noise it needs min_delta to stay quiet.
        "alpha": _Param(0.90, lambda v: _is_number(v) and 0.5 <= v < 1, "a confidence level in [0.5, 1)"),
    },
    "seasonal": {
        "halfwidth_days": _Param(21.0, lambda v: _is_number(v) and 0 < v <= 91, "a number of days in (0, 91]"),
        "min_years": _Param(1, _int(1), "an integer >= 1"),
        "min_history": _Param(4, _int(1), "an integer >= 1"),
        "k": _Param(4.0, _num(0, lo_open=True), "a number > 0"),
        "min_delta": _Param(0.0, _num(0), "a number >= 0"),
        "mad_floor": _Param(1.0, _num(0), "a number >= 0"),
        "rel_floor": _Param(0.1, _num(0), "a number >= 0"),
        "direction": _Param("up", lambda v: v in ("up", "down", "both"), "one of up, down, both"),
    },
    "ewma": {
        # Baseline: observations older than recent_days, within window_days.
        "window_days": _Param(180.0, _days(lo_open=True), "a number of days > 0 and <= 36525 (100 years)"),
        "recent_days": _Param(42.0, _days(lo_open=True), "a number of days > 0 and <= 36525 (100 years)"),
        "min_history": _Param(10, _int(2), "an integer >= 2"),
        "lam": _Param(0.25, lambda v: _is_number(v) and 0 < v <= 1, "a smoothing weight in (0, 1]"),
        # Above the textbook 3: the baseline's median and scale are estimated from a
        # few observations, which shortens the in-control run length a lot.
        "limit": _Param(3.5, _num(0, lo_open=True), "a number of standard errors > 0"),
        "min_delta": _Param(0.0, _num(0), "a number >= 0"),
        "mad_floor": _Param(1.0, _num(0), "a number >= 0"),
        "rel_floor": _Param(0.1, _num(0), "a number >= 0"),
        "direction": _Param("up", lambda v: v in ("up", "down"), "one of up, down"),
    },
    "cusum": {
        "window_days": _Param(180.0, _days(lo_open=True), "a number of days > 0 and <= 36525 (100 years)"),
        "recent_days": _Param(42.0, _days(lo_open=True), "a number of days > 0 and <= 36525 (100 years)"),
        "min_history": _Param(10, _int(2), "an integer >= 2"),
        "k": _Param(0.5, _num(0), "an allowance in standard units >= 0"),
        "h": _Param(5.0, _num(0, lo_open=True), "a decision interval in standard units > 0"),
        "min_delta": _Param(0.0, _num(0), "a number >= 0"),
        "mad_floor": _Param(1.0, _num(0), "a number >= 0"),
        "rel_floor": _Param(0.1, _num(0), "a number >= 0"),
        "direction": _Param("up", lambda v: v in ("up", "down"), "one of up, down"),
    },
}
RULE_KINDS = tuple(RULE_PARAMS)

#: Parameters every rule kind accepts, about the alert's lifecycle rather than the test:
#: ``cooldown_days`` (findings this soon after the key's alert was resolved are
#: suppressed), ``escalate_ratio`` (an active alert re-notifies when its value passes
#: this many times the value last notified) and ``quiet_days`` (an active alert with no
#: finding for this long is resolved by the pipeline).
LIFECYCLE_PARAMS: dict[str, _Param] = {
    "cooldown_days": _Param(14.0, _days(lo_open=False), "a number of days >= 0 and <= 36525 (100 years)"),
    "escalate_ratio": _Param(1.25, _num(1), "a ratio >= 1"),
    "quiet_days": _Param(28.0, _days(lo_open=True), "a number of days > 0 and <= 36525 (100 years)"),
}


def lifecycle_params(params: Mapping[str, Any] | None, *, rule_id: str = "?") -> dict[str, float]:
    """The lifecycle parameters of a rule (see :data:`LIFECYCLE_PARAMS`), defaults filled in.

    Raises
    ------
    RuleError
        If one is invalid (the message names the rule and key).
    """
    params = params or {}
    if not isinstance(params, Mapping):
        raise RuleError(f"rule {rule_id!r}: params must be a mapping, got {type(params).__name__}")
    out = {}
    for key, p in LIFECYCLE_PARAMS.items():
        value = params.get(key, p.default)
        if not p.check(value):
            raise RuleError(f"rule {rule_id!r}: parameter {key!r} = {value!r} must be {p.expect}")
        out[key] = float(value)
    return out


def validate_params(kind: str, params: Mapping[str, Any] | None, *, rule_id: str = "?") -> dict[str, Any]:
    """Check a rule's parameters and fill in defaults.

    Parameters
    ----------
    kind : str
        One of :data:`RULE_KINDS`.
    params : mapping or None
        Parameters from the rule's configuration.
    rule_id : str
        Named in error messages.

    Returns
    -------
    dict
        Every parameter of the kind, defaults filled in (lifecycle parameters are
        checked but not returned; see :func:`lifecycle_params`).

    Raises
    ------
    RuleError
        Unknown kind, unknown key or invalid value; the message names the rule and key.
    """
    if kind not in RULE_PARAMS:
        raise RuleError(f"rule {rule_id!r}: unknown kind {kind!r}; use one of {', '.join(RULE_KINDS)}")
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise RuleError(f"rule {rule_id!r}: params must be a mapping, got {type(params).__name__}")
    spec = RULE_PARAMS[kind]
    out: dict[str, Any] = {}
    lifecycle_params(params, rule_id=rule_id)
    for key in params:
        if key not in spec and key not in LIFECYCLE_PARAMS:
            raise RuleError(
                f"rule {rule_id!r}: unknown parameter {key!r} for kind {kind!r}; "
                f"valid parameters are {', '.join([*spec, *LIFECYCLE_PARAMS])}"
            )
    for key, p in spec.items():
        value = params.get(key, p.default)
        if not p.check(value):
            raise RuleError(f"rule {rule_id!r}: parameter {key!r} = {value!r} must be {p.expect}")
        if isinstance(p.default, int):
            out[key] = int(value)
        elif isinstance(p.default, float):
            out[key] = float(value)
        else:
            out[key] = value
    return out


# -- the finding -----------------------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    """One observation that a rule found out of the ordinary.

    Attributes
    ----------
    aoi_id, aoi_name : str
        The site (id for machines, name for people).
    rule_id, kind : str
        The configured rule and its kind.
    metric, feature_id : str
        The series evaluated.
    time : datetime.datetime
        Time of the observation that triggered the rule (tz-aware UTC).
    value : float
        Its value.
    severity : str
        ``low``, ``medium`` or ``high`` (from the rule's configuration).
    figures : mapping
        The numbers behind the decision (JSON-serialisable: floats, ints and ISO date
        strings such as ``since``). ``sign`` is +1 for an upward finding, -1 for a
        downward one.
    message : str
        Plain-language sentence with the main figures.
    """

    aoi_id: str
    aoi_name: str
    rule_id: str
    metric: str
    feature_id: str
    time: datetime
    value: float
    severity: str
    kind: str
    figures: Mapping[str, Any] = field(default_factory=dict)
    message: str = ""


# -- formatting ------------------------------------------------------------------------
def _fmt(v: float) -> str:
    """A number as people write it: whole numbers plain, otherwise ~3 significant digits."""
    v = float(v)
    if abs(v - round(v)) < 1e-9:
        return str(int(round(v)))
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    return f"{v:.2f}".rstrip("0").rstrip(".")


def _about(v: float) -> str:
    """A fitted level, which is only approximate anyway."""
    return f"{v:.0f}" if abs(v) >= 10 else _fmt(round(v, 1))


def _signed(v: float) -> str:
    text = _about(v)
    return text if text.startswith("-") else "+" + text


def _day(t: pd.Timestamp | datetime) -> str:
    return pd.Timestamp(t).strftime("%Y-%m-%d")


def _place(aoi_name: str, feature_id: str) -> str:
    return aoi_name if feature_id == SITE else f"{aoi_name} ({feature_id})"


# -- series handling -------------------------------------------------------------------
def _clean(series: pd.Series, rule_id: str) -> pd.Series:
    """Finite float values on a sorted, unique, tz-aware UTC index."""
    if not isinstance(series, pd.Series):
        raise RuleError(f"rule {rule_id!r}: expected a pandas Series, got {type(series).__name__}")
    try:
        index = pd.DatetimeIndex(series.index)
    except (TypeError, ValueError) as exc:
        raise RuleError(f"rule {rule_id!r}: series index is not made of times: {exc}") from None
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    try:
        values = pd.to_numeric(pd.Series(series.to_numpy(), index=index), errors="raise").astype("float64")
    except (TypeError, ValueError) as exc:
        raise RuleError(f"rule {rule_id!r}: series values are not numbers: {exc}") from None
    values = values[np.isfinite(values.to_numpy())]
    values = values.sort_index(kind="stable")
    # A re-recorded observation should replace the earlier one, as in the metric store.
    return values[~values.index.duplicated(keep="last")]


def _scale(median: float, mad: float, mad_floor: float, rel_floor: float) -> float:
    # Floors keep a perfectly flat history (MAD 0) from turning +1 into an infinite z.
    return max(MAD_TO_SIGMA * mad, mad_floor, rel_floor * abs(median))


# -- rules -----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Ctx:
    rule_id: str
    kind: str
    severity: str
    aoi_id: str
    aoi_name: str
    metric: str
    feature_id: str
    day_of: Callable[[pd.Timestamp], date] | None = None

    def day(self, t: pd.Timestamp | datetime) -> str:
        """The date of an observation in messages and figures: the day of the run that made it
        (``day_of``: the AOI's local day, the ``--date`` that reproduces it), else its UTC date."""
        if self.day_of is not None:
            return self.day_of(pd.Timestamp(t)).isoformat()
        return _day(t)

    def finding(self, t: pd.Timestamp, value: float, figures: dict[str, Any], message: str) -> Finding:
        return Finding(
            aoi_id=self.aoi_id,
            aoi_name=self.aoi_name,
            rule_id=self.rule_id,
            metric=self.metric,
            feature_id=self.feature_id,
            time=to_utc(t),
            value=float(value),
            severity=self.severity,
            kind=self.kind,
            figures={k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in figures.items()},
            message=message,
        )


def _robust_z(ctx: _Ctx, p: dict, t: pd.Timestamp, value: float, history: pd.Series) -> Finding | None:
    window = history[history.index >= t - p["window_days"] * _DAY]
    if len(window) < p["min_history"]:
        return None
    values = window.to_numpy()
    median = float(np.median(values))
    mad = float(np.median(np.abs(values - median)))
    scale = _scale(median, mad, p["mad_floor"], p["rel_floor"])
    delta = value - median
    z = delta / scale
    direction = p["direction"]
    if direction == "both":
        sign = 1 if delta >= 0 else -1
    else:
        sign = 1 if direction == "up" else -1
    if sign * z < p["k"] or sign * delta < p["min_delta"]:
        return None
    extreme = float(history.max() if sign > 0 else history.min())
    since = ctx.day(history.index[0])
    figures = {
        "median": median,
        "mad": mad,
        "scale": scale,
        "z": z,
        "delta": delta,
        "history_max": float(history.max()),
        "history_min": float(history.min()),
        "history_n": len(history),
        "window_n": len(window),
        "window_days": p["window_days"],
        "since": since,
        "sign": sign,
    }
    word, rank = ("above", "highest") if sign > 0 else ("below", "lowest")
    message = (
        f"{_fmt(value)} {ctx.metric} at {_place(ctx.aoi_name, ctx.feature_id)} on {ctx.day(t)}; "
        f"{rank} since {since} was {_fmt(extreme)}; "
        f"{abs(z):.1f} MAD {word} the {_fmt(p['window_days'])}-day median of {_fmt(median)}."
    )
    return ctx.finding(t, value, figures, message)


def _historical_max(ctx: _Ctx, p: dict, t: pd.Timestamp, value: float, history: pd.Series) -> Finding | None:
    if len(history) < p["min_history"]:
        return None
    hmax = float(history.max())
    # Strictly above: with an all-zero history, factor * max == 0 must not flag a 0.
    if not (value > hmax and value >= p["factor"] * hmax and value - hmax >= p["min_delta"]):
        return None
    since = ctx.day(history.index[0])
    ratio = value / hmax if hmax > 0 else math.inf
    figures = {
        "history_max": hmax,
        "history_max_time": ctx.day(history.idxmax()),
        "history_median": float(history.median()),
        "history_n": len(history),
        "since": since,
        "factor": p["factor"],
        "ratio": ratio,
        "delta": value - hmax,
        "sign": 1,
    }
    times = f", {ratio:.1f} times that" if math.isfinite(ratio) else ""
    message = (
        f"{_fmt(value)} {ctx.metric} at {_place(ctx.aoi_name, ctx.feature_id)} on {ctx.day(t)}; "
        f"highest since {since} was {_fmt(hmax)} on {figures['history_max_time']}{times}."
    )
    return ctx.finding(t, value, figures, message)


def _cusum(window: pd.Series, baseline: pd.Series) -> tuple[float, float, float]:
    """One-sided upper CUSUM of the window standardised by the preceding baseline."""
    values = baseline.to_numpy()
    median = float(np.median(values))
    mad = float(np.median(np.abs(values - median)))
    scale = _scale(median, mad, 1.0, 0.1)
    s = peak = 0.0
    for x in window.to_numpy():
        s = max(0.0, s + (x - median) / scale - CUSUM_K)
        peak = max(peak, s)
    return s, peak, median


def _trend(ctx: _Ctx, p: dict, t: pd.Timestamp, value: float, history: pd.Series) -> Finding | None:
    start_t = t - p["window_days"] * _DAY
    window = pd.concat([history[history.index >= start_t], pd.Series([value], index=[t])])
    if len(window) < p["min_history"]:
        return None
    # Fit on days since the first observation in the window, so that the intercept is
    # the fitted level at the start of the observed span (no extrapolation).
    days = ((window.index - window.index[0]) / _DAY).to_numpy(dtype="float64")
    span = float(days[-1])
    if span <= 0:
        return None
    res = stats.theilslopes(window.to_numpy(), days, alpha=p["alpha"])
    slope, intercept, lo, hi = (float(res.slope), float(res.intercept), float(res.low_slope), float(res.high_slope))
    if not lo > 0:
        return None
    start_level = intercept
    end_level = intercept + slope * span
    growth = end_level - start_level
    # From (fitted) zero any growth is unbounded in relative terms; min_delta guards it.
    rel = growth / start_level if start_level > 0 else math.inf
    if rel < p["min_rel_growth"] or growth < p["min_delta"]:
        return None
    weeks = span / 7.0
    figures: dict[str, Any] = {
        "slope_per_week": slope * 7,
        "slope_low_per_week": lo * 7,
        "slope_high_per_week": hi * 7,
        "start_level": start_level,
        "end_level": end_level,
        "growth": growth,
        "rel_growth": rel,
        "window_n": len(window),
        "window_days": p["window_days"],
        "span_days": span,
        "since": ctx.day(window.index[0]),
        "sign": 1,
    }
    baseline = history[(history.index < window.index[0]) & (history.index >= window.index[0] - p["window_days"] * _DAY)]
    if len(baseline) >= p["min_history"]:
        s, peak, base_median = _cusum(window, baseline)
        figures.update(cusum=s, cusum_max=peak, baseline_median=base_median, baseline_n=len(baseline))
    weeks_text = _fmt(round(weeks, 1))
    pct = f"{rel * 100:+.0f} %, " if math.isfinite(rel) else ""
    message = (
        f"{ctx.metric} at {_place(ctx.aoi_name, ctx.feature_id)} grew from about {_about(start_level)} "
        f"to {_about(end_level)} over {weeks_text} week{'' if weeks_text == '1' else 's'} "
        f"({pct}{_signed(slope * 7)} per week) to {ctx.day(t)}."
    )
    return ctx.finding(t, value, figures, message)


def _robust_stats(values: np.ndarray, p: dict) -> tuple[float, float, float]:
    """Median, MAD and a conservative noise scale of a baseline sample.

    The MAD of a handful of small integer counts is often one or two steps too small
    (half the values may sit on the median); the mean absolute deviation (times
    sqrt(pi/2) for Gaussian consistency) varies less between small samples. Taking
    the larger of the two keeps a chart from firing on ordinary noise.
    """
    median = float(np.median(values))
    dev = np.abs(values - median)
    mad = float(np.median(dev))
    scale = max(_scale(median, mad, p["mad_floor"], p["rel_floor"]), math.sqrt(math.pi / 2) * float(dev.mean()))
    return median, mad, scale


def _seasonal(ctx: _Ctx, p: dict, t: pd.Timestamp, value: float, history: pd.Series) -> Finding | None:
    # Same weeks of earlier years: circular day-of-year distance, and at least
    # half a year back so the current season's own rise is not its baseline.
    past = history[history.index <= t - 182 * _DAY]
    if past.empty:
        return None
    doy = past.index.day_of_year.to_numpy()
    gap = np.abs(doy - t.day_of_year)
    gap = np.minimum(gap, 365 - gap)
    same = past[gap <= p["halfwidth_days"]]
    years = sorted(set(same.index.year))
    if len(same) < p["min_history"] or len(years) < p["min_years"]:
        return None
    median, mad, scale = _robust_stats(same.to_numpy(), p)
    delta = value - median
    z = delta / scale
    direction = p["direction"]
    sign = (1 if delta >= 0 else -1) if direction == "both" else (1 if direction == "up" else -1)
    if sign * z < p["k"] or sign * delta < p["min_delta"]:
        return None
    span = f"{years[0]}" if len(years) == 1 else f"{years[0]}–{years[-1]}"
    figures = {
        "seasonal_median": median,
        "mad": mad,
        "scale": scale,
        "z": z,
        "delta": delta,
        "season_n": len(same),
        "season_years": len(years),
        "halfwidth_days": p["halfwidth_days"],
        "since": ctx.day(same.index[0]),
        "sign": sign,
    }
    word = "above" if sign > 0 else "below"
    message = (
        f"{_fmt(value)} {ctx.metric} at {_place(ctx.aoi_name, ctx.feature_id)} on {ctx.day(t)}; "
        f"{abs(z):.1f} MAD {word} the seasonal median of {_fmt(median)} "
        f"(same weeks of {span}, {len(same)} observations)."
    )
    return ctx.finding(t, value, figures, message)


def _split_recent(p: dict, t: pd.Timestamp, value: float, history: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(baseline, recent): recent ends with the current observation."""
    cut = t - p["recent_days"] * _DAY
    baseline = history[(history.index <= cut) & (history.index > cut - p["window_days"] * _DAY)]
    recent = pd.concat([history[history.index > cut], pd.Series([value], index=[t])])
    return baseline, recent


def _ewma(ctx: _Ctx, p: dict, t: pd.Timestamp, value: float, history: pd.Series) -> Finding | None:
    baseline, recent = _split_recent(p, t, value, history)
    if len(baseline) < p["min_history"]:
        return None
    median, mad, scale = _robust_stats(baseline.to_numpy(), p)
    sign = 1 if p["direction"] == "up" else -1
    lam = p["lam"]
    z = 0.0
    path = []
    for x in recent.to_numpy():
        z = lam * sign * (x - median) / scale + (1 - lam) * z
        path.append(z)
    # Steady-state standard error (classic EWMA chart limits): the tighter start-up
    # limits would turn the first recent observation into a k=limit spike test.
    n = len(path)
    se = math.sqrt(lam / (2 - lam))
    limit = p["limit"] * se
    delta = sign * (value - median)
    if z < limit or delta < p["min_delta"] or sign * (value - median) <= 0:
        return None
    level = float(median + sign * z * scale)
    figures = {
        "ewma_z": z,
        "limit": limit,
        "lam": lam,
        "baseline_median": median,
        "mad": mad,
        "scale": scale,
        "ewma_level": level,
        "recent_n": n,
        "baseline_n": len(baseline),
        "since": ctx.day(recent.index[0]),
        "delta": value - median,
        "sign": sign,
    }
    word = "above" if sign > 0 else "below"
    message = (
        f"{ctx.metric} at {_place(ctx.aoi_name, ctx.feature_id)} has run {word} normal over the "
        f"{n} acquisition{'s' if n != 1 else ''} since {figures['since']}: smoothed level about "
        f"{_about(level)} against a median of {_fmt(median)} before, {z / se:.1f} standard errors "
        f"(limit {p['limit']:g}); {_fmt(value)} on {ctx.day(t)}."
    )
    return ctx.finding(t, value, figures, message)


def _cusum_rule(ctx: _Ctx, p: dict, t: pd.Timestamp, value: float, history: pd.Series) -> Finding | None:
    baseline, recent = _split_recent(p, t, value, history)
    if len(baseline) < p["min_history"]:
        return None
    median, mad, scale = _robust_stats(baseline.to_numpy(), p)
    sign = 1 if p["direction"] == "up" else -1
    s_ = 0.0
    start = None
    for when, x in recent.items():
        s_ = max(0.0, s_ + sign * (x - median) / scale - p["k"])
        if s_ == 0.0:
            start = None
        elif start is None:
            start = when
    delta = sign * (value - median)
    if s_ < p["h"] or delta < p["min_delta"] or start is None:
        return None
    run = recent[recent.index >= start]
    figures = {
        "cusum": s_,
        "h": p["h"],
        "k": p["k"],
        "baseline_median": median,
        "mad": mad,
        "scale": scale,
        "run_n": len(run),
        "run_mean": float(run.mean()),
        "baseline_n": len(baseline),
        "since": ctx.day(start),
        "delta": value - median,
        "sign": sign,
    }
    word = "above" if sign > 0 else "below"
    message = (
        f"{ctx.metric} at {_place(ctx.aoi_name, ctx.feature_id)} has stayed {word} normal since "
        f"{figures['since']}: {len(run)} acquisition{'s' if len(run) != 1 else ''} averaging "
        f"{_about(figures['run_mean'])} against a median of {_fmt(median)} before "
        f"(CUSUM {s_:.1f}, threshold {p['h']:g}); {_fmt(value)} on {ctx.day(t)}."
    )
    return ctx.finding(t, value, figures, message)


_RULES: dict[str, Callable[[_Ctx, dict, pd.Timestamp, float, pd.Series], Finding | None]] = {
    "robust_z": _robust_z,
    "historical_max": _historical_max,
    "trend": _trend,
    "seasonal": _seasonal,
    "ewma": _ewma,
    "cusum": _cusum_rule,
}


# -- public API ------------------------------------------------------------------------
def _prepare(series, rule_id, kind, params, severity, aoi_id, aoi_name, metric, feature_id, day_of=None):
    p = validate_params(kind, params, rule_id=rule_id)
    if severity not in SEVERITIES:
        raise RuleError(f"rule {rule_id!r}: severity {severity!r} must be one of {', '.join(SEVERITIES)}")
    ctx = _Ctx(rule_id, kind, severity, aoi_id, aoi_name, metric, feature_id, day_of)
    return ctx, p, _clean(series, rule_id)


def _at_position(s: pd.Series, ctx: _Ctx, p: dict, pos: int) -> Finding | None:
    return _RULES[ctx.kind](ctx, p, s.index[pos], float(s.iloc[pos]), s.iloc[:pos])


def evaluate(
    series: pd.Series,
    *,
    rule_id: str,
    kind: str,
    params: Mapping[str, Any] | None,
    severity: str,
    aoi_id: str,
    aoi_name: str,
    metric: str,
    feature_id: str = SITE,
    at: datetime | str | None = None,
    day_of: Callable[[pd.Timestamp], date] | None = None,
) -> Finding | None:
    """Evaluate one observation of a metric series against the history before it.

    Parameters
    ----------
    series : pandas.Series
        Metric values on a DatetimeIndex (naive means UTC); NaNs are ignored.
    rule_id, kind, params, severity : str, str, mapping, str
        The rule (see :data:`RULE_PARAMS` for the parameters of each kind).
    aoi_id, aoi_name, metric, feature_id : str
        Copied into the finding and used in its message.
    at : datetime or str, optional
        Evaluate the latest observation at or before this time (default: the last
        observation). History is every observation strictly before it.
    day_of : callable, optional
        The day an observation's time belongs to (the run's day at the site, e.g.
        :func:`changedet.pipeline.scene_day`), for the dates in messages and figures;
        default its UTC date.

    Returns
    -------
    Finding or None
        None when the rule does not fire, there is not enough history, or there is
        no observation at or before ``at``.

    Raises
    ------
    RuleError
        Unknown kind, invalid parameters or severity, or a series that is not numeric
        on a time index.
    """
    ctx, p, s = _prepare(series, rule_id, kind, params, severity, aoi_id, aoi_name, metric, feature_id, day_of)
    if s.empty:
        return None
    if at is None:
        pos = len(s) - 1
    else:
        try:
            at_ts = pd.Timestamp(to_utc(at))
        except ChangedetError as exc:
            raise RuleError(f"rule {rule_id!r}: bad evaluation time: {exc}") from None
        pos = int(s.index.searchsorted(at_ts, side="right")) - 1
        if pos < 0:
            return None
    return _at_position(s, ctx, p, pos)


def evaluate_all(
    series: pd.Series,
    *,
    rule_id: str,
    kind: str,
    params: Mapping[str, Any] | None,
    severity: str,
    aoi_id: str,
    aoi_name: str,
    metric: str,
    feature_id: str = SITE,
    day_of: Callable[[pd.Timestamp], date] | None = None,
) -> list[Finding]:
    """Evaluate every observation in turn (backfills, tests); findings in time order.

    Each observation sees only the history before it, exactly as :func:`evaluate`
    with ``at`` set to its time would.
    """
    ctx, p, s = _prepare(series, rule_id, kind, params, severity, aoi_id, aoi_name, metric, feature_id, day_of)
    found = (_at_position(s, ctx, p, i) for i in range(len(s)))
    return [f for f in found if f is not None]

"""Baseline rules against series with known answers."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from changedet.baselines import RULE_PARAMS, Finding, evaluate, evaluate_all, validate_params
from changedet.errors import RuleError

RAIL = dict(aoi_id="tumangang", aoi_name="Tumangang railyard", metric="railcars", severity="high")
DEPOT = dict(aoi_id="tikhoretsk", aoi_name="Tikhoretsk depot", metric="containers_teu", severity="medium")


def weekly(values, start="2023-05-18") -> pd.Series:
    return pd.Series(np.asarray(values, dtype=float), index=pd.date_range(start, periods=len(values), freq="7D", tz="UTC"))


def flat_noise(n: int, seed: int, level: float = 15, spread: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return level + rng.integers(-spread, spread + 1, n)


# -- robust_z ----------------------------------------------------------------------------
def spike_series() -> pd.Series:
    # 20 weeks of 12..18 railcars, then 72 on 2023-10-05.
    values = np.r_[flat_noise(20, seed=1), 72]
    s = weekly(values)
    assert s.index[-1] == pd.Timestamp("2023-10-05", tz="UTC")
    return s


def test_robust_z_fires_on_spike_with_figures():
    s = spike_series()
    f = evaluate(s, rule_id="rail-spike", kind="robust_z", params={}, **RAIL)
    assert isinstance(f, Finding)
    window = s.iloc[:-1][s.index[:-1] >= s.index[-1] - pd.Timedelta(days=90)]
    median = float(np.median(window))
    mad = float(np.median(np.abs(window - median)))
    scale = max(1.4826 * mad, 1.0, 0.1 * median)
    assert f.figures["median"] == pytest.approx(median)
    assert f.figures["mad"] == pytest.approx(mad)
    assert f.figures["z"] == pytest.approx((72 - median) / scale)
    assert f.figures["history_n"] == 20
    assert f.figures["window_n"] == len(window) == 12  # 12 weeks fit in 90 days
    assert f.figures["history_max"] == s.iloc[:-1].max()
    assert f.figures["since"] == "2023-05-18"
    assert (f.time, f.value, f.kind, f.rule_id, f.severity) == (
        datetime(2023, 10, 5, tzinfo=timezone.utc), 72.0, "robust_z", "rail-spike", "high"
    )
    hmax = int(s.iloc[:-1].max())
    assert f.message == (
        f"72 railcars at Tumangang railyard on 2023-10-05; highest since 2023-05-18 was {hmax}; "
        f"{f.figures['z']:.1f} MAD above the 90-day median of {median:g}."
    )


def test_flat_noisy_series_never_fires():
    for seed in range(20):
        s = weekly(flat_noise(20, seed=seed))
        for kind in ("robust_z", "historical_max"):
            assert evaluate_all(s, rule_id="r", kind=kind, params={}, **RAIL) == [], (seed, kind)


def test_mad_floor_stops_perfectly_flat_history_from_alerting():
    s = weekly([10] * 15 + [11])
    assert evaluate(s, rule_id="r", kind="robust_z", params={}, **RAIL) is None
    # Without floors a +1 on a zero-MAD history would be an infinite z.
    f = evaluate(s, rule_id="r", kind="robust_z", params={"mad_floor": 0.2, "rel_floor": 0}, **RAIL)
    assert f is not None and f.figures["z"] == pytest.approx(5.0)
    # rel_floor: 10 % of a median of 1000 is 100, so +300 is only 3 "MAD".
    big = weekly([1000] * 15 + [1300])
    assert evaluate(big, rule_id="r", kind="robust_z", params={}, **RAIL) is None
    assert evaluate(big, rule_id="r", kind="robust_z", params={"k": 3}, **RAIL).figures["z"] == pytest.approx(3.0)


def test_robust_z_min_delta_and_direction():
    s = weekly([10] * 15 + [16])  # z = 6 / 1.0
    assert evaluate(s, rule_id="r", kind="robust_z", params={}, **RAIL) is not None
    assert evaluate(s, rule_id="r", kind="robust_z", params={"min_delta": 7}, **RAIL) is None
    assert evaluate(s, rule_id="r", kind="robust_z", params={"direction": "down"}, **RAIL) is None
    drop = weekly(list(flat_noise(15, seed=3, level=40)) + [5])
    assert evaluate(drop, rule_id="r", kind="robust_z", params={}, **RAIL) is None
    down = evaluate(drop, rule_id="r", kind="robust_z", params={"direction": "down"}, **RAIL)
    both = evaluate(drop, rule_id="r", kind="robust_z", params={"direction": "both"}, **RAIL)
    assert down is not None and both is not None
    assert down.figures["sign"] == -1 and down.figures["z"] < 0
    assert "MAD below" in down.message and "lowest since" in down.message
    assert both.figures["z"] == down.figures["z"]


def test_robust_z_window_and_min_history():
    # Only 5 points in the 90-day window: not enough history.
    s = weekly([15] * 5 + [72])
    assert evaluate(s, rule_id="r", kind="robust_z", params={}, **RAIL) is None
    assert evaluate(s, rule_id="r", kind="robust_z", params={"min_history": 5}, **RAIL) is not None
    # Old history outside the window does not count.
    old = pd.Series([15.0] * 10, index=pd.date_range("2020-01-01", periods=10, freq="7D", tz="UTC"))
    recent = weekly([15] * 3 + [72], start="2023-01-05")
    assert evaluate(pd.concat([old, recent]), rule_id="r", kind="robust_z", params={}, **RAIL) is None


# -- historical_max -----------------------------------------------------------------------
def test_historical_max_fires_with_since_and_ratio():
    s = spike_series()
    f = evaluate(s, rule_id="rail-max", kind="historical_max", params={}, **RAIL)
    hmax = s.iloc[:-1].max()
    assert f.figures["history_max"] == hmax
    assert f.figures["since"] == "2023-05-18"
    assert f.figures["history_n"] == 20
    assert f.figures["ratio"] == pytest.approx(72 / hmax)
    assert f.message.startswith(
        f"72 railcars at Tumangang railyard on 2023-10-05; highest since 2023-05-18 was {int(hmax)} on "
    )
    assert f"{72 / hmax:.1f} times that" in f.message


def test_historical_max_factor_min_delta_min_history():
    s = weekly([10, 12, 20, 14, 11, 13, 29])  # 29 < 1.5 * 20
    assert evaluate(s, rule_id="r", kind="historical_max", params={}, **RAIL) is None
    assert evaluate(s, rule_id="r", kind="historical_max", params={"factor": 1.4}, **RAIL) is not None
    assert evaluate(s, rule_id="r", kind="historical_max", params={"factor": 1.4, "min_delta": 10}, **RAIL) is None
    assert evaluate(s, rule_id="r", kind="historical_max", params={"factor": 1.4, "min_history": 7}, **RAIL) is None
    zeros = weekly([0] * 8 + [0])
    assert evaluate(zeros, rule_id="r", kind="historical_max", params={}, **RAIL) is None


def test_history_is_strictly_before_and_at_selects_observation():
    s = spike_series()
    # Evaluated at the week before the spike: nothing; at the spike (or later): fires.
    assert evaluate(s, rule_id="r", kind="historical_max", params={}, at=s.index[-2], **RAIL) is None
    f = evaluate(s, rule_id="r", kind="historical_max", params={}, at="2023-10-07", **RAIL)
    assert f is not None and f.time == datetime(2023, 10, 5, tzinfo=timezone.utc)
    assert evaluate(s, rule_id="r", kind="historical_max", params={}, at="2000-01-01", **RAIL) is None
    # The spike itself is not history for itself, and later spikes see it as history.
    s2 = pd.concat([s, weekly([80], start="2023-10-12")])
    assert evaluate(s2, rule_id="r", kind="historical_max", params={}, **RAIL) is None
    found = evaluate_all(s2, rule_id="r", kind="historical_max", params={}, **RAIL)
    assert [x.time.date().isoformat() for x in found] == ["2023-10-05"]


def test_naive_index_and_nans_are_handled():
    s = spike_series()
    naive = pd.Series(s.to_numpy(), index=s.index.tz_localize(None))
    naive.iloc[3] = np.nan
    f = evaluate(naive, rule_id="r", kind="robust_z", params={}, **RAIL)
    assert f is not None and f.time.tzinfo is not None and f.figures["history_n"] == 19


# -- trend -------------------------------------------------------------------------------
def growth_series(total: float, seed: int, noise: float = 8, weeks: int = 12, flat_weeks: int = 10) -> pd.Series:
    rng = np.random.default_rng(seed)
    flat = np.full(flat_weeks, 310.0)
    ramp = 310 * (1 + total * np.arange(1, weeks + 1) / weeks)
    values = np.r_[flat, ramp] + rng.normal(0, noise, flat_weeks + weeks)
    return weekly(values, start="2023-05-25")


def test_trend_fires_on_40_percent_in_12_weeks():
    s = growth_series(0.40, seed=4)
    f = evaluate(s, rule_id="teu-trend", kind="trend", params={}, **DEPOT)
    assert f is not None and f.kind == "trend"
    assert f.figures["window_n"] == 13
    assert f.figures["span_days"] == 84
    assert f.figures["slope_low_per_week"] > 0
    assert f.figures["rel_growth"] == pytest.approx(0.40 * 12 / 13, abs=0.08)
    assert f.figures["slope_per_week"] == pytest.approx(310 * 0.40 / 12, rel=0.25)
    assert "cusum" in f.figures and f.figures["cusum"] > 5
    start, end = f.figures["start_level"], f.figures["end_level"]
    assert f.message == (
        f"containers_teu at Tikhoretsk depot grew from about {start:.0f} to {end:.0f} over 12 weeks "
        f"({f.figures['rel_growth'] * 100:+.0f} %, {f.figures['slope_per_week']:+.1f} per week) to 2023-10-19."
    )
    # Before the ramp has gone on long enough, nothing fires.
    assert evaluate(s, rule_id="r", kind="trend", params={}, at=s.index[11], **DEPOT) is None


def test_trend_message_matches_documented_example():
    # 310 -> 540 over 12 weeks, linear.
    s = weekly(310 + (540 - 310) * np.arange(13) / 12, start="2023-08-03")
    f = evaluate(s, rule_id="r", kind="trend", params={}, **DEPOT)
    assert f.message == (
        "containers_teu at Tikhoretsk depot grew from about 310 to 540 over 12 weeks (+74 %, +19 per week) to 2023-10-26."
    )


def test_trend_quiet_on_noisy_flat_and_small_growth():
    for seed in range(10):
        noisy = weekly(310 + np.random.default_rng(seed).normal(0, 15, 22))
        assert evaluate_all(noisy, rule_id="r", kind="trend", params={}, **DEPOT) == [], seed
    # Clear but small growth (10 %) is below min_rel_growth.
    small = growth_series(0.10, seed=1, noise=1)
    assert evaluate(small, rule_id="r", kind="trend", params={}, **DEPOT) is None
    assert evaluate(small, rule_id="r", kind="trend", params={"min_rel_growth": 0.05}, **DEPOT) is not None
    assert evaluate(small, rule_id="r", kind="trend", params={"min_rel_growth": 0.05, "min_delta": 50}, **DEPOT) is None


def test_trend_false_alarm_rate_on_noise_is_low():
    # A 90 % interval alone would flag ~5 % of pure-noise windows; the relative-growth
    # requirement cuts that to well under 1 % even at 10 % noise.
    rng = np.random.default_rng(0)
    idx = pd.date_range("2023-01-05", periods=13, freq="7D", tz="UTC")
    hits = sum(
        evaluate(pd.Series(310 + rng.normal(0, 31, 13), idx), rule_id="r", kind="trend", params={}, **DEPOT)
        is not None
        for _ in range(500)
    )
    assert hits / 500 < 0.02


def test_trend_min_history():
    s = weekly([100, 130, 160, 190, 220])
    assert evaluate(s, rule_id="r", kind="trend", params={}, **DEPOT) is None
    assert evaluate(s, rule_id="r", kind="trend", params={"min_history": 5}, **DEPOT) is not None


# -- validation --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "params", "key"),
    [
        ("robust_z", {"kk": 3}, "kk"),
        ("robust_z", {"k": -1}, "k"),
        ("robust_z", {"k": "4"}, "k"),
        ("robust_z", {"k": True}, "k"),
        ("robust_z", {"direction": "sideways"}, "direction"),
        ("robust_z", {"min_history": 2.5}, "min_history"),
        ("robust_z", {"window_days": 0}, "window_days"),
        ("historical_max", {"factor": 0.5}, "factor"),
        ("historical_max", {"window_days": 30}, "window_days"),
        ("trend", {"alpha": 1.5}, "alpha"),
        ("trend", {"min_history": 2}, "min_history"),
        ("trend", {"min_rel_growth": float("nan")}, "min_rel_growth"),
    ],
)
def test_bad_params_raise_rule_error_naming_rule_and_key(kind, params, key):
    with pytest.raises(RuleError, match=rf"rule 'my-rule'.*'{key}'"):
        evaluate(spike_series(), rule_id="my-rule", kind=kind, params=params, **RAIL)


def test_bad_kind_and_severity():
    with pytest.raises(RuleError, match="unknown kind 'zscore'"):
        evaluate(spike_series(), rule_id="r", kind="zscore", params={}, **RAIL)
    with pytest.raises(RuleError, match="severity"):
        evaluate(spike_series(), rule_id="r", kind="robust_z", params={}, **{**RAIL, "severity": "critical"})


def test_validate_params_fills_defaults():
    p = validate_params("robust_z", {"k": 3}, rule_id="r")
    assert p == {"window_days": 90.0, "min_history": 6, "k": 3.0, "min_delta": 0.0, "mad_floor": 1.0,
                 "rel_floor": 0.1, "direction": "up"}
    assert set(validate_params("trend", None)) == set(RULE_PARAMS["trend"])


def test_feature_and_empty_series():
    f = evaluate(spike_series(), rule_id="r", kind="robust_z", params={}, feature_id="track-3", **RAIL)
    assert f.feature_id == "track-3" and "Tumangang railyard (track-3)" in f.message
    empty = pd.Series([], dtype=float, index=pd.DatetimeIndex([], tz="UTC"))
    assert evaluate(empty, rule_id="r", kind="robust_z", params={}, **RAIL) is None
    assert evaluate_all(empty, rule_id="r", kind="trend", params={}, **RAIL) == []


def test_figures_are_json_ready():
    import json

    for kind in ("robust_z", "historical_max"):
        f = evaluate(spike_series(), rule_id="r", kind=kind, params={}, **RAIL)
        json.dumps(dict(f.figures), allow_nan=False)
        assert all(not isinstance(v, float) or math.isfinite(v) for v in f.figures.values())


# -- seasonal, ewma, cusum ------------------------------------------------------------
def seasonal_series(years: int = 3, seed: int = 4) -> pd.Series:
    # Weekly, a yearly rhythm from 10 (spring) to 60 (autumn) plus +-3 noise.
    idx = pd.date_range("2020-01-02", periods=52 * years, freq="7D", tz="UTC")
    phase = 2 * np.pi * (idx.day_of_year.to_numpy() - 200) / 365.25
    rng = np.random.default_rng(seed)
    return pd.Series(35 + 25 * np.cos(phase) + rng.integers(-3, 4, len(idx)), index=idx)


def test_seasonal_ignores_the_yearly_rhythm_but_flags_an_outsized_season():
    s = seasonal_series()
    # The third autumn peaks like the first two: no finding anywhere.
    assert evaluate_all(s, rule_id="season", kind="seasonal", params={"k": 4}, **RAIL) == []
    # A robust z over 90 days mistakes the ordinary autumn rise for an anomaly.
    assert evaluate_all(s, rule_id="z", kind="robust_z", params={}, **RAIL) != []
    peak = s.index[(s.index.year == 2022) & (s.index.day_of_year > 190)][0]
    bumped = s.copy()
    bumped[peak] = s[peak] + 60
    f = evaluate(bumped, rule_id="season", kind="seasonal", params={}, at=peak, **RAIL)
    assert f is not None and f.kind == "seasonal"
    same = s[(s.index < peak - pd.Timedelta(days=182))]
    doy = same.index.day_of_year.to_numpy()
    gap = np.minimum(abs(doy - peak.day_of_year), 365 - abs(doy - peak.day_of_year))
    assert f.figures["seasonal_median"] == pytest.approx(float(np.median(same[gap <= 21])))
    assert f.figures["season_years"] == 2
    assert "seasonal median" in f.message and "same weeks of 2020–2021" in f.message


def shift_series(shift: float, n_before: int = 26, n_after: int = 8, seed: int = 2) -> pd.Series:
    values = np.r_[flat_noise(n_before, seed=seed), flat_noise(n_after, seed=seed + 100) + shift]
    return weekly(values)


@pytest.mark.parametrize("kind", ["ewma", "cusum"])
def test_sustained_shift_fires_within_three_acquisitions_where_robust_z_does_not(kind):
    s = shift_series(9)
    first_shifted = s.index[26]
    found = evaluate_all(s, rule_id="sustained", kind=kind, params={}, **RAIL)
    assert found, f"{kind} missed a sustained +9 shift"
    assert first_shifted <= found[0].time <= s.index[28]
    # Baseline: observations older than recent_days (42) within window_days (180) of the finding.
    t = pd.Timestamp(found[0].time)
    cut = t - pd.Timedelta(days=42)
    base = s[(s.index <= cut) & (s.index > cut - pd.Timedelta(days=180))]
    assert found[0].figures["baseline_median"] == pytest.approx(float(base.median()))
    assert found[0].figures["baseline_n"] == len(base)
    assert "normal" in found[0].message and found[0].message.startswith("railcars at Tumangang railyard")
    # No single observation of the shift is extreme enough for the spike rule.
    assert evaluate_all(s, rule_id="z", kind="robust_z", params={"k": 5}, **RAIL) == []


@pytest.mark.parametrize("kind", ["ewma", "cusum", "seasonal"])
@pytest.mark.parametrize("seed", [11, 12, 13])
def test_two_years_of_noise_raise_nothing(kind, seed):
    s = weekly(flat_noise(104, seed=seed), start="2021-01-07")
    assert evaluate_all(s, rule_id="quiet", kind=kind, params={}, **RAIL) == []


def test_cusum_figures_and_downward_direction():
    s = shift_series(-9)
    assert evaluate_all(s, rule_id="c", kind="cusum", params={}, **RAIL) == []
    found = evaluate_all(s, rule_id="c", kind="cusum", params={"direction": "down"}, **RAIL)
    assert found and found[0].figures["sign"] == -1
    f = found[0]
    assert f.figures["cusum"] >= f.figures["h"] == 5.0
    assert "stayed below normal since" in f.message


def test_lifecycle_params_are_accepted_by_every_kind_and_checked():
    from changedet.baselines import LIFECYCLE_PARAMS, lifecycle_params

    for kind in RULE_PARAMS:
        p = validate_params(kind, {"cooldown_days": 7, "escalate_ratio": 2, "quiet_days": 21}, rule_id="r")
        assert not set(p) & set(LIFECYCLE_PARAMS)
    assert lifecycle_params({"cooldown_days": 7}) == {"cooldown_days": 7.0, "escalate_ratio": 1.25, "quiet_days": 28.0}
    with pytest.raises(RuleError, match=r"rule 'r'.*'escalate_ratio'"):
        validate_params("cusum", {"escalate_ratio": 0.5}, rule_id="r")

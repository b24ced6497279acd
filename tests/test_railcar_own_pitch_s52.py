"""Railcars, session 52: a block of long black tank cars is cut at its own pitch.

On the altgen tuning slices 302-309 and 290-293 about a fifth of the detections lying
across two cars (IoU under 0.5 with both) were on blocks of tank cars, most of them the
long ones (14.8 and 16.6 m over couplers), cut into 10.5-12.5 m pieces at the short tank
car's pitch (13.1 m in the DP's catalogue). Inside a black barrel the cut evidence is noisy (a dome, ladders, the
barrel's ends), so the DP's length prior decides, and it knew the short tank's pitch only.
Two changes: the run's own pitch (:func:`railcars._run_pitch`) is now read on a run of
black cylinders brighter on their sun-facing half (no neighbour's shadow is), and where
it is read on a segment mostly of black bodies it replaces the catalogue's pitches in the
DP's length cost instead of being one more option beside them (on lit bodies it stays an
option: a pitch read off a locomotive's fans must not hold the cuts,
tests/test_railcar_loco_s24.py). The catalogue also holds the long tank cars' pitches.
"""

from __future__ import annotations

import numpy as np
import pytest

from changedet.objects import railcars as R
from tests.test_railcars_s15 import _yard

STEP = 0.5
BLACK = [0.035, 0.035, 0.04, 0.05]


def _noisy_block(pitch_m: float, n_cars: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """Cut evidence (colour spreads) of a block of black tank cars: 0.5-5 spreads of noise
    along the barrels (as measured inside black tanks on altgen seed 9834) and 5 spreads at
    each true coupler gap; and the gaps' sample indices."""
    rng = np.random.default_rng(seed)
    n = int(round(pitch_m * n_cars / STEP))
    ev = rng.uniform(0.5, 5.0, n)
    gaps = [int(round(c * pitch_m / STEP)) for c in range(1, n_cars)]
    ev[gaps] = 5.0
    return ev, gaps


@pytest.mark.parametrize("pitch_m", [16.6, 14.8])
@pytest.mark.parametrize("seed", range(5))
def test_a_measured_pitch_holds_a_block_of_long_black_tanks(pitch_m, seed):
    # Five long tank cars, black (the black-car prior is on), their own pitch read. Before,
    # the catalogue's short tank pitch (13.1 m) stayed an option at no cost and the cuts
    # followed the noise: 6-7 cars, at most 2 of the 4 gaps hit at 16.6 m.
    ev, gaps = _noisy_block(pitch_m, 5, seed)
    cuts = R._best_cuts(ev, STEP, np.ones(ev.size, bool), run_pitch_m=np.full(ev.size, pitch_m))
    assert len(cuts) == len(gaps), cuts
    # Within a metre of each gap (2 samples; a noise peak beside a gap may take the cut).
    assert all(abs(c - g) <= 2 for c, g in zip(cuts, gaps)), (cuts, gaps)


def test_short_tanks_keep_their_cuts_with_their_pitch_read():
    # The common 12.02 m oil tank: its own pitch read, the cuts stay at its gaps.
    for seed in range(5):
        ev, gaps = _noisy_block(12.02, 5, seed)
        cuts = R._best_cuts(ev, STEP, np.ones(ev.size, bool), run_pitch_m=np.full(ev.size, 12.02))
        assert len(cuts) == len(gaps)
        assert all(abs(c - g) <= 1 for c, g in zip(cuts, gaps)), (cuts, gaps)


def test_the_pitch_is_read_on_black_cylinders(monkeypatch):
    # Six black 16.6 m tank cars (barrels brighter on their sun-facing half) at 0.5 m under
    # a sun due south: before, the run, darker than half the lit ground, was taken for a
    # neighbour's shadow and its pitch never read; now it is read (16.5 m), and the six cars
    # are cut as before.
    calls = []
    real = R._run_pitch

    def spy(centre, step):
        out = real(centre, step)
        calls.append(out)
        return out
    monkeypatch.setattr(R, "_run_pitch", spy)
    pitch = 16.6
    cars = [(8.0 + pitch * i, 8.0 + pitch * i + pitch - 1.1, "tank", BLACK) for i in range(6)]
    image, tracks = _yard(45.0, 0.5, cars)
    res = R.count_railcars(image, tracks, sun_azimuth_deg=180.0, sun_elevation_deg=45.0)
    read = [c[np.isfinite(c)] for c in calls]
    assert any(r.size and abs(float(np.median(r)) - pitch) < 0.5 for r in read), read
    dets = sorted(d.polygon.bounds[0] for d in res.detections if d.feature_id == "T1")
    assert len(dets) == 6
    assert all(abs(x - (8.0 + pitch * i)) < 1.0 for i, x in enumerate(dets)), dets

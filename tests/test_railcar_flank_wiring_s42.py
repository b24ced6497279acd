"""Railcars, session 42 (issue 6, reviews ROCCF L3 and ROCCF2 L3): the lit flank reference
reaches the counter.

:func:`railcars._flank_lit_reference` is learnt in :func:`railcars.count_railcars` and
handed to :func:`railcars._occupancy` (``flank_lit``); the unit tests call the helpers
directly and would all pass with that hand-over removed. Bench scene 5005 (rail tuning
slice 0-3: clear, 0.75 m, snow, sun 42.7 degrees) is where the branch recovers bare decks
(bench TP 41 -> 55); here it is counted with the branch and with the branch switched off
(``_FLANK_REF_MIN_BLUR_M`` beyond every blur).
"""

from __future__ import annotations

import numpy as np
import pytest

from changedet.objects import railcars as R
from tests.altgen.railyard import make_railyard, score


def _score(sc):
    res = R.count_railcars(sc.image, sc.tracks, valid=sc.valid, sun_azimuth_deg=sc.sun_azimuth_deg,
                           sun_elevation_deg=sc.sun_elevation_deg)
    return score(sc, res)


@pytest.mark.slow
def test_the_flank_reference_reaches_count_railcars(monkeypatch):
    sc = make_railyard(5005, gsd_m=0.75, condition="clear")
    with_branch = _score(sc)
    monkeypatch.setattr(R, "_FLANK_REF_MIN_BLUR_M", np.inf)
    without = _score(sc)
    # Bare decks found (8 or more cars matched), at a few false cars at most.
    assert with_branch["tp"] >= without["tp"] + 8
    assert with_branch["fp"] <= without["fp"] + 3


@pytest.mark.slow
def test_the_flank_reference_is_not_learnt_where_it_is_not_read(monkeypatch):
    # Review ROCCF2 L5: at 0.5 m pixels (blur 0.25 m, under _FLANK_REF_MIN_BLUR_M) the
    # flank branch never reads the reference, so it is not learnt there (one distance per
    # flank sample and other track per scene).
    calls = []
    monkeypatch.setattr(R, "_flank_lit_reference", lambda *a, **k: calls.append(a))
    sc = make_railyard(5005, gsd_m=0.5, condition="clear")
    R.count_railcars(sc.image, sc.tracks, valid=sc.valid, sun_azimuth_deg=sc.sun_azimuth_deg,
                     sun_elevation_deg=sc.sun_elevation_deg)
    assert not calls

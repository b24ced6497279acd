"""Order of a backfill's AOI-days: the chains with the most work left first (LPT)."""

from datetime import date, timedelta

import pytest

from changedet.aoi import load_aoi
from changedet.pipeline import RunConfig, chain_priorities, day_cost


def test_day_cost_is_megapixels_of_the_aoi_grid(tmp_path):
    cfg = RunConfig(data_dir=tmp_path)
    # dunai_port: 741 x 491 pixels at 1 m; vostochny_port 591 x 941 at 1 m (aoi_grid).
    assert day_cost(load_aoi("dunai_port"), cfg) == pytest.approx(741 * 491 / 1e6)
    assert day_cost(load_aoi("vostochny_port"), cfg) == pytest.approx(591 * 941 / 1e6)
    # A 0.5 m site of the same footprint costs four times as much per day.
    assert day_cost(load_aoi("khasan_railyard"), cfg) > day_cost(load_aoi("vostochny_port"), cfg)


def test_priority_is_the_work_left_in_the_chain():
    d0 = date(2023, 7, 6)
    days = {"a": [d0 + timedelta(days=7 * i) for i in range(3)], "b": [d0], "c": []}
    p = chain_priorities(days, {"a": 1.0, "b": 2.5, "c": 9.0})
    assert p == {("a", d0): 3.0, ("a", d0 + timedelta(days=7)): 2.0, ("a", d0 + timedelta(days=14)): 1.0,
                 ("b", d0): 2.5}
    # Given out of order, the days are still ranked by their place in time.
    p2 = chain_priorities({"a": list(reversed(days["a"]))}, {"a": 1.0})
    assert p2[("a", d0)] == 3.0 and p2[("a", d0 + timedelta(days=14))] == 1.0


"""Before and after a shift are compared on the same pixels (s46).

``coregister`` refuses a shift that lowers the gradient similarity ("a correct shift cannot
make the edges agree less"). The similarity after was measured without the border the move
uncovers (and the gradient's halo around it, ~5 rows or columns), the one before on the
whole frame. On a small frame (a port at 10 m is 60 x 95 px) those border rows alone moved
the measure by 0.02-0.03, and correct sub-pixel shifts were refused: 2 of 11 clear days of
the simulator's Chongjin port at 10 m, every one of them within 0.2 px of the truth.
"""

from __future__ import annotations

from datetime import date


from changedet import coreg
from changedet.aoi import load_aoi
from changedet.cube import clear_mask, optical_bands
from changedet.grid import aoi_grid
from changedet.simulate.render import conditions
from changedet.simulate.scenario import scenario_for
from changedet.sources.simulator import SimulatorSource


def test_simulated_10m_port_days_are_registered_within_a_fifth_of_a_pixel():
    src = SimulatorSource(seed=0)
    aoi = load_aoi("chongjin_port")
    grid = aoi_grid(aoi, 10.0)
    assert grid.shape == (60, 95)
    ref = optical_bands(src.load(src.reference(aoi, sensor="s2", resolution_m=10), grid, aoi=aoi))
    scenario = scenario_for(aoi.id, src._aoi_registry())
    checked = 0
    for scene in src.search(aoi, date(2024, 5, 1), date(2024, 6, 25), sensor="s2", resolution_m=10):
        cond = conditions(aoi, scene.day, "s2", seed=0, scenario=scenario)
        if cond.cloud_fraction > 0.1:  # (a 14 % cloudy day is 0.41 px off in columns: cloud edges)
            continue
        data = src.load(scene, grid, aoi=aoi)
        _, res = coreg.coregister(ref, optical_bands(data), valid=clear_mask(data))
        assert res.applied, (scene.day, res.reason)
        # The scene sees the ground of (r - dr, c - dc): the shift that registers it is -d.
        assert abs(res.shift_row_px + cond.shift_row_px) < 0.2, scene.day
        assert abs(res.shift_col_px + cond.shift_col_px) < 0.2, scene.day
        checked += 1
    assert checked >= 8

"""The container bench's reference under partial cloud (session 20): it no longer
depends on the counter. The independent generator hands out its cloud fields (at
output resolution, the image unchanged) and ``bench/bench_altgen_port.py`` scores each
zone against the TEU not under the thick cloud the counter is told of; the old,
counter-relative reference (the counter's own ``observed_mask``) is a second column.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tests.altgen.container_yard import make_yard, rfeatures_mask

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

# Rendering a yard takes some seconds.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cloudy():
    # Tuning seed 101, partly cloudy case: zone3 half in a cloud's shadow (sun 58 degrees).
    return make_yard(1013, gsd=0.5, condition="partly_cloudy")


def test_generator_hands_out_its_cloud_fields(cloudy):
    sc = cloudy
    assert sc.cloud_op.shape == sc.cloud_shadow.shape == sc.valid.shape
    # The cloud mask the counter gets is the thick cloud of that field.
    assert np.array_equal(sc.cloud_op < 0.4, np.asarray(sc.valid.values))
    assert 0.0 < (sc.cloud_shadow >= 0.5).mean() < 1.0
    clear = make_yard(1010, gsd=0.5, condition="clear")
    assert clear.cloud_op is None and clear.cloud_shadow is None


def test_bench_reference_does_not_depend_on_the_counter(cloudy):
    from bench_altgen_port import visible_truth

    sc = cloudy
    everything = visible_truth(sc, np.ones(sc.valid.shape, bool))
    nothing = visible_truth(sc, np.zeros(sc.valid.shape, bool))
    valid = np.asarray(sc.valid.values)
    for zid in sc.zones:
        # A counter that masks the whole frame is not let off: the reference stays.
        assert everything[zid]["visible_teu"] == nothing[zid]["visible_teu"]
        assert nothing[zid]["visible_teu_counter"] == 0.0
        manual = sum(s.tiers * (1 if s.size == "20" else 2) * valid[rfeatures_mask(s.polygon, _grid(sc))].mean()
                     for s in sc.stacks if s.zone == zid)
        assert everything[zid]["visible_teu"] == pytest.approx(manual)
        assert everything[zid]["visible_teu"] <= sc.truth[zid].teu
    # Cloud shadow is visible ground: this scene has TEU in it.
    assert sum(v["shadow_teu"] for v in everything.values()) > 50


def _grid(sc):
    from changedet.grid import GridSpec

    return GridSpec.of(sc.image)

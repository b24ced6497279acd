"""Session 44 (BLOCKPITCH): _best_cuts prefers that a segment repeats the previous one's
length (a block of identical cars has one pitch), where coupler gaps hardly show.

Synthetic cut evidence with a known answer: evidence (in the empty track's colour
spreads) at each coupler gap, and at a long car's interior edges where it has them.
"""
import numpy as np

import changedet.objects.railcars as R

STEP = 0.5


def _evidence(pitches, strength, inner=(), inner_strength=None):
    """Evidence along a run of cars of the given pitches (m): ``strength`` at each coupler
    gap, ``inner_strength`` at each offset in ``inner`` (m from the car's start)."""
    n = int(round(sum(pitches) / STEP))
    ev = np.zeros(n)
    starts = np.cumsum([0.0] + list(pitches[:-1]))
    gaps = [int(round(s / STEP)) for s in starts[1:]]
    for g in gaps:
        ev[g] = strength
    for s0, p in zip(starts, pitches):
        for x in inner:
            if x < p:
                ev[int(round((s0 + x) / STEP))] = inner_strength if inner_strength is not None else strength
    return ev, gaps


def _on_gaps(cuts, gaps):
    return len(cuts) == len(gaps) and all(abs(c - g) <= 1 for c, g in zip(cuts, gaps))


def test_a_black_block_of_lpg_tanks_is_cut_at_its_own_pitch():
    # Nine black 14.8 m LPG tank cars, couplers barely showing (2 spreads). The black-car
    # prior prefers the oil tank's 13.1 m, so segment by segment the cuts drift off the
    # gaps (the DP without the block term cut 8 where 8 gaps are, none of them on a gap).
    ev, gaps = _evidence([14.8] * 9, 2.0)
    cuts = R._best_cuts(ev, STEP, np.ones(ev.size, bool))
    assert _on_gaps(cuts, gaps), (cuts, gaps)


def test_a_long_flat_with_a_container_joint_is_not_cut_in_two():
    # Six 19.6 m flat wagons, each with two 20 ft containers whose joint mid-deck shows as
    # strongly as the coupler gaps: a repeat of 9.8 m is shorter than any car, so the
    # block's pitch is the wagons' and no wagon is cut at its joint.
    ev, gaps = _evidence([19.6] * 6, 1.5, inner=(9.8,))
    cuts = R._best_cuts(ev, STEP)
    assert _on_gaps(cuts, gaps), (cuts, gaps)


def test_gondolas_are_not_cut_at_their_end_walls():
    # Seven open wagons of 15 m pitch, their end walls' inner edges 2 m in from each gap
    # as strong as the gaps: cuts at 11 m and 13 m in turn are no block's pitch.
    ev, gaps = _evidence([15.0] * 7, 2.0, inner=(2.0, 13.0))
    cuts = R._best_cuts(ev, STEP)
    assert _on_gaps(cuts, gaps), (cuts, gaps)


def test_a_change_of_block_at_a_coupler_gap_is_followed():
    # Six 12.02 m oil tanks then five 16.8 m boxcars, weak gaps (1.5 spreads): each block
    # is cut at its own pitch, and the change between them costs no cut.
    ev, gaps = _evidence([12.02] * 6 + [16.8] * 5, 1.5)
    cuts = R._best_cuts(ev, STEP)
    assert _on_gaps(cuts, gaps), (cuts, gaps)


def test_segments_stay_car_lengths():
    # The block term lowers no segment below 10.5 m nor lifts one above 20 m.
    rng = np.random.default_rng(3)
    for _ in range(5):
        ev = np.abs(rng.normal(0.0, 1.5, 300))
        cuts = R._best_cuts(ev, STEP)
        edges = [0] + cuts + [ev.size]
        inner = np.diff(edges)[1:-1] * STEP
        assert np.all(inner >= 10.5 - 1e-9) and np.all(inner <= 20.0 + 1e-9), inner

"""Review RBLOCK (session 44): a locomotive longer than the 20 m segment bound at the head of
a block. With the block pitch of ``_best_cuts`` measured from the run's first segment, a
22.5 m pitch (a 21.4 m road locomotive and its gap: US and Chinese six-axle units are
21-23 m) was cut into two ~11 m halves that "repeat" each other: one car too many. The
first segment is now free (its length says nothing of the block behind it)."""

import numpy as np

import changedet.objects.railcars as R

STEP = 0.5


def test_a_22_m_locomotive_at_the_head_of_a_tank_block_is_not_two_cars():
    pitches = [22.5] + [13.1] * 8          # the locomotive + gap, then 8 oil tanks
    n = int(round(sum(pitches) / STEP))
    ev = np.zeros(n)
    for s in np.cumsum(pitches[:-1]):
        ev[int(round(s / STEP))] = 2.0     # clear coupler gaps
    cuts = R._best_cuts(ev, STEP)
    assert len(cuts) + 1 == 9, np.diff([0] + cuts + [n]) * STEP

"""Long flat tops whose variation along says nothing (session 30, issue 6: railcar types).

From a locomotive's length (16.9 m) a "flat" top (relief across: a cambered roof) was a
boxcar only when even along (``_EVEN_ALONG``), else a locomotive. Between
``_EVEN_ALONG`` and ``_TEXTURED_ALONG`` the variation along says nothing (a roof sheet's
seams, a neighbour's blurred shade): there the far commoner car of that length, a
boxcar, is read, as from 14.8 m. A locomotive's roof, textured along by its fans and
cab, is still a locomotive.

Synthetic strips with known answers (no generator), sampled across as the counter
samples a track (from -2.6 m at the sample step).
"""

from __future__ import annotations

import numpy as np
import pytest

from changedet.objects import railcars as R
from changedet.objects.strips import Strip

LIT = np.array([0.12, 0.13, 0.14, 0.16])          # sunlit ballast, B G R NIR
ROOF = np.array([0.27, 0.28, 0.29, 0.31])          # a light grey roof
FAN = np.array([0.05, 0.05, 0.05, 0.06])           # a dark radiator fan grille


def _strip(step: float, body_m: float, along_var: float, fans: list[float] = ()) -> tuple[Strip, int, int]:
    """Lit ballast, a 3.2 m wide roof ``body_m`` long from 2 m along, its crest (within
    0.5 m of the axis) 18 % brighter than its eaves (relief across: "flat"), its
    brightness varying along as a sine of relative amplitude ``along_var`` and 5 m
    period, with dark discs of 0.7 m radius on the axis at ``fans`` (m along)."""
    across = np.arange(-2.6, 2.6 + 1e-9, step)
    n = int(round((body_m + 4.0) / step))
    along = np.arange(n) * step
    vals = np.broadcast_to(LIT[:, None, None], (4, across.size, n)).copy()
    cols = (along >= 2.0) & (along < 2.0 + body_m)
    body = np.abs(across) <= 1.6
    camber = np.where(np.abs(across) <= 0.5, 1.18, 1.0)
    wave = 1.0 + along_var * np.sqrt(2.0) * np.sin(2 * np.pi * along / 5.0)
    roof = ROOF[:, None, None] * camber[None, :, None] * wave[None, None, :]
    vals[:, body[:, None] & cols[None, :]] = roof[:, body[:, None] & cols[None, :]]
    for f in fans:
        disc = (np.hypot(along[None, :] - f, across[:, None]) <= 0.7) & cols[None, :]
        vals[:, disc] = FAN[:, None]
    x, y = np.meshgrid(along, across)
    s0, s1 = int(np.argmax(cols)), int(n - np.argmax(cols[::-1]))
    return Strip(vals.astype("float32"), along, across, x, y, step), s0, s1


@pytest.mark.parametrize("step", [0.3, 0.5])
def test_a_long_roof_neither_even_nor_textured_is_a_boxcar(step):
    strip, s0, s1 = _strip(step, 17.5, 0.03)
    assert R._look(strip, s0, s1, float(LIT.mean())) == "flat"
    texture = R._along_texture(strip, s0, s1)
    assert R._EVEN_ALONG <= texture < R._TEXTURED_ALONG
    assert R._shoulder_step(strip, s0, s1) <= R._MAX_SHOULDER_STEP
    body = (s1 - s0) * step
    assert body >= R._MIN_LOCOMOTIVE_BODY_M
    assert R._classify(strip, s0, s1, body, float(LIT.mean())) == "boxcar"


@pytest.mark.parametrize("step", [0.3, 0.5])
def test_a_long_roof_with_fans_is_still_a_locomotive(step):
    # The same roof with four fans down the middle of its rear half (a 2TE10 section).
    strip, s0, s1 = _strip(step, 17.5, 0.0, fans=[10.0, 11.8, 13.6, 15.4])
    assert R._along_texture(strip, s0, s1) >= R._TEXTURED_ALONG
    body = (s1 - s0) * step
    assert R._classify(strip, s0, s1, body, float(LIT.mean())) == "locomotive"

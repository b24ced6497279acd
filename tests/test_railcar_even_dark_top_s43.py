"""Railcars, session 43 (issue 6, the "gondola" sink): a top that reads "open" (darker
than its rims or than half the lit ballast) but is even end to end at 0.3-0.5 m pixels,
as wide as a roofed body and as long as only long cars read, is a dark boxcar roof, not
an open wagon.

A load tipped into an open wagon lies in heaps along the car: at pixels fine enough to
resolve them (``railcars._MAX_FULL_TOP_RES_M``, 0.5 m) such a top varies along the car by
more than ``railcars._EVEN_ALONG``. A load trimmed level (coal, ore) is as even as a
roof, so length alone keeps it out: a dark top even end to end, read at least
``railcars._MIN_FULL_TOP_M`` wide (3.1-3.3 m bodies; a flat wagon's deck is 2.87 m) at
``railcars._MIN_LONG_BODY_M`` (14.8 m: an open wagon, 13.9 m over couplers, read with a
misplaced cut) or longer, is typed a boxcar, unless its shadow reads a bare deck (``low``
True or ``tall`` False). Shorter or narrower even dark tops keep the gondola class, and
so does any even dark top at 0.75-1 m pixels, where heaps blur away. (Altgen rail 50,
140, 180 and 226 at 0.3-0.5 m: 26 boxcars against 1 flat wagon caught.)
"""

from __future__ import annotations

import numpy as np
import pytest

from changedet.objects import railcars as R
from changedet.objects.strips import Strip

STEP = 0.25
LIT = np.array([0.14, 0.15, 0.16, 0.20])   # ballast B G R NIR
LIT_B = float(LIT[:3].mean())
ACROSS = np.arange(-2.6, 2.6 + 1e-9, STEP)
N = 64   # 16 m of samples


def _strip(values: np.ndarray) -> Strip:
    along = np.arange(values.shape[2]) * STEP
    x, y = np.meshgrid(along, ACROSS)
    return Strip(values.astype("float32"), along, ACROSS, x, y, STEP)


def _top(half_width_m: float, along_level: np.ndarray, refl: float = 0.06) -> Strip:
    """A dark top (reflectance ``refl``, under half the ballast's) ``half_width_m`` (m)
    either side of the centreline on lit ballast, scaled along the car by
    ``along_level`` (one value per sample)."""
    lo = np.maximum(ACROSS - STEP / 2, -half_width_m)
    hi = np.minimum(ACROSS + STEP / 2, half_width_m)
    w = np.clip(hi - lo, 0, None) / STEP
    top = refl * along_level[None, None, :]
    return _strip(w[None, :, None] * top + (1 - w)[None, :, None] * LIT[:, None, None])


def _heaps() -> np.ndarray:
    # A bulk load's heaps every 2.5 m along the car, a fifth brighter or darker.
    return 1.0 + 0.2 * np.sin(2 * np.pi * np.arange(N) * STEP / 2.5)


@pytest.mark.parametrize("res", [0.3, 0.5])
def test_an_even_dark_roof_of_a_boxcars_length_is_a_boxcar(res):
    roof = _top(1.65, np.ones(N))   # 3.3 m: a roofed body's full width
    assert R._look(roof, 0, N, LIT_B) == "open"
    assert R._top_width(roof, 0, N) >= R._MIN_FULL_TOP_M
    assert R._along_texture(roof, 0, N) < R._EVEN_ALONG
    # Typed the gondola class ("open") before session 43.
    assert R._classify_rule(roof, 0, N, 15.5, LIT_B, tall=None, resolution_m=res) == (
        "boxcar", "even_dark_roof")


@pytest.mark.parametrize("res", [0.3, 0.5])
def test_a_dark_heaped_load_as_wide_and_long_stays_the_gondola_class(res):
    load = _top(1.65, _heaps())
    assert R._look(load, 0, N, LIT_B) == "open"
    assert R._along_texture(load, 0, N) >= R._EVEN_ALONG
    assert R._classify(load, 0, N, 15.5, LIT_B, tall=None, resolution_m=res) == "gondola"


@pytest.mark.parametrize("half_width, body", [(1.4, 15.5), (1.65, 14.0)])
def test_a_narrower_or_shorter_even_dark_top_stays_the_gondola_class(half_width, body):
    # A bare deck (2.8 m) or a length an open wagon reads with its cut misplaced
    # (14.0 m, under _MIN_LONG_BODY_M): a levelled load is as even.
    top = _top(half_width, np.ones(N))
    assert R._classify(top, 0, N, body, LIT_B, tall=None, resolution_m=0.3) == "gondola"


@pytest.mark.parametrize("res", [0.75, 1.0])
def test_coarser_pixels_keep_an_even_dark_roof_the_gondola_class(res):
    # Heaps blur away at 0.75-1 m: evenness no longer tells a load from a roof.
    roof = _top(1.65, np.ones(N))
    assert R._classify(roof, 0, N, 15.5, LIT_B, tall=None, resolution_m=res) == "gondola"


def _level_load(length_m: float, wall: float = 0.09, load: float = 0.045) -> tuple[Strip, int]:
    """An open wagon ``length_m`` long, 3.2 m wide, its dark load (coal, ore) trimmed level
    inside brighter 0.2 m rims (walls and end walls), on lit ballast."""
    n = int(round(length_m / STEP))
    top = np.full((ACROSS.size, n), load)
    top[np.abs(ACROSS) > 1.6 - 0.2, :] = wall
    top[:, :1] = wall
    top[:, -1:] = wall
    lo = np.maximum(ACROSS - STEP / 2, -1.6)
    hi = np.minimum(ACROSS + STEP / 2, 1.6)
    w = (np.clip(hi - lo, 0, None) / STEP)[:, None]
    values = w[None] * top[None] + (1 - w)[None] * LIT[:, None, None]
    along = np.arange(n) * STEP
    x, y = np.meshgrid(along, ACROSS)
    return Strip(values.astype("float32"), along, ACROSS, x, y, STEP), n


@pytest.mark.parametrize("res", [0.3, 0.5])
def test_a_level_dark_load_read_over_couplers_stays_the_gondola_class(res):
    # Coal trimmed level, read 13.9 m (a 12-132's length over couplers: a cut placed a
    # little off): as even and as wide as a dark roof, kept out by length alone.
    wagon, n = _level_load(13.9)
    assert R._look(wagon, 0, n, LIT_B) == "open"
    assert R._along_texture(wagon, 0, n) < R._EVEN_ALONG
    assert R._top_width(wagon, 0, n) >= R._MIN_FULL_TOP_M
    assert R._classify(wagon, 0, n, 13.9, LIT_B, tall=None, resolution_m=res) == "gondola"


@pytest.mark.parametrize("shadow", [{"low": True}, {"tall": False}])
def test_an_even_dark_top_whose_shadow_reads_a_bare_deck_is_no_roof(shadow):
    # The shadow says no roof stands there (a bare deck's short shadow, or no walls).
    roof = _top(1.65, np.ones(N))
    assert R._classify_rule(roof, 0, N, 15.5, LIT_B, resolution_m=0.3, **shadow)[1] != "even_dark_roof"
    assert R._classify(roof, 0, N, 15.5, LIT_B, resolution_m=0.3, **shadow) != "boxcar"

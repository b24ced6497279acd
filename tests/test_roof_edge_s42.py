"""Session 42 (EDGEN, mended by EDGENM): a shadow walk is measured from the roof edge, located
to a fraction of a pixel by the colours of the pixels across it, not from the start pixel's
centre; where a reference sample is not what it is taken for, the centre is kept."""
import numpy as np
import pytest

from changedet.objects import containers as C

TOP = np.array([0.55, 0.20, 0.15, 0.30])     # a red box top (reflectance, 4 bands)
SHADE = np.array([0.04, 0.04, 0.05, 0.05])   # pavement in the stack's shadow
LIT = np.array([0.20, 0.20, 0.19, 0.25])     # lit pavement
WHITE = np.array([0.85, 0.85, 0.83, 0.80])   # a white top, or a painted line


def _scene(edge, end, rows=60, cols=40):
    """A block whose roof edge lies at row ``edge`` and whose shadow ends at row ``end``
    (pixel i spans i - 1/2 .. i + 1/2), sun in the north: every pixel the area mean of
    what it covers."""
    i = np.arange(rows, dtype=float)
    lo, hi = i - 0.5, i + 0.5
    f_top = np.clip(edge - lo, 0.0, 1.0)
    f_shade = np.clip(np.minimum(hi, end) - np.maximum(lo, edge), 0.0, 1.0)
    f_lit = 1.0 - f_top - f_shade
    prof = f_top[:, None] * TOP + f_shade[:, None] * SHADE + f_lit[:, None] * LIT
    pix = np.repeat(prof.T[:, :, None], cols, axis=2)
    blob = np.zeros((rows, cols), bool)
    blob[2:, 5:35] = (f_top >= 0.5)[2:, None]
    lit_frac = np.repeat(f_lit[:, None], cols, axis=1)
    pave = ~blob
    lit_ground = pave & (lit_frac >= 0.5)
    shade_share = np.where(pave, 1.0 - lit_frac, np.nan)
    return blob, pix, lit_ground, shade_share


@pytest.mark.parametrize("edge", [10.05, 10.3, 10.5, 10.8, 10.95])
def test_walk_measured_from_roof_edge(edge):
    """The shadow's length comes out within 0.1 px of its true length, for any position of
    the roof edge within its pixel (the start pixel's centre alone is up to 0.5 px off)."""
    res, el, length_px = 0.8, 57.0, 7.35
    end = edge + length_px
    blob, pix, lit_ground, shade_share = _scene(edge, end)
    seen = np.ones(blob.shape, bool)
    walks = C._shadow_lengths(blob, blob, lit_ground, seen, res, 0.0, el, shade_share)
    lengths, censored, r0, c0 = C._from_roof_edge(walks, pix, 0.0, blob, shade_share)
    assert lengths.size > 10 and not censored.any()
    read = np.median(lengths) + C.WALK_END_PX
    assert read == pytest.approx(length_px, abs=0.1)


def _offset(prof, top_on_block=True, shares=None, length=6.0):
    """The offset read on a 1-D profile along +row: rows 0, 1 the top (row 0 the top's
    sample, on the block unless ``top_on_block`` is False), row 2 the start pixel (0.8 top:
    the true edge 0.3 px beyond its centre), rows 3.. along the walk; ``shares``: the shade
    share of rows 3.. (NaN: not pavement)."""
    pix = np.repeat(np.array(prof, float).T[:, :, None], 3, axis=2)
    rows = pix.shape[1]
    blob = np.zeros((rows, 3), bool)
    blob[1:3] = True
    blob[0] = top_on_block
    share = np.full((rows, 3), np.nan)
    share[3:] = np.asarray(shares if shares is not None else [1.0] * (rows - 3))[:, None]
    return float(C._roof_edge_offset(np.array([length]), np.array([2]), np.array([1]), 1.0, 0.0, pix,
                                     blob, share)[0])


def _mix(a, b, s):
    return s * a + (1.0 - s) * b


def test_roof_edge_offset_reads_a_clean_edge():
    """The reference profile the fallbacks below are built from: a red or a white top, the
    true edge 0.3 px beyond the start pixel's centre, read exactly."""
    for top in (TOP, WHITE):
        assert _offset([top, top, _mix(top, SHADE, 0.8), SHADE, SHADE, SHADE]) == pytest.approx(0.3, abs=1e-9)


def test_roof_edge_offset_falls_back_on_dark_tops():
    """A top barely brighter than its shadow (contrast 0.03, under ROOF_EDGE_MIN_CONTRAST)
    gives no colour to place the edge by: the start pixel's centre is kept."""
    dark = SHADE + 0.015
    assert _offset([dark, dark, _mix(dark, SHADE, 0.8), SHADE, SHADE, SHADE]) == 0.0


def test_roof_edge_offset_falls_back_on_short_walks():
    """Under three pixels there is no shadow pixel to read: the start pixel's centre is kept."""
    assert _offset([TOP, TOP, _mix(TOP, SHADE, 0.8), SHADE, SHADE, SHADE], length=2.9) == 0.0


@pytest.mark.parametrize("sample, share", [(WHITE, np.nan), (LIT, 0.0)])
def test_roof_edge_offset_ignores_a_mark_in_the_shadow(sample, share):
    """A painted line (not pavement) or a lit pixel where the shadow's colour is read (two
    pixels along the walk) is not shade: the start pixel's centre is kept (read against
    the line, the offset went to its clip, 1.2 px too far)."""
    prof = [TOP, TOP, _mix(TOP, SHADE, 0.8), SHADE, sample, SHADE]
    assert _offset(prof, shares=[1.0, share, 1.0]) == 0.0


def test_roof_edge_offset_ignores_a_neighbours_top():
    """The top's colour read off the block (a brighter neighbour's top across a gap): the
    start pixel's centre is kept (read against the white neighbour, -0.24 for 0.30)."""
    prof = [WHITE, TOP, _mix(TOP, SHADE, 0.8), SHADE, SHADE, SHADE]
    assert _offset(prof, top_on_block=False) == 0.0


def test_roof_edge_offset_is_clipped():
    """The first walk pixel is not a box, so it holds a small roof share: however much roof
    colour it shows, the edge is read at most one pixel beyond the start pixel's centre."""
    assert _offset([TOP, TOP, TOP, TOP, SHADE, SHADE]) == pytest.approx(C.ROOF_EDGE_OFFSET_PX[1])
    assert C.ROOF_EDGE_OFFSET_PX == (-0.5, 1.0)


def test_roof_edge_offset_on_a_diagonal_walk():
    """On a diagonal walk, two steps along it round to the first walk pixel itself; the
    reference samples are taken two whole pixels away instead. A diagonal roof edge with
    the start pixel 0.8 top and the first walk pixel 0.2 top reads 0.8 + 0.2 - 1/2 = 0.5
    (sampled at two steps: 0.25)."""
    rows = cols = 14
    s = np.add.outer(np.arange(rows), np.arange(cols))       # r + c, constant along the edge
    f_top = np.select([s <= 9, s == 10, s == 11, s == 12], [1.0, 0.8, 0.4, 0.2], 0.0)
    pix = f_top[None] * TOP[:, None, None] + (1.0 - f_top[None]) * SHADE[:, None, None]
    blob = f_top >= 0.5
    share = np.where(blob, np.nan, 1.0)
    d = np.sqrt(0.5)
    e = C._roof_edge_offset(np.array([6.0]), np.array([5]), np.array([5]), d, d, pix, blob, share)
    assert e[0] == pytest.approx(0.5, abs=1e-9)


def test_count_containers_reads_tiers_from_the_roof_edge_walks(monkeypatch):
    """Wiring: the walks ``count_containers`` turns into tiers are ``_from_roof_edge``'s output."""
    from changedet.objects import containers
    from tests.test_objects_shadows import BAY_TIERS, _yard

    image, _, zones, _, _ = _yard(BAY_TIERS, 45.0, azimuth=150.0)
    calls = []
    real = containers._from_roof_edge

    def spy(walks, *args, **kwargs):
        calls.append(len(walks[0]))
        return real(walks, *args, **kwargs)

    monkeypatch.setattr(containers, "_from_roof_edge", spy)
    base = containers.count_containers(image, zones, sun_azimuth_deg=150.0, sun_elevation_deg=45.0)
    assert calls and sum(calls) > 0

    def shorter(walks, *args, **kwargs):
        lengths, censored, r0, c0 = real(walks, *args, **kwargs)
        return lengths - 3.0, censored, r0, c0

    # Three pixels less shadow on every walk is 0.58 tiers at 0.5 m and 45 degrees:
    # the stacks must read lower if the counter uses these walks.
    monkeypatch.setattr(containers, "_from_roof_edge", shorter)
    short = containers.count_containers(image, zones, sun_azimuth_deg=150.0, sun_elevation_deg=45.0)
    assert short.total < base.total

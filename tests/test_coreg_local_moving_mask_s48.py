"""Local mode's masked windows are refined with the moving image's mask moving with it (s48).

``coregister(local=True)`` refines every masked tie-point window by least squares
(``_refine_masked``, s47). It used to hand that refinement the common mask (the reference's
NaN and the moving image's clouds) for both images, in place: the moving image's clouds
then removed reference pixels where they do not lie once the image is moved, and did not
move with the image. Global mode passes the reference's own pixels and the moving mask,
which moves; local mode now does the same (``estimate_local(moving_valid=...)``), and the
windows' phase correlation keeps the common mask it had.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from changedet import coreg
from test_coreg_masked_s46 import _frame
from test_coreg_masked_windows_s47 import _cloudy_pair, _local_tie_errors, s2_texture  # noqa: F401 (fixture)


def test_the_refinement_gets_the_references_own_pixels_and_the_moving_mask(s2_texture, monkeypatch):
    rng = np.random.default_rng(11)
    ref, mov, clear, _ = _cloudy_pair(s2_texture, rng)
    ref = ref.copy()
    ref[:, :20] = np.nan  # the reference's own nodata strip
    calls = []
    real = coreg._refine_masked
    monkeypatch.setattr(coreg, "_refine_masked", lambda *a, **k: calls.append(a) or real(*a, **k))
    valid = xr.DataArray(clear, dims=("y", "x"), coords=_frame(ref).coords)
    _, res = coreg.coregister(_frame(ref), _frame(mov), valid=valid, local=True, window_px=128, warp="affine")
    assert res.applied, res.reason
    assert calls
    under_cloud = 0
    for r, m, r_ok, m_ok, _shift in calls:
        # The reference keeps its pixels under the moving date's clouds (only its own NaN
        # is masked); the moving mask is the moving date's clouds (it moves in the fit).
        assert np.array_equal(r_ok, np.isfinite(r))
        cloudy = m > np.nanmax(ref) * 1.4
        under_cloud += int(cloudy.any())
        assert not m_ok[cloudy].any()
        assert m_ok[~cloudy & np.isfinite(m)].all()
    assert under_cloud >= 5


def test_estimate_local_without_a_moving_mask_refines_on_the_common_mask(s2_texture, monkeypatch):
    # The function's earlier contract stands for callers that give one mask for both.
    rng = np.random.default_rng(12)
    ref, mov, clear, _ = _cloudy_pair(s2_texture, rng)
    calls = []
    real = coreg._refine_masked
    monkeypatch.setattr(coreg, "_refine_masked", lambda *a, **k: calls.append(a) or real(*a, **k))
    coreg.estimate_local(ref, mov, valid=clear, window_px=128)
    assert calls
    for _r, _m, r_ok, m_ok, _shift in calls:
        assert np.array_equal(r_ok, m_ok)


def test_local_tie_points_with_shifts_of_several_pixels_under_cloud(s2_texture):
    # Shifts of up to 6 px: the moving clouds' two places (unshifted and moved) no longer
    # overlap, so the old common mask removed twice the cloud's area from every window.
    rng = np.random.default_rng(13)
    errors = []
    for _ in range(2):
        errors += _local_tie_errors(*_cloudy_pair(s2_texture, rng, max_shift=6.0))[1]
    assert np.sqrt(np.mean(np.square(errors))) < 0.02 and max(errors) < 0.05, errors

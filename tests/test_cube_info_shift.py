"""``changedet cube info`` shows the shift of scenes registered per band."""

from changedet.cli.cube import _fmt_shift


def test_shift_of_whole_and_per_band_records():
    assert _fmt_shift({"shift_row_px": 0.25, "shift_col_px": -1.5}) == "+0.25,-1.50"
    assert _fmt_shift(None) == "-"
    per_band = {"mode": "windows", "per_band": True,
                "bands": {"red": {"shift_row_px": 0.1, "shift_col_px": 0.0},
                          "nir": {"shift_row_px": -0.3, "shift_col_px": 0.2}}}
    assert _fmt_shift(per_band) == "-0.30,+0.20 (nir; 2 bands)"
    assert _fmt_shift({"bands": {"red": {}}}) == "-"

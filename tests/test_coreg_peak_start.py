"""Newton's start in the global window estimate (:func:`changedet.coreg._local_peak_start`)
must be the integer maximum of the inverse FFT inside its square, and report a maximum
on the square's rim (the two stages disagree)."""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft

from changedet import coreg


def test_local_peak_start_is_the_argmax_of_the_inverse_fft():
    rng = np.random.default_rng(12)
    n = 64
    radius = np.hypot(*np.meshgrid(sfft.fftfreq(n), sfft.fftfreq(n)))
    base = sfft.fft2(rng.standard_normal((n, n))) * np.exp(-0.5 * (radius / 0.15) ** 2)
    for true in [(0, 0), (3, -5), (-10, 7)]:
        rr, cc = np.meshgrid(sfft.fftfreq(n), sfft.fftfreq(n), indexing="ij")
        # A correlation peaked at offset `true` (plus a smooth random background).
        cross = (np.abs(base) ** 2 * np.exp(-2j * np.pi * (rr * true[0] + cc * true[1]))
                 + 0.05 * base).astype(np.complex64)
        surface = np.abs(sfft.ifft2(cross))
        for centre in [true, (true[0] + 1, true[1] - 1)]:
            k0, on_rim = coreg._local_peak_start(cross, centre, 2)
            nr, nc = np.arange(-2, 3) + centre[0], np.arange(-2, 3) + centre[1]
            sub = surface[np.ix_(nr % n, nc % n)]
            i, j = np.unravel_index(np.argmax(sub), sub.shape)
            assert tuple(k0) == (nr[i], nc[j]) == true
            assert not on_rim
        # Centred 3 px away: the maximum of the square is on its rim.
        k0, on_rim = coreg._local_peak_start(cross, (true[0] + 3, true[1]), 2)
        assert on_rim and tuple(k0) == (true[0] + 1, true[1])

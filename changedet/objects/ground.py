"""The colour of bare ground, lit and in shadow, learnt from the image itself.

Counters decide what is an object by comparing pixels with the ground they stand on.
The ground's colour varies with the material and the light, so it is estimated per
image from samples known to be ground (ballast between tracks, the apron around a
stack zone), never from fixed constants.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from changedet.nanstats import quiet_nanmean
from changedet.objects.common import robust_ref


def lit_spread_floor(colour: np.ndarray) -> np.ndarray:
    """Least spread (reflectance, per band) of lit ground of ``colour``: about 0.004 of
    sensor noise and quantisation plus 3 % of texture (ballast stones, grain) that even
    the most uniform surface shows at sub-metre pixels."""
    return 0.004 + 0.03 * np.asarray(colour)


def shadow_spread_floor(colour: np.ndarray) -> np.ndarray:
    """Least spread (reflectance, per band) of shadowed ground of ``colour``: the same 3 %
    of texture over a noise of about 0.003 (darker pixels are quieter)."""
    return 0.003 + 0.03 * np.asarray(colour)


def ground_mix(colours: np.ndarray, lit: np.ndarray, shadow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest mix of lit and shadowed ground to each colour.

    Ground under any mix of direct sun and skylight (a shadow edge crossing a pixel) has
    a colour on the segment between its lit and its shadowed colour.

    Parameters
    ----------
    colours : numpy.ndarray (band, n)
        Colours to place (reflectance); NaN bands are left out of the fit.
    lit, shadow : numpy.ndarray (band,)
        The ground's lit and shadowed colours (reflectance).

    Returns
    -------
    alpha : numpy.ndarray (n,)
        Lit share of the nearest mix, 0 (shadow) to 1 (lit).
    nearest : numpy.ndarray (band, n)
        That mix's colour (reflectance).
    """
    lit, sh = np.asarray(lit)[:, None], np.asarray(shadow)[:, None]
    span = lit - sh
    alpha = np.clip(np.nansum((colours - sh) * span, axis=0) / max(float((span ** 2).sum()), 1e-9), 0, 1)
    return alpha, sh + alpha * span


@dataclass(frozen=True)
class GroundModel:
    """Lit and shadowed ground colours (band,) with their spreads."""

    lit: np.ndarray
    lit_sd: np.ndarray
    shadow: np.ndarray | None
    shadow_sd: np.ndarray | None

    @classmethod
    def from_samples(cls, samples: np.ndarray, *, refine_with: np.ndarray | None = None,
                     assume_shadow: bool = True) -> "GroundModel | None":
        """Fit from (n, band) samples of ground, some of them possibly in shadow.

        The brighter 40 % give the lit colour. ``refine_with`` are other (n, band)
        samples of which those close to that colour refine it (the centre of an empty
        track also shows its rails). Samples at 8-65 % of the lit brightness give the
        shadow colour; when there are too few, the shadow is assumed at 30 % of lit
        (``assume_shadow``) or left unknown (``shadow`` is None).
        """
        s = samples[np.all(np.isfinite(samples), axis=1)]
        if s.shape[0] < 10:
            return None
        bright = s.mean(axis=1)
        lit, lit_sd = robust_ref(s[bright >= np.percentile(bright, 60)])
        if refine_with is not None:
            r = refine_with[np.all(np.isfinite(refine_with), axis=1)]
            d = np.sqrt(np.mean(((r - lit) / np.maximum(lit_sd, 0.004)) ** 2, axis=1))
            close = r[d < 2.5]
            if close.shape[0] >= 20:
                lit_c, sd_c = robust_ref(close)
                lit, lit_sd = lit_c, np.maximum(sd_c, lit_sd * 0.5)
        lit_sd = np.maximum(lit_sd, lit_spread_floor(lit))
        ratio = bright / max(float(lit.mean()), 1e-6)
        dark = s[(ratio < 0.65) & (ratio > 0.08)]
        if dark.shape[0] >= max(20, 0.03 * s.shape[0]):
            shadow, shadow_sd = robust_ref(dark)
            shadow_sd = np.maximum(shadow_sd, shadow_spread_floor(shadow))
        elif assume_shadow:
            # No shadow seen: assume the usual 20-35 % of direct light.
            shadow, shadow_sd = lit * 0.3, lit_sd * 0.5
        else:
            shadow, shadow_sd = None, None
        return cls(lit, lit_sd, shadow, shadow_sd)

    def classify(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distance to ground (in spreads) and lit fraction alpha for (band, ...) pixels.

        Ground is any mix of lit and shadowed ground (shadow edges cross pixels), so the
        distance is to the segment between the two colours.
        """
        shape = pixels.shape[1:]
        p = pixels.reshape(pixels.shape[0], -1)
        alpha, nearest = ground_mix(p, self.lit, self.shadow)
        sd = self.shadow_sd[:, None] + alpha * (self.lit_sd - self.shadow_sd)[:, None]
        d = np.sqrt(quiet_nanmean(((p - nearest) / sd) ** 2, axis=0))  # NaN for a pixel with no band
        return d.reshape(shape), alpha.reshape(shape)

"""Railcars, session 35 (issue 6): two 20 ft containers meeting at mid-car are a flat wagon.

At 1 m pixels the container-width rule is not applied (``railcars._MAX_WIDTH_RES_M``) and a
short top textured along takes the commonest car of its length, the gondola class (an open
wagon's heaps, a covered hopper's hatches). A 13-9004 flat wagon carrying two 20 ft ISO
containers (6.06 m each, 2.44 m wide) of their own colours is textured along too, but by
one step at mid-car between two even plateaus (:func:`railcars._container_joint`): that is
now the flatcar class. The brightness is read as for the texture along the car, a shadow
crossing the track masked out; a top as wide as a walled body (3.1-3.3 m, from
``railcars._MAX_JOINT_WIDTH_M`` read) is no joint, so an open wagon's single conical heap,
whose lit and shaded faces meet at mid-car with the sun along the track, keeps the gondola
class, as does an open wagon whose load is levelled (even along: no rule here reads an
even top as a sheet, review RTYPE2).

The strips are drawn on a fine grid (0.05 m), averaged over a pixel of ``gsd`` (m) and
blurred by a PSF of 0.3 pixel, then sampled every 0.5 m as the counter samples them.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
from scipy import ndimage

from changedet.objects import railcars as R
from changedet.objects.strips import Strip

STEP = 0.5                                       # m, the counter's sample spacing
ACROSS = np.arange(-2.6, 2.6 + 1e-9, STEP)       # m, as sample_strip draws it
FINE = 0.05                                      # m, drawing grid
GROUND = 0.18                                    # ballast reflectance
LIT_B = GROUND
BODY_M = 12.5                                    # m, a 13-9004's body as read
BANDS = np.array([1.0, 1.0, 1.0, 1.2])           # B G R NIR of a grey top or ground


def _scene(half_width_m: float, top: Callable[[np.ndarray], np.ndarray], gsd: float,
           shadow: tuple[float, float] | None = None) -> Strip:
    """A top ``half_width_m`` (m) either side of the centreline, ``BODY_M`` long, whose
    reflectance at each distance along the body (m) is ``top(u)``, on ballast, with gaps of
    ground beyond its ends; ``shadow`` (start, end, m along) is a shadow crossing the track
    there (a mast's, a portal's: a third of the light on the top and the ground beside it).
    Averaged over pixels of ``gsd`` (m), blurred, sampled every ``STEP``."""
    a = np.arange(-4.0, 4.0 + 1e-9, FINE)
    u = np.arange(-3.0, BODY_M + 3.0 + 1e-9, FINE)
    on = (np.abs(a)[:, None] <= half_width_m) & ((u >= 0) & (u <= BODY_M))[None, :]
    img = np.where(on, top(np.clip(u, 0.0, BODY_M))[None, :], GROUND)
    if shadow is not None:
        img = img * np.where((u >= shadow[0]) & (u <= shadow[1]), 1 / 3, 1.0)[None, :]
    img = ndimage.uniform_filter(img, size=max(1, int(round(gsd / FINE))), mode="nearest")
    img = ndimage.gaussian_filter(img, 0.3 * gsd / FINE, mode="nearest")
    along = np.arange(0.0, BODY_M, STEP)
    ia = np.round((ACROSS + 4.0) / FINE).astype(int)
    iu = np.round((along + 3.0) / FINE).astype(int)
    prof = img[np.ix_(ia, iu)]
    v = (prof[None] * BANDS[:, None, None]).astype("float32")
    x, y = np.meshgrid(along, ACROSS)
    return Strip(v, along, ACROSS, x, y, STEP)


def _two_boxes(u: np.ndarray) -> np.ndarray:
    # A light grey and a dark red 20 ft box, the joint 6.5 m from the body's end.
    return np.where(u < 6.5, 0.32, 0.10)


@pytest.mark.parametrize("shadow", [None, (2.5, 3.5)])
def test_two_containers_meeting_mid_car_are_a_flat_wagon_at_1_m(shadow):
    boxes = _scene(1.22, _two_boxes, 1.0, shadow)
    n = boxes.along_m.size
    assert R._top_width(boxes, 0, n) < R._MAX_JOINT_WIDTH_M
    assert R._along_texture(boxes, 0, n) >= R._TEXTURED_ALONG
    assert R._container_joint(boxes, 0, n)
    # The base code typed it the gondola class (a short textured top of unread height at
    # 1 m, where the container-width rule is not applied). A portal beam's shadow (1 m)
    # across one box is masked as the texture along masks it, and the step still reads as
    # the joint (unmasked, the dip leaves too much about the two-level fit).
    assert R._classify(boxes, 0, n, BODY_M, LIT_B, tall=None, resolution_m=1.0) == "flatcar"
    # Tall (walls, a roof: the boxes are 2.6 m high) the same.
    assert R._classify(boxes, 0, n, BODY_M, LIT_B, tall=True, resolution_m=1.0,
                       sun_left=True, shading=2.0) == "flatcar"


@pytest.mark.parametrize("gsd", [0.75, 1.0])
def test_a_single_heap_with_the_sun_along_the_track_keeps_the_gondola_class(gsd):
    # One conical heap of coal from a fixed chute under a sun along the track: its lit face
    # and its shaded face meet at mid-car, one step between two plateaus, but across the
    # open wagon's full 3.2 m.
    heap = _scene(1.6, lambda u: np.where(u < 6.25, 0.10, 0.05), gsd)
    n = heap.along_m.size
    assert R._along_texture(heap, 0, n) >= R._TEXTURED_ALONG
    assert R._top_width(heap, 0, n) >= R._MAX_JOINT_WIDTH_M
    assert not R._container_joint(heap, 0, n)
    assert R._classify(heap, 0, n, BODY_M, LIT_B, tall=None, resolution_m=gsd) == "gondola"


@pytest.mark.parametrize("gsd", [0.5, 0.75, 1.0])
@pytest.mark.parametrize("load", [0.06, 0.12, 0.25])
def test_an_open_wagon_with_a_levelled_load_keeps_the_gondola_class(gsd, load):
    # Coal (0.06), ore (0.12) or crushed stone (0.25) trimmed flat at the loading point:
    # even along like a roof sheet, 3.2 m wide. Not a joint, and no rule reads an even
    # short top as a boxcar's roof or a deck (the reviewed TYPE2 patch typed these boxcars
    # and flat wagons).
    wagon = _scene(1.6, lambda u: np.full(u.shape, load), gsd)
    n = wagon.along_m.size
    assert not R._container_joint(wagon, 0, n)
    assert R._classify(wagon, 0, n, BODY_M, LIT_B, tall=None, resolution_m=gsd) == "gondola"


@pytest.mark.parametrize("heaps", [2, 3, 4])
def test_heaps_are_not_a_container_joint(heaps):
    # An open wagon's load in 2-4 heaps varies within each half of the car: no single
    # step explains it (a container-wide load is taken, so the width gate does not decide).
    heaped = _scene(1.22, lambda u: 0.12 * (1 + 0.8 * np.abs(np.sin(np.pi * heaps * u / BODY_M))), 1.0)
    n = heaped.along_m.size
    assert R._along_texture(heaped, 0, n) >= R._TEXTURED_ALONG
    assert not R._container_joint(heaped, 0, n)


def test_a_step_near_the_car_end_is_not_a_container_joint():
    # A step at a fifth of the car (a neighbour's shade over its end, a sloped end bay) is
    # not where two 20 ft boxes meet.
    end = _scene(1.22, lambda u: np.where(u < 2.8, 0.32, 0.10), 1.0)
    assert not R._container_joint(end, 0, end.along_m.size)

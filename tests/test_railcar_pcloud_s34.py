"""Cars cut by a cloud (or its shadow) that hides the track up to its end.

An unobserved stretch running to the strip's end keeps the tile convention (half the
longest car: a locomotive's 18 m) where what lies past the cut may be shown elsewhere:
off the image, or nodata another scene fills. Where the stretch's first locomotive's
length lies on the image's own data (inside the frame, recorded), it is this image's
mask (a cloud, its shadow), which hides the same car in every tile and holds the whole
hidden part of any car cut by it: the centre-in-view rule applies at the car's own half
length, as between two seen stretches (session 34, altgen partly cloudy 100-103: half
the cars cut by such a stretch, centre in view, were missed).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr
from affine import Affine
from shapely.affinity import translate
from shapely.geometry import LineString

from changedet.grid import GridSpec
from changedet.objects import railcars as R
from changedet.objects.cloud_shadow import CLOUD_EDGE_M
from changedet.objects.railcars import count_railcars
from changedet.objects.strips import sample_strip
from tests.altgen.railyard import make_railyard


def test_hidden_run_to_the_strips_end_counts_on_the_images_own_data():
    step = 0.5
    seen = np.ones(100, bool)
    seen[40:] = False                      # 30 m at 0.5 m, to the strip's end
    on = np.ones(100, bool)
    assert R._hidden_run_m(seen, 39, 1, step) == 0.0            # nothing known: the tile convention
    assert R._hidden_run_m(seen, 39, 1, step, on) == pytest.approx(30.0)
    crop = on.copy()
    crop[40 + 36:] = False                 # the first 18 m recorded, then off the data: all the hidden part
    assert R._hidden_run_m(seen, 39, 1, step, crop) == pytest.approx(30.0)
    crop[40 + 35] = False                  # 17.5 m recorded only
    assert R._hidden_run_m(seen, 39, 1, step, crop) == 0.0
    gap = on.copy()
    gap[40:56] = False                     # nodata next to the car, cloud beyond it to the end
    assert R._hidden_run_m(seen, 39, 1, step, gap) == 0.0
    # The start side reads the samples before the run, nearest first.
    seen = np.ones(100, bool)
    seen[:60] = False                      # 30 m before the run
    start = np.zeros(100, bool)
    start[60 - 36:] = True                 # recorded over the 18 m next to the run only
    assert R._hidden_run_m(seen, 60, -1, step, start) == pytest.approx(30.0)
    start[60 - 36] = False
    assert R._hidden_run_m(seen, 60, -1, step, start) == 0.0
    # Seen on both sides: its length whatever it lies on (session 33).
    seen = np.ones(100, bool)
    seen[40:80] = False
    assert R._hidden_run_m(seen, 39, 1, step, np.zeros(100, bool)) == pytest.approx(20.0)


def test_recorded_along_reads_cloud_as_data_and_nan_or_the_frame_as_not():
    grid = GridSpec("EPSG:32637", Affine(1.0, 0, 0.0, 0, -1.0, 100.0), (100, 100))
    pix = np.ones((4, 100, 100), np.float32)
    cloud = np.zeros((100, 100), bool)
    cloud[:, 40:60] = True                 # under a cloud: NaN in pix (not valid), recorded
    pix[:, :, 40:60] = np.nan
    pix[1, :, 20:30] = np.nan              # one band missing: nodata
    strip = sample_strip(pix, grid, LineString([(0.5, 50.5), (130.5, 50.5)]), half_width_m=2.6, step_m=0.5)
    rec = R._recorded_along(strip, pix, cloud, grid)
    x = strip.x[int(np.argmin(np.abs(strip.across_m)))]
    assert rec.shape == strip.along_m.shape
    assert rec[(x > 1) & (x < 19)].all() and rec[(x > 31) & (x < 99)].all()
    assert not rec[(x > 20.5) & (x < 29.5)].any()
    assert not rec[x > 100.5].any()        # off the frame


def _u(scene) -> np.ndarray:
    """Metres along the yard (its first true track's direction) of every pixel centre."""
    grid = GridSpec.of(scene.image)
    (x0, y0), (x1, y1) = next(iter(scene.true_tracks.values())).coords
    rows, cols = np.meshgrid(np.arange(grid.shape[0]), np.arange(grid.shape[1]), indexing="ij")
    x, y = grid.xy(rows, cols)
    return ((x - x0) * (x1 - x0) + (y - y0) * (y1 - y0)) / np.hypot(x1 - x0, y1 - y0)


def _car(scene, track_id: str, u0_m: float):
    """The scene's tank car on ``track_id`` starting at ``u0_m`` (a fixed car, so that a
    change in the generator fails here rather than picking another)."""
    (car,) = [c for c in scene.cars if c.track_id == track_id and abs(c.u0_m - u0_m) < 0.5]
    assert car.type == "tank"
    return car


def _count(scene, image, valid, *, reverse: bool = False):
    tracks = {k: LineString(list(v.coords)[::-1]) if reverse else v for k, v in scene.tracks.items()}
    da = None if valid is None else xr.DataArray(valid, dims=("y", "x"), coords={"y": image.y, "x": image.x})
    return count_railcars(image, tracks, valid=da, sun_azimuth_deg=scene.sun_azimuth_deg,
                          sun_elevation_deg=scene.sun_elevation_deg), tracks


def _iou(scene, res, car) -> float:
    mdx, mdy = scene.params["misregistration_xy_m"]
    t = translate(car.polygon, mdx, mdy)
    return max((t.intersection(d.polygon).area / t.union(d.polygon).area
                for d in res.detections if d.feature_id == car.track_id), default=0.0)


def _in_view_m(res, tracks, car, *, reverse: bool) -> float:
    """Metres of ``car`` the counter observes next to the stretch that cuts it (from its
    reported unobserved stretches, in the yard's direction), so that the premise "its
    centre is in view, but less than a locomotive's half" is checked, not assumed."""
    (pf,) = [p for p in res.per_feature if p["id"] == car.track_id]
    length = tracks[car.track_id].length
    runs = [(length - b, length - a) if reverse else (a, b) for a, b in pf["unobserved_runs_m"]]
    ((a, b),) = [r for r in runs if r[0] < car.u1_m and r[1] > car.u0_m]
    return max(0.0, min(car.u1_m, a) - car.u0_m) + max(0.0, car.u1_m - max(car.u0_m, b))


def _premise(res, tracks, car, reverse=False):
    seen = _in_view_m(res, tracks, car, reverse=reverse)
    assert 0.5 * (car.u1_m - car.u0_m) <= seen < 0.5 * R.CAR_LENGTHS_M["locomotive"], seen


# Clear scenes; a tank car (10.7-10.9 m) seen 7-7.7 m next to a cloud, centre in view.
_START = [(3, 0.3, "T3", 53.31), (1, 0.75, "T4", 194.24)]
_END = [(3, 0.3, "T3", 125.43), (1, 0.75, "T4", 206.26)]


@pytest.mark.slow
@pytest.mark.parametrize("reverse", [False, True], ids=["drawn_forward", "drawn_reversed"])
@pytest.mark.parametrize("seed,gsd,track,u0", _START)
def test_car_cut_by_a_cloud_from_the_yards_start_is_counted(seed, gsd, track, u0, reverse):
    # The cloud covers the yard from its start to 7.5 m (plus the edge the counter leaves
    # out) before the car's far end. Session 34 drew the line both ways to check the rule
    # at the strip's start and at its end; since session 35 a track is read in one
    # direction whichever end it was drawn from (railcars._reads_reversed), so both
    # drawings read the cut at the strip's start, and the reversed one checks that the
    # drawing does not matter.
    scene = make_railyard(seed, gsd_m=gsd, condition="clear")
    car = _car(scene, track, u0)
    res, tracks = _count(scene, scene.image, _u(scene) >= car.u1_m - 7.5 - CLOUD_EDGE_M, reverse=reverse)
    _premise(res, tracks, car, reverse)
    assert _iou(scene, res, car) >= 0.5


@pytest.mark.slow
# Both drawings: since session 35 a track is read in one direction whatever end it was
# drawn from (railcars._reads_reversed, northwards as these yards are drawn), so the
# reversed line is read like the forward one, with the cut at the strip's end (a strict
# xfail in session 34: the 7 m seen at the strip's start read as a flat top or cut, review
# RPCLOUD2, M3). Reading a cut car's part at the strip's start as at its end is not
# established by this: a yard clouded at its southern end is still read with the cut at
# the strip's start.
@pytest.mark.parametrize("reverse", [False, True], ids=["drawn_forward", "drawn_reversed"])
@pytest.mark.parametrize("seed,gsd,track,u0", _END)
def test_car_cut_by_a_cloud_to_the_yards_end_is_counted(seed, gsd, track, u0, reverse):
    scene = make_railyard(seed, gsd_m=gsd, condition="clear")
    car = _car(scene, track, u0)
    res, tracks = _count(scene, scene.image, _u(scene) < car.u0_m + 7.5 + CLOUD_EDGE_M, reverse=reverse)
    _premise(res, tracks, car, reverse)
    assert _iou(scene, res, car) >= 0.5


# The yard turned by 180 deg (see below); tank cars (13.5-13.9 m) seen 7.0-7.2 m (just over
# half) next to a cloud over the yard's end, now its southern end.
_SOUTH = [(3, 0.3, "T2", 80.73), (1, 0.75, "T1", 227.8)]


@pytest.mark.slow
@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="a yard clouded at its southern end is read with the cut at the strip's start (tracks "
                          "are read northwards, the counter is not mirror-symmetric): these cut tank cars, centre "
                          "in view, are not found (review RPCLOUD2 M3, RRDIR M3)")
@pytest.mark.parametrize("seed,gsd,track,u0", _SOUTH)
def test_car_cut_by_a_cloud_at_the_yards_southern_end_is_counted(seed, gsd, track, u0):
    # The generator's yard turned by 180 deg (make_railyard draws the angle, then takes the
    # given one; the turned yard has cars of its own): its tracks head south, so they are
    # read from the yard's end, and a cloud over the yard's end lies at the strip's start.
    angle = _yard_angle_deg(make_railyard(seed, gsd_m=gsd, condition="clear"))
    scene = make_railyard(seed, gsd_m=gsd, condition="clear", track_angle_deg=angle + 180.0)
    car = _car(scene, track, u0)
    assert all(R._reads_reversed(line) for line in scene.tracks.values())
    res, tracks = _count(scene, scene.image, _u(scene) < car.u0_m + 7.5 + CLOUD_EDGE_M)
    seen = _in_view_m(res, tracks, car, reverse=False)
    if not 0.5 * (car.u1_m - car.u0_m) <= seen < 0.5 * R.CAR_LENGTHS_M["locomotive"]:
        raise RuntimeError(f"premise: {seen:.1f} m of the car in view")   # not the xfail's AssertionError
    assert _iou(scene, res, car) >= 0.5


def _yard_angle_deg(scene) -> float:
    """Direction (degrees anticlockwise from the grid's +x) of the yard's first true track."""
    (x0, y0), (x1, y1) = next(iter(scene.true_tracks.values())).coords
    return math.degrees(math.atan2(y1 - y0, x1 - x0))


@pytest.mark.slow
@pytest.mark.parametrize("seed,gsd,track,u0", _END[:1])  # (1, 0.75): not counted with every end masked either
def test_nodata_next_to_the_car_keeps_the_tile_convention(seed, gsd, track, u0):
    # 8 m of nodata (NaN: another image or tile may fill it) right past the car's seen
    # part, then cloud to the end: the stretch is not this image's mask next to the car,
    # so the longest car's half applies and 7-8 m of a tank car are not counted. So too
    # with nodata to the end (valid everywhere).
    scene = make_railyard(seed, gsd_m=gsd, condition="clear")
    car = _car(scene, track, u0)
    u = _u(scene)
    gap = (u >= car.u0_m + 7.5) & (u < car.u0_m + 15.5)
    res, tracks = _count(scene, scene.image.where(xr.DataArray(~gap, dims=("y", "x"))), u < car.u0_m + 15.5)
    _premise(res, tracks, car)
    assert _iou(scene, res, car) < 0.5
    res, tracks = _count(scene, scene.image.where(xr.DataArray(u < car.u0_m + 7.5, dims=("y", "x"))),
                         np.ones(u.shape, bool))
    _premise(res, tracks, car)
    assert _iou(scene, res, car) < 0.5


@pytest.mark.slow
def test_track_running_off_the_image_counts_on_its_cloud_next_to_the_car():
    # The yard along x (track angle 0), cropped so that the tracks run off the image:
    # 30 m of cloud inside the frame past the car's seen part hold its hidden part, so it
    # is counted; 10 m of cloud (15 m of hidden stretch with the edge ring), then off the
    # frame, are less than the 18 m that must lie on this image's data (_WIDE_STRETCH_M),
    # so the tile convention holds there (a conservative margin: a cut car hides at most
    # 14 m of itself).
    scene = make_railyard(3, gsd_m=0.3, condition="clear", track_angle_deg=0.0)
    car = _car(scene, "T5", 130.79)
    u = _u(scene)
    start = car.u0_m + 7.5 + CLOUD_EDGE_M
    for past_m, counted in ((30.0, True), (10.0, False)):
        keep = slice(0, int(np.sum(u[0] < start + past_m)))
        image = scene.image.isel(x=keep)
        res, tracks = _count(scene, image, (u < start)[:, keep])
        _premise(res, tracks, car)
        assert (_iou(scene, res, car) >= 0.5) == counted, past_m

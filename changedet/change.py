"""Bi-temporal change detection of two images: load, align, score, threshold, clean.

Inputs are a multi-band GeoTIFF / COG, or a directory of single-band files whose names
carry the band (``..._B04.tif``, ``B8A.jp2``, ``T31UDQ_20170829T105019_B11.tif``), as
OSCD and EO Browser exports are laid out. Bands of a directory are resampled onto the
grid of its finest band; AFTER is resampled onto BEFORE's grid when the grids differ.

Methods (each returns a change magnitude and a default automatic threshold):

==========  ==================================================================  ==========
method      magnitude                                                           threshold
==========  ==================================================================  ==========
diff        mean absolute band difference, input units                          KI
cva         change-vector magnitude ``|after - before|`` (+ direction)          KI
logratio    mean ``|10 log10(after / before)|`` over bands, dB                  KI
irmad       IR-MAD chi-square statistic (Nielsen 2007), chi2(bands) under H0     chi2, 1 %
zscore      RMS over bands of the band difference standardised by the robust    k·MAD
            (median / MAD) spread of that band's difference over the scene
==========  ==================================================================  ==========

``kilog`` (Kittler-Illingworth on ``log1p(magnitude)``) suits the skewed chi-square of
IR-MAD; ``smooth=3`` averages both images over 3x3 pixels first. Clouds and their
shadows are the largest false alarms of every method: :func:`unobserved_mask` finds them
(s2cloudless with a hysteresis seed, then the Fmask-style shadow match) and
``unobserved=`` leaves those pixels out of the statistics and the mask. On OSCD
Sentinel-2 the best unsupervised setting was IR-MAD on B02, B03, B04, B08 with
``smooth=3``, ``kilog`` and clouds + shadows masked (pooled F1 0.411; 0.361 without the
cloud mask, see docs/oscd.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import xarray as xr

from changedet.errors import ChangedetError, GridError

__all__ = [
    "METHODS",
    "THRESHOLDS",
    "ChangeResult",
    "load_image",
    "load_pair",
    "load_pair_masked",
    "clouds_and_shadows",
    "unobserved_mask",
    "change_score",
    "detect_change",
    "finish_change",
    "changed_area_m2",
    "score_masks",
]

METHODS = ("diff", "cva", "irmad", "logratio", "zscore")
THRESHOLDS = ("otsu", "ki", "kilog", "kmad", "chi2")
# Kittler-Illingworth rather than Otsu for the unbounded magnitudes: change is usually a
# small class with a wider spread than no change, which is KI's model and breaks Otsu's
# equal-variance assumption (on OSCD Otsu put the split among the outliers in 3 of 5 cities).
_DEFAULT_THRESHOLD = {"diff": "ki", "cva": "ki", "logratio": "ki", "irmad": "chi2", "zscore": "kmad"}
_RASTER_EXT = (".tif", ".tiff", ".jp2", ".vrt", ".img")
# A band token stands alone between separators: _ - . as products write them, and the
# spaces and parentheses of hand-named or browser-duplicated downloads ("sentinel2 B04.tif",
# "S2_B04 (1).tif"); letters or digits around it ("SUB04", "B04X") make it part of a word.
_BAND_RE = re.compile(r"(?:^|[_\-.\s()])(B(?:\d{1,2}A?|8A))(?=$|[_\-.\s()])", re.IGNORECASE)
#: Cloud-class bands: Sentinel Hub's cloud mask (``CLM``: 0 clear, 1 cloud, 255 no data) and the
#: Sentinel-2 L2A scene classification (``SCL``). Categories, not radiometry: they mask the
#: pixels of their date (:func:`_class_unobserved`) and never enter the change arithmetic.
CLASS_BANDS = ("CLM", "SCL")
# A class band's file in a band directory, by the same token rule as _BAND_RE
# ("T31UDQ_20170829T105019_SCL_20m.jp2", "..._CLM_(Raw).tiff").
_CLASS_RE = re.compile(r"(?:^|[_\-.\s()])(CLM|SCL)(?=$|[_\-.\s()])", re.IGNORECASE)


class ChangeError(ChangedetError):
    """A change-detection input or option is unusable (no bands, unknown method, ...)."""


def _band_of(name: str) -> str | None:
    stem = Path(name).stem
    m = _BAND_RE.findall(stem)
    if not m:
        return None
    b = m[-1].upper()
    # Canonical two-digit Sentinel-2 names: B4 -> B04, B8A stays.
    num = re.match(r"B(\d+)(A?)$", b)
    if not num:
        return b
    return f"B{int(num.group(1))}A" if num.group(2) else f"B{int(num.group(1)):02d}"


# What else in a band file's name differs between the bands of one acquisition: the
# resolution of Sentinel-2 products ("..._B05_20m.jp2"), Landsat Collection 2's surface
# reflectance / temperature product ("..._SR_B4.TIF", "..._ST_B10.TIF") and a browser's
# duplicate-download suffix ("S2_B04 (1).tif", which is then a second B04, see _acquisition_of).
_NOT_ACQUISITION_RE = re.compile(r"(?:(?<=^)|(?<=[_\-.\s]))(?:\d{1,3}m|SR|ST)(?=$|[_\-.\s()])|\s*\(\d+\)\s*$",
                                 re.IGNORECASE)


def _acquisition_of(name: str) -> str:
    """A band or class file's name without its band token: the same for every file of one
    acquisition (``2023-04-26-..._L2A_B02_(Raw).tiff`` and ``..._B11_(Raw).tiff``), another
    for another date or download."""
    stem = Path(name).stem
    for rx in (_BAND_RE, _CLASS_RE):
        m = list(rx.finditer(stem))
        if m:
            stem = stem[:m[-1].start(1)] + stem[m[-1].end(1):]
            break
    return re.sub(r"[_\-.\s]+", "_", _NOT_ACQUISITION_RE.sub("", stem)).strip("_").lower()


def _check_one_acquisition(folder: Path, named: dict, classes: dict) -> None:
    """Refuse a band folder whose files are not one acquisition, each band once.

    Mixing two downloads took each band from whichever file sorted first: B02-B04 from
    one date and B08 from another, without a word. Files are grouped by their names
    without the band token (:func:`_acquisition_of`); the folder is refused when a band
    has more than one file, or when the groups' names carry different dates. Groups that
    differ in name only (a band file renamed by hand, without a date) are one image.

    Raises
    ------
    ChangeError
        Naming the acquisitions (or the files of a repeated band) and the fix.
    """
    from changedet.sources.local import _name_time

    groups: dict[str, list[str]] = {}
    for files in list(named.values()) + list(classes.values()):
        for f in files:
            groups.setdefault(_acquisition_of(f.name), []).append(f.name)
    twice = {b: fs for b, fs in {**named, **classes}.items() if len(fs) > 1}
    days = set()
    for names in groups.values():
        when = _name_time(sorted(names)[0], None)
        if when is not None:
            days.add(when.date())
    if len(groups) > 1 and (twice or len(days) > 1):
        listed = "; ".join(f"{len(v)} file(s) like {sorted(v)[0]}" for _, v in sorted(groups.items()))
        raise ChangeError(f"{folder}: holds {len(groups)} acquisitions ({listed}); the bands of one image must "
                          "come from one acquisition: pass a folder holding the band files of one date only")
    if twice:
        listed = "; ".join(f"{b}: {', '.join(f.name for f in fs)}" for b, fs in sorted(twice.items()))
        raise ChangeError(f"{folder}: more than one file for the same band ({listed}); keep one file per band "
                          "in the folder (move or delete the duplicate downloads)")


#: Integer types whose all-zero pixels are fill when the file declares no nodata (see
#: :func:`_zero_is_fill`). 8-bit is left out: 8-bit products are display-stretched with
#: the dark end clipped, so shadow and deep water can be 0 in every band of a true-colour
#: export, and the 8-bit sources that fill with 0 declare it (NAIP: nodata = 0).
ZERO_FILL_DTYPES = ("uint16", "uint32")


def _zero_is_fill(path: str | Path) -> bool:
    """Whether pixels that are 0 in every band of ``path`` are fill, not data.

    True for a 16/32-bit unsigned file that declares no nodata value, mask or alpha
    band. Sentinel-2 L1C/L2A products (JPEG2000, and their GeoTIFF/EO Browser exports)
    write 0 for "no data" without declaring it (ESA product specification: NoData = 0;
    since baseline 04.00 the radiometric offset keeps real surfaces above it), and a
    surface is never exactly 0 in every band of 12-16 bit data: the sen2ships Busan
    export (display-stretched uint16) has 906 zeros in B02 alone and none in all five
    bands at once.
    """
    from rasterio.enums import MaskFlags

    from changedet.io import open_raster

    with open_raster(path) as src:
        if any(str(d) not in ZERO_FILL_DTYPES for d in src.dtypes):
            return False
        if any(v is not None for v in src.nodatavals):
            return False
        # A per-dataset mask or an alpha band says which pixels are valid.
        return all(flags == [MaskFlags.all_valid] for flags in src.mask_flag_enums)


def _zero_fill_to_nan(da: xr.DataArray) -> xr.DataArray:
    """``da`` with NaN in every band where all bands are exactly 0 (see :func:`_zero_is_fill`)
    and the zeros reach the image edge: fill lies outside a swath or a tile's footprint,
    so it touches the edge of any crop, while dark pixels inside the image (deep water,
    shadow in one band of a single-band export) stay data."""
    from scipy import ndimage

    zero = np.asarray((da == 0).all("band").values)
    if not zero.any():
        return da
    lab, _ = ndimage.label(zero)
    edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    fill = np.isin(lab, edge[edge > 0])
    if not fill.any():
        return da
    return da.where(~xr.DataArray(fill, dims=("y", "x")))


def _is_class_band(name) -> bool:
    return str(name).strip().upper() in CLASS_BANDS


def _class_unobserved(values, kind: str, source) -> np.ndarray:
    """Pixels of one date without a view of the ground, from its class band.

    Parameters
    ----------
    values : array_like
        (y, x) values of the ``CLM`` or ``SCL`` band as stored in the file (read without
        the file's nodata: ``read_raster(..., as_stored=CLASS_BANDS)``), NaN where there
        are none (outside the footprint of a resampled class band).
    kind : {"CLM", "SCL"}
    source : path
        The file, for error messages.

    Returns
    -------
    numpy.ndarray of bool
        (y, x) True where the pixel is hidden or unknown:

        - ``CLM``: cloud at 0.5 and above (1, and a resampled or averaged fraction: the
          rule of :func:`changedet.cloudmask.cloud_mask`), so 255 (no data) too; NaN
          and negative values (no CLM code) are unknown. Clear is 0 <= CLM < 0.5.
        - ``SCL``: cloud shadow (3), cloud medium/high probability (8, 9), thin cirrus
          (10), no data (0), saturated or defective (1) (:mod:`changedet.cloudmask`'s
          classes), and NaN or any value that is not a class 0-11.
    """
    from changedet.cloudmask import SCL_CLOUD, SCL_NODATA

    v = np.asarray(getattr(values, "values", values), dtype="float32")
    if kind == "CLM":
        # NaN fails both comparisons: a pixel whose mask is unknown may be cloud.
        return ~((v >= 0) & (v < 0.5))
    if kind == "SCL":
        return np.isin(v, SCL_CLOUD + SCL_NODATA) | ~np.isin(v, np.arange(12))
    raise ChangeError(f"{source}: unknown class band {kind!r}; expected one of {CLASS_BANDS}")


def load_image(path: str | Path, *, bands: Sequence[str] | None = None) -> xr.DataArray:
    """Read one date as ``(band, y, x)`` float32 with NaN nodata.

    Parameters
    ----------
    path : path
        A multi-band raster, or a directory of single-band rasters with the band name
        in each file name (``B01`` ... ``B12``, ``B8A``; ``B4`` is read as ``B04``).
    bands : sequence of str, optional
        Bands to keep, in this order (default: all, in file / name order).

    Returns
    -------
    xarray.DataArray
        float32 reflectance or DN as stored (uint16 is converted exactly), with x/y
        coordinates and the CRS in ``spatial_ref``, and the path in ``attrs["source"]``.
        For a directory, every band is resampled (bilinear) onto the grid of the
        finest-resolution band. In a 16/32-bit unsigned file that declares no nodata,
        pixels that are 0 in every band are NaN (Sentinel-2 fill, see
        :func:`_zero_is_fill`); :func:`changedet.io.read_raster` itself keeps them.
        A cloud-class band (``CLM`` or ``SCL`` in a multi-band file, a ``*_CLM.*`` /
        ``*_SCL.*`` file in a directory) is not returned: it masks the image instead
        (NaN where it says cloud, shadow, cirrus or no data, see :func:`_class_unobserved`).
        Its values are read as stored: the file's nodata (which GeoTIFF applies to every
        band, e.g. 0 in a uint16 stack that would turn every clear CLM pixel into "no
        data") does not apply to it; its own codes say where it has none.

    Raises
    ------
    ChangeError
        If ``bands`` names a class band (``CLM``, ``SCL``), or a band the input lacks.
    """
    da, hidden, _, _ = _load_image(path, bands=bands)
    if hidden is not None:
        da = da.where(~xr.DataArray(hidden, dims=("y", "x")))
    return da


def _load_image(
    path: str | Path, *, bands: Sequence[str] | None = None
) -> tuple[xr.DataArray, np.ndarray | None, list[str], np.ndarray | None]:
    """:func:`load_image` without applying the class band: ``(image, unobserved, kinds, data)``.

    ``unobserved`` is (y, x) bool on the image's grid (None without a class band), and
    ``kinds`` the class bands found (``["CLM"]``...), taken out of the image's bands.
    Pixels a class band hides are already NaN in a band directory's bands that were
    resampled onto the finest grid (masked on their own grid first, so that bilinear
    interpolation draws nothing from a cloud into the clear pixels around it); the
    caller masks the rest with ``unobserved``. ``data`` is then (y, x) bool, where every
    band had data before that early mask; None when nothing was masked early (the
    image's finite pixels are its data).
    """
    from changedet.grid import GridSpec
    from changedet.io import read_raster, reproject_to

    path = Path(path)
    asked = [str(b) for b in bands or () if _is_class_band(b)]
    if asked:
        raise ChangeError(
            f"bands {', '.join(a.upper() for a in asked)} asked for: a cloud-class band is a mask (its cloudy and "
            "no-data pixels are left out of both dates), never compared as a spectral band; drop it from --bands "
            "(it is applied whenever an input has it)"
        )
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in _RASTER_EXT)
        named = {}
        classes = {}
        for f in files:
            b = _band_of(f.name)
            if b is not None:
                named.setdefault(b, []).append(f)
                continue
            c = _CLASS_RE.findall(Path(f.name).stem)
            if c:
                classes.setdefault(c[-1].upper(), []).append(f)
        _check_one_acquisition(path, named, classes)
        named = {b: fs[0] for b, fs in named.items()}
        classes = {c: fs[0] for c, fs in classes.items()}
        if not named:
            raise ChangeError(
                f"{path}: no raster files with a band name (e.g. *_B04.tif) in the directory; "
                "pass a multi-band GeoTIFF or a directory of single-band files named by band"
            )
        want = [_band_of(str(b)) or str(b).upper() for b in bands] if bands else sorted(named)
        missing = [b for b in want if b not in named]
        if missing:
            raise ChangeError(f"{path}: no file for band(s) {missing}; the directory has {sorted(named)}")
        das = [read_raster(named[b], bands=[b]) for b in want]
        kinds = [k for k in CLASS_BANDS if k in classes]
        cls_das = {k: read_raster(classes[k], bands=[k], as_stored=[k]) for k in kinds}

        def hidden_on(g):
            """Union of the class masks on grid ``g`` (None without a class file)."""
            h = None
            for kind, cls in cls_das.items():
                gc = GridSpec.of(cls)
                m = _class_unobserved(cls.isel(band=0, drop=True), kind, classes[kind])
                if not gc.same_as(g):
                    # The mask, never interpolated: nearest neighbour onto a grid as fine or
                    # finer (SCL is 20 m), "max" onto a coarser one (a 20 m band beside a 10 m
                    # CLM), where a pixel partly hidden is hidden. NaN beyond the class file's
                    # footprint: unknown, hidden.
                    coarser = gc.crs == g.crs and abs(g.transform.a) > 1.01 * abs(gc.transform.a)
                    try:
                        moved = reproject_to(gc.attach(m.astype("float32")), g,
                                             resampling="max" if coarser else "nearest")
                    except GridError as exc:
                        raise GridError(f"{classes[kind]}: does not cover the band files of {path}: {exc}") from None
                    m = np.asarray(moved.values) != 0
                h = m if h is None else h | m
            return h

        finest = min(das, key=lambda d: abs(float(d.x[1] - d.x[0])) if d.sizes["x"] > 1 else np.inf)
        grid = GridSpec.of(finest)
        hidden = hidden_on(grid)
        out = []
        premasked = []  # (band, where it had data before the class mask, on ``grid``)
        for b, d in zip(want, das):
            g = GridSpec.of(d)
            if not g.same_as(grid):
                h = hidden_on(g)
                if h is not None and h.any():
                    # Cloud out before a 20 m band is interpolated onto 10 m: GDAL leaves
                    # NaN (nodata) sources out of the bilinear weights.
                    had = g.attach(np.isfinite(np.asarray(d.values[0])).astype("float32"))
                    premasked.append((b, np.asarray(reproject_to(had, grid, resampling="nearest").values) == 1))
                    d = d.where(~xr.DataArray(h, dims=("y", "x")))
                d = reproject_to(d, grid, resampling="bilinear")
            out.append(d.isel(band=0, drop=True).assign_coords(x=grid.x, y=grid.y))
        da = xr.concat(out, dim="band", coords="minimal", compat="override").assign_coords(band=want)
        da = da.transpose("band", "y", "x")
        if all(_zero_is_fill(named[b]) for b in want):
            da = _zero_fill_to_nan(da)
        da.attrs["source"] = str(path)
        if premasked:
            # Which pixels had data on every band before the class mask (load_pair counts
            # those it hides): the finest band is never masked early, and carries the fill.
            done = {b for b, _ in premasked}
            data = np.isfinite(np.asarray(da.sel(band=[b for b in want if b not in done]).values)).all(0)
            for _, had in premasked:
                data &= had
            return da, hidden, kinds, data
        return da, hidden, kinds, None
    da = read_raster(path, as_stored=CLASS_BANDS)
    names = [str(b) for b in da["band"].values]
    kinds = [n.upper() for n in names if _is_class_band(n)]
    hidden = None
    if kinds:
        for kind in kinds:
            h = _class_unobserved(da.sel(band=kind), kind, path)
            hidden = h if hidden is None else hidden | h
        names = [n for n in names if not _is_class_band(n)]
        if not names:
            raise ChangeError(f"{path}: has only the cloud-class band(s) {kinds}, no spectral band to compare")
        da = da.sel(band=names)
    if _zero_is_fill(path):
        # On all the file's spectral bands, before --bands selects some: more bands, surer
        # test (a class band is 0 wherever it is clear, so it says nothing about fill).
        da = _zero_fill_to_nan(da)
    da.attrs["source"] = str(path)
    if bands:
        lower = {n.lower(): n for n in names}
        missing = [b for b in bands if str(b).lower() not in lower]
        if missing:
            raise ChangeError(f"{path}: has no band(s) {missing}; its bands are {names}")
        da = da.sel(band=[lower[str(b).lower()] for b in bands])
    return da, hidden, kinds, None


def _unnamed(names: Sequence[str]) -> bool:
    """True when every band carries the placeholder name ``b<n>`` of a file without band
    descriptions (:func:`changedet.io.band_names`): its bands are known only by position."""
    return all(str(n) == f"b{i + 1}" for i, n in enumerate(names))


def _role_of(name: str) -> str | None:
    from changedet.bands import ROLE_NAMES

    up = str(name).upper()
    return next((role for role, aliases in ROLE_NAMES.items() if up in aliases), None)


def _pair_bands(nb: Sequence[str], na: Sequence[str]) -> list[tuple[str, str]]:
    """(BEFORE band, AFTER band) pairs of two named band lists, in BEFORE's order.

    Same name first (case-insensitive; ``B2`` = ``B02`` between files of one band set),
    then same spectral role (:data:`changedet.bands.ROLE_NAMES`: ``R`` = ``red`` =
    ``B04``, ``NIR`` = ``B08``...), then the nearest stated centre wavelength within 15 nm
    (:func:`_wavelength_nm`); each AFTER band used once. Other bands are left out.
    """
    # B2 and B02 (Earth Engine against ESA naming of Sentinel-2) are the same band, but
    # only between two files of one band set: Landsat's B2 is green and its B4 NIR, so a
    # Landsat B1-B4 file against Sentinel-2 B02, B03, B04, B08 must not pair by number.
    canon_b = [_band_of(str(n)) if re.fullmatch(r"B\d+A?", str(n), re.IGNORECASE) else None for n in nb]
    canon_a = [_band_of(str(n)) if re.fullmatch(r"B\d+A?", str(n), re.IGNORECASE) else None for n in na]
    by_number = None not in canon_b + canon_a and set(canon_b) == set(canon_a)

    def key(n):
        return (_band_of(str(n)) or str(n).upper()) if by_number else str(n).upper()

    by_upper = {key(n): str(n) for n in na}
    used: set[str] = set()
    pairs: dict[str, str] = {}
    for n in nb:
        m = by_upper.get(key(n))
        if m is not None and m not in used:
            pairs[str(n)] = m
            used.add(m)
    for n in nb:
        if str(n) in pairs:
            continue
        role = _role_of(n)
        if role is None:
            continue
        m = next((x for x in na if str(x) not in used and _role_of(x) == role), None)
        if m is not None:
            pairs[str(n)] = str(m)
            used.add(str(m))
    # Then by centre wavelength where the names state one (ENVI/GDAL descriptions such as
    # "... (Band 1):L71119038_...MTL.txt) (0.482500 Micrometers)" carry each scene's id):
    # the nearest within 15 nm, since sensors of one family differ by a few nm (TM 485 /
    # ETM+ 482.5) and distinct bands lie 20 nm or more apart (S2 B08 842, B8A 865).
    wl_a = {str(x): _wavelength_nm(x) for x in na}
    for n in nb:
        w = _wavelength_nm(n)
        if str(n) in pairs or w is None:
            continue
        cands = [(abs(v - w), x) for x, v in wl_a.items() if x not in used and v is not None]
        if cands and min(cands)[0] <= 15.0:
            m = min(cands)[1]
            pairs[str(n)] = m
            used.add(m)
    return [(str(n), pairs[str(n)]) for n in nb if str(n) in pairs]


_WAVELENGTH_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(micrometers?|microns?|µm|um|nanometers?|nm)\b", re.IGNORECASE)


def _wavelength_nm(name) -> float | None:
    """Centre wavelength (nm) stated in a band name or description, or None."""
    m = _WAVELENGTH_RE.search(str(name))
    if not m:
        return None
    v = float(m.group(1))
    return v if m.group(2).lower().startswith("n") else v * 1000.0


def load_pair(
    before: str | Path, after: str | Path, *, bands: Sequence[str] | None = None
) -> tuple[xr.DataArray, xr.DataArray]:
    """Load BEFORE and AFTER, pair their bands, and put AFTER on BEFORE's grid.

    Bands are paired by name, then by spectral role when the two files name them
    differently (``B04`` with ``R`` or ``red``, ``B08`` with ``NIR``: the aliases of
    :data:`changedet.bands.ROLE_NAMES`), then by the centre wavelength their descriptions
    state (:func:`_pair_bands`); bands without a partner are left out. Only
    when a file's bands are unnamed (``b1, b2, ...``: no band descriptions) are they
    paired by position, and then both files must have the same number of bands. The
    result carries BEFORE's band names (AFTER's when only AFTER's are named).

    A cloud-class band of either date (``CLM``, ``SCL``: see :func:`load_image`) is a mask,
    never a band to compare: pixels it marks as cloud, cloud shadow, cirrus or no data
    (AFTER's moved onto BEFORE's grid by nearest neighbour) are NaN in both results, so
    they are nodata for every method and never change. AFTER's own masked pixels are NaN
    before it is resampled (bilinear) onto BEFORE's grid, so no cloud value leaks into
    the clear pixels along a mask's edge. :func:`load_pair_masked` also returns the
    pixels so masked. When AFTER was resampled, ``after.attrs["history"]`` says from which
    CRS, pixel size and shape (absent when AFTER was already on BEFORE's grid).

    Raises
    ------
    ChangeError
        If both files name their bands and no band can be paired by name, role or
        wavelength, or
        a file's bands are unnamed and the band counts differ, or ``bands`` names a
        class band, or the class bands leave no pixel observed on both dates.
    GridError
        If AFTER does not overlap BEFORE.
    """
    b, a, _ = load_pair_masked(before, after, bands=bands)
    return b, a


def _crs_label(crs) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else repr(crs.name)


def _crs_unit(crs) -> str:
    try:
        unit = crs.axis_info[0].unit_name
    except (IndexError, AttributeError):
        return "CRS-unit"
    return {"metre": "m", "degree": "deg"}.get(unit, unit)


def load_pair_masked(
    before: str | Path, after: str | Path, *, bands: Sequence[str] | None = None
) -> tuple[xr.DataArray, xr.DataArray, np.ndarray | None]:
    """:func:`load_pair`, and the pixels its cloud-class bands took out.

    Returns
    -------
    before, after : xarray.DataArray
        As :func:`load_pair`.
    unobserved : numpy.ndarray of bool or None
        (y, x) on BEFORE's grid: True where a ``CLM``/``SCL`` band of either date hides
        a pixel that both dates have data for (every returned band finite before the
        mask), so ``valid + unobserved`` pixels are those with data on both dates. None
        when neither input has a class band (no cloud mask was applied; all False when
        one was and hid nothing).
    """
    from changedet.grid import GridSpec
    from changedet.io import reproject_to

    b, hidden_b, kinds_b, data_b = _load_image(before, bands=bands)
    try:
        a, hidden_a, kinds_a, data_a = _load_image(after, bands=bands)
    except ChangeError:
        if not bands or Path(after).is_dir() or any(_is_class_band(x) for x in bands):
            raise
        # AFTER may name the selected bands by role (R, G, B, NIR for B04, B03, B02,
        # B08): read it whole and pair by role below.
        a, hidden_a, kinds_a, data_a = _load_image(after)
    nb = [str(v) for v in b["band"].values]
    na = [str(v) for v in a["band"].values]
    if _unnamed(nb) or _unnamed(na):
        if len(nb) != len(na):
            # Name the class bands taken out: without them the counts may well match.
            def has(path, names, kinds):
                return f"{path} has bands {names}" + (
                    f" (its cloud-class band{'s' if len(kinds) > 1 else ''} {', '.join(kinds)} taken out as a mask)"
                    if kinds else "")

            hint = ""
            if kinds_b or kinds_a:
                unnamed_file = before if _unnamed(nb) else after
                hint = (f"; if {unnamed_file} holds a class band too, name its bands (band descriptions, e.g. "
                        "rio edit-info --bidx N --description CLM) so that its class band is read as a mask")
            raise ChangeError(
                f"{has(before, nb, kinds_b)} and {has(after, na, kinds_a)}: "
                f"{'both files' if _unnamed(nb) and _unnamed(na) else 'one file'} has unnamed bands "
                "(paired by position) and the counts differ; pass files with the same bands, or name them "
                f"(band descriptions such as B02, B03 or R, G, B, NIR){hint}"
            )
        names = na if _unnamed(nb) and not _unnamed(na) else nb
        b, a = b.assign_coords(band=names), a.assign_coords(band=names)
        common = names
    else:
        pairs = _pair_bands(nb, na)
        if not pairs:
            raise ChangeError(
                f"{before} has bands {nb} and {after} has bands {na}: no band of one matches a band of the "
                "other by name, role or stated wavelength (blue B/B02, green G/B03, red R/B04, NIR/B08, SWIR1/B11); "
                "name the bands alike in both files (band descriptions), or select matching bands with --bands"
            )
        if bands and len(pairs) < len(nb):
            missing = [n for n in nb if n not in dict(pairs)]
            raise ChangeError(f"{after}: has no band matching {missing} by name or role; its bands are {na}")
        common = [p[0] for p in pairs]
        b = b.sel(band=common)
        a = a.sel(band=[p[1] for p in pairs]).assign_coords(band=common)
    gb, ga = GridSpec.of(b), GridSpec.of(a)
    if not ga.same_as(gb):
        if hidden_a is not None:
            if data_a is None:
                data_a = np.isfinite(np.asarray(a.values)).all(0)
            if hidden_a.any():
                # NaN before the bilinear resampling: GDAL leaves nodata sources out of the
                # weights, so the clear pixels along the mask's edge carry no cloud.
                a = a.where(~xr.DataArray(hidden_a, dims=("y", "x")))
        # Said, not silent: the JSON of ``changedet change`` reports it (CF ``history``).
        moved_from = (f"{after} resampled (bilinear) from {_crs_label(ga.crs)}, "
                      f"{abs(ga.transform.a):.6g} x {abs(ga.transform.e):.6g} {_crs_unit(ga.crs)} pixels, "
                      f"{ga.shape[0]} x {ga.shape[1]} px, onto the grid of {before}")
        try:
            a = reproject_to(a, gb, resampling="bilinear").assign_coords(band=common)
            a.attrs["history"] = moved_from
        except GridError as exc:
            # Name the inputs: the bare message does not say which of the two is off.
            raise GridError(f"{after} does not overlap {before} (the output grid): {exc}") from None
        if hidden_a is None:
            data_a = None  # on AFTER's grid: taken from the resampled AFTER below
        else:
            # Classes are categories: nearest neighbour, never interpolated. Beyond AFTER's
            # footprint the reprojected mask is NaN, not 1: those pixels are nodata in AFTER.
            moved = reproject_to(ga.attach(np.stack([hidden_a, data_a]).astype("float32"), bands=["h", "d"]), gb,
                                 resampling="nearest")
            hidden_a, data_a = (np.asarray(moved.values) == 1)
    a = a.assign_coords(x=b.x, y=b.y)
    hidden = hidden_b if hidden_a is None else hidden_a if hidden_b is None else hidden_b | hidden_a
    if hidden is None:
        return b, a, None
    # Pixels with data on both dates before the class masks (taken on AFTER's own grid
    # when it was masked there before the resampling).
    data = ((np.isfinite(np.asarray(b.values)).all(0) if data_b is None else data_b)
            & (np.isfinite(np.asarray(a.values)).all(0) if data_a is None else data_a))
    if hidden.any():
        if hidden.all():
            raise ChangeError(
                f"{before} and {after}: their cloud bands (CLM/SCL) mark every pixel as cloud, cloud shadow, cirrus "
                "or no data on one date or the other; nothing is left to compare. Pick clearer dates"
            )
        # A pixel unseen on either date is nodata on both: no change can be seen there, and
        # a cloud edge must not enter one date's smoothing window but not the other's.
        keep = xr.DataArray(~hidden, dims=("y", "x"))
        b, a = b.where(keep), a.where(keep)
    return b, a, hidden & data


@dataclass(frozen=True)
class ChangeResult:
    """Output of :func:`detect_change`.

    Attributes
    ----------
    method, threshold_method : str
    magnitude : xarray.DataArray
        (y, x) change score (units per method, see the module table); NaN = nodata.
    threshold : float
        In the units of ``magnitude``; flagged where ``magnitude > threshold``.
    mask : xarray.DataArray
        (y, x) bool, cleaned (opening + minimum mapping unit). Never True on nodata.
    direction : xarray.DataArray or None
        CVA direction in degrees (``cva`` only).
    """

    method: str
    threshold_method: str
    magnitude: xr.DataArray
    threshold: float
    mask: xr.DataArray
    direction: xr.DataArray | None = None


#: s2cloudless probability a cloud must reach somewhere (its seed). Pixels from the
#: classifier's own 0.4 threshold (:data:`changedet.cloudmask.S2CLOUDLESS_PARAMS`) join a
#: cloud only when connected to such a seed: over hazy low-sun city scenes the
#: classifier scatters 0.4-0.7 probabilities on bright roofs (OSCD Bercy, 30 Nov 2016:
#: 16 % of a clear scene), while real clouds reach above 0.7 in their cores.
CLOUD_SEED_PROBABILITY = 0.7
#: Local solar times (h) searched for the shadow match: Sentinel-2 crosses mid-latitudes
#: between about 10:30 and 11:30 local solar time, and a 15 degree azimuth error moves
#: the shadow of a 1 km high cloud by hundreds of metres at a low winter sun.
S2_SOLAR_TIMES_H = (10.5, 11.0, 11.5)


def _reflectance_scale(da: xr.DataArray) -> float:
    # Sentinel-2 L1C/L2A products store reflectance x 10 000; a median above 1.5 in
    # the blue band cannot be a reflectance.
    v = np.asarray(da.values, dtype="float32")
    med = float(np.nanmedian(v)) if np.isfinite(v).any() else 0.0
    return 1e-4 if med > 1.5 else 1.0


def _metric_grid(grid):
    """``grid`` itself when projected; for lon/lat, an equal-shape grid in metres.

    The shadow match only uses the pixel size; for a geographic grid the north-south
    size in metres is used (east-west pixels are shorter by cos(latitude), so the east
    component of a shadow offset is approximate).
    """
    from affine import Affine

    from changedet.grid import GridSpec, utm_crs_for

    if grid.crs.is_projected:
        return grid, None
    t = grid.transform
    lon = t.c + t.a * grid.shape[1] / 2
    lat = t.f + t.e * grid.shape[0] / 2
    res = abs(t.e) * 111_320.0
    return GridSpec(utm_crs_for(lon, lat), Affine(res, 0.0, 0.0, 0.0, -res, 0.0), grid.shape), lat


def clouds_and_shadows(
    image: xr.DataArray,
    *,
    date=None,
    sun: tuple[float, float] | None = None,
    seed_probability: float = CLOUD_SEED_PROBABILITY,
) -> tuple[xr.DataArray, xr.DataArray]:
    """Cloud and cloud-shadow masks of one Sentinel-2 acquisition.

    Clouds: the s2cloudless pixels above its own threshold (0.4, after its disk average
    and dilation) that are connected to a seed above ``seed_probability``. Shadows: the
    Fmask-style match (:func:`changedet.objects.cloud_shadow.cloud_shadow_mask`), the
    cloud footprint slid away from the sun onto the darkest clear ground; for a ``date``
    the solar times :data:`S2_SOLAR_TIMES_H` are all tried and the darkest match kept.

    Parameters
    ----------
    image : xarray.DataArray
        (band, y, x) with the ten s2cloudless bands (B01 B02 B04 B05 B08 B8A B09 B10
        B11 B12) as top-of-atmosphere reflectance, either 0..1 or scaled by 10 000
        (detected from the blue band's median).
    date : datetime.date, optional
        Acquisition date; with it the sun's position is computed for the image centre
        (:data:`S2_SOLAR_TIMES_H`) and cloud shadows are masked too.
    sun : (elevation_deg, azimuth_deg), optional
        The sun's position, when known from the product metadata (overrides ``date``).
    seed_probability : float
        Cloud probability a cloud must reach in its core (:data:`CLOUD_SEED_PROBABILITY`).

    Returns
    -------
    cloud, shadow : xarray.DataArray
        (y, x) bool on the grid of ``image``; shadow is all False without ``date`` or
        ``sun`` or when no darker footprint is found. Never True on nodata.

    Raises
    ------
    ChangeError
        If a band s2cloudless needs is missing.
    """
    from scipy import ndimage

    from changedet.cloudmask import S2CLOUDLESS_BANDS, probability_to_mask, s2cloudless_probability
    from changedet.grid import GridSpec

    names = [str(b) for b in image["band"].values]
    missing = [b for b in S2CLOUDLESS_BANDS if b not in names]
    if missing:
        raise ChangeError(
            f"cloud masking needs the Sentinel-2 bands {list(S2CLOUDLESS_BANDS)}; the image lacks {missing}. "
            "Pass the full band set (e.g. a directory of all 13 bands) or leave the cloud mask off"
        )
    scale = _reflectance_scale(image.sel(band="B02"))
    refl = image.sel(band=list(S2CLOUDLESS_BANDS)).astype("float32") * scale
    prob = np.asarray(s2cloudless_probability(refl).values)
    probable = probability_to_mask(prob) > 0
    seeds = probability_to_mask(prob, threshold=seed_probability) > 0
    lab, _ = ndimage.label(probable, structure=np.ones((3, 3), bool))
    keep = np.unique(lab[seeds & probable])
    cloud = np.isin(lab, keep[keep > 0])
    shadow = np.zeros_like(cloud)
    if cloud.any() and (sun is not None or date is not None):
        from changedet.objects.cloud_shadow import cloud_shadow_mask
        from changedet.simulate.sun import sun_position

        grid, lat = _metric_grid(GridSpec.of(image))
        if lat is None:
            import pyproj

            g = GridSpec.of(image)
            t = g.transform
            tr = pyproj.Transformer.from_crs(g.crs, 4326, always_xy=True)
            lat = tr.transform(t.c + t.a * g.shape[1] / 2, t.f + t.e * g.shape[0] / 2)[1]
        vis = [b for b in ("B02", "B03", "B04") if b in names]
        bright = np.asarray((image.sel(band=vis).astype("float32") * scale).mean("band").values, dtype="float32")
        ref = float(np.nanmedian(bright[~cloud])) if (~cloud).any() else np.nan
        suns = [sun] if sun is not None else [sun_position(date, lat, local_solar_time_h=h) for h in S2_SOLAR_TIMES_H]
        best, best_mask = np.inf, None
        for el, az in suns:
            sh = cloud_shadow_mask(bright, cloud, grid, sun_azimuth_deg=az, sun_elevation_deg=el)
            if sh.any():
                # The darkest matched footprint is the shadow (Fmask's criterion).
                r = float(np.nanmedian(bright[sh])) / max(ref, 1e-6)
                if r < best:
                    best, best_mask = r, sh
        if best_mask is not None:
            shadow = best_mask & ~cloud
    valid = np.isfinite(prob)
    like = image.isel(band=0, drop=True)
    return like.copy(data=cloud & valid).rename("cloud"), like.copy(data=shadow & valid).rename("cloud_shadow")


def unobserved_mask(image: xr.DataArray, *, date=None, sun: tuple[float, float] | None = None,
                    seed_probability: float = CLOUD_SEED_PROBABILITY) -> xr.DataArray:
    """Pixels of one Sentinel-2 acquisition that show no ground: cloud or cloud shadow.

    Parameters as :func:`clouds_and_shadows`. Returns (y, x) bool; OR the masks of the
    two dates for :func:`detect_change`'s ``unobserved``.
    """
    cloud, shadow = clouds_and_shadows(image, date=date, sun=sun, seed_probability=seed_probability)
    return (cloud | shadow).rename("unobserved")


def _robust_scale_np(d: np.ndarray) -> tuple[float, float]:
    v = d[np.isfinite(d)]
    if v.size == 0:
        return 0.0, 1.0
    med = float(np.median(v))
    mad = float(np.median(np.abs(v - med))) * 1.4826
    return med, mad


def change_score(
    before: xr.DataArray, after: xr.DataArray, method: str, *, smooth: int = 1, unobserved=None
) -> tuple[xr.DataArray, dict]:
    """Change magnitude map of ``method`` (see the module table) and extras.

    Parameters
    ----------
    before, after : xarray.DataArray
        (band, y, x) on the same grid, numpy or dask.
    method : str
        One of :data:`METHODS`.
    smooth : int, optional
        Side in pixels of a NaN-aware box mean applied to every band of both dates
        before scoring (:func:`changedet.kernels.change.box_mean`); 1 (default) = none.
        3 gives each pixel its 3x3 neighbourhood as context, which on OSCD raised the
        pooled F1 of every method (docs/oscd.md). The chi-square calibration of IR-MAD
        is re-estimated from the smoothed data, so it stays valid.
    unobserved : xarray.DataArray or ndarray of bool, optional
        (y, x) True where either date shows no ground (clouds, shadows: see
        :func:`unobserved_mask`). Those pixels are nodata for the scene statistics
        (IR-MAD's correlations, z-score scales, thresholds) and NaN in the magnitude.

    Returns ``(magnitude, extras)``; extras holds ``direction`` for cva and ``dof`` for
    irmad. NaN in any band of either date gives NaN (nodata), never change.
    """
    from changedet import kernels as K
    from changedet.kernels.change import box_mean

    method = str(method).lower()
    if method not in METHODS:
        raise ChangeError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if int(smooth) != smooth or smooth < 1 or smooth % 2 == 0:
        raise ChangeError(f"smooth={smooth!r} must be a positive odd window side in pixels (1 = off, 3, 5, ...)")
    # Before masking and smoothing drop the attributes: the files, for error messages.
    sources = (before.attrs.get("source", "BEFORE"), after.attrs.get("source", "AFTER"))
    names = [str(b) for b in before["band"].values] if "band" in before.coords else []
    hidden = None
    if unobserved is not None:
        hidden = np.asarray(getattr(unobserved, "values", unobserved), dtype=bool)
        if hidden.shape != tuple(before.shape[-2:]):
            raise ChangeError(f"unobserved mask shape {hidden.shape} differs from the image shape "
                              f"{tuple(before.shape[-2:])}; compute it on BEFORE's grid")
        keep = xr.DataArray(~hidden, dims=before.dims[-2:])
        before, after = before.where(keep), after.where(keep)
    if smooth > 1:
        before = box_mean(before, size=int(smooth))
        after = box_mean(after, size=int(smooth))
    extras: dict = {}
    if method == "diff":
        d = K.band_diff(before, after)
        mag = abs(d).mean("band", skipna=False)
    elif method == "cva":
        mag = K.cva(before, after)
        extras["direction"] = K.cva_direction(before, after)
    elif method == "logratio":
        # Reflectance / DN can be 0 (fill); eps in input units keeps the ratio finite.
        lr = K.log_ratio(before, after, eps=1e-3)
        mag = abs(lr).mean("band", skipna=False)
    elif method == "irmad":
        from changedet.kernels.irmad import ConstantBandError

        try:
            res = K.irmad(before, after)
        except ConstantBandError as exc:
            src = sources[0] if exc.date == "before" else sources[1]
            flat = list(exc.bands) or [f"band {i + 1}" for i in exc.indices]
            keep = [n for n in names if n not in flat]
            what = (f"band {flat[0]} is constant ({exc.value:.6g} in every valid pixel)" if len(flat) == 1
                    else f"bands {', '.join(flat)} are constant (no spread over the valid pixels)")
            fix = (f"drop {'it' if len(flat) == 1 else 'them'} with --bands {','.join(keep)}"
                   if len(keep) >= 2 else "too few bands with spread are left for it")
            raise ChangeError(
                f"{src}: {what}, and IR-MAD cannot use a band without spread; {fix}, or use --method cva / diff"
            ) from None
        mag = res.chi2
        extras["dof"] = res.bands
        extras["p_nochange"] = res.p_nochange
    else:  # zscore
        d = K.band_diff(before, after)
        zs = []
        for b in d["band"].values:
            db = d.sel(band=b)
            med, mad = _robust_scale_np(np.asarray(db.values))
            zs.append((db - med) / max(mad, 1e-12))
        z = xr.concat(zs, dim="band")
        mag = np.sqrt((z**2).mean("band", skipna=False))
    if hidden is not None:
        # The NaN-aware box mean fills hidden pixels from clear neighbours; they stay nodata.
        mag = mag.where(xr.DataArray(~hidden, dims=mag.dims[-2:]))
    return mag.rename(method), extras


def _threshold(mag: xr.DataArray, how: str, extras: dict, *, k: float, alpha: float) -> float:
    from changedet import kernels as K

    if how == "otsu":
        return K.otsu(mag)
    if how == "ki":
        return K.kittler_illingworth(mag)
    if how == "kilog":
        # KI on log(1 + magnitude): a chi-square-like magnitude is skewed with a long
        # tail that KI's two-Gaussian model fits badly in linear units (on OSCD linear
        # KI put the IR-MAD split among the few extreme outliers in every city).
        return K.kittler_illingworth(mag, log=True)
    if how == "kmad":
        return K.k_mad(mag, k=k)
    if how == "chi2":
        if "dof" not in extras:
            raise ChangeError("the chi2 threshold applies to --method irmad only; use otsu, ki or kmad")
        return K.chi2_threshold(extras["dof"], alpha=alpha)
    try:
        return float(how)
    except ValueError:
        raise ChangeError(f"unknown threshold {how!r}; choose one of {', '.join(THRESHOLDS)} or a number") from None


def detect_change(
    before: xr.DataArray,
    after: xr.DataArray,
    *,
    method: str = "irmad",
    threshold: str | float | None = None,
    k: float = 3.0,
    alpha: float = 0.01,
    min_area_px: int = 9,
    opening_radius_px: int = 1,
    smooth: int = 1,
    unobserved=None,
) -> ChangeResult:
    """Change magnitude, automatic threshold and cleaned change mask of two images.

    Parameters
    ----------
    before, after : xarray.DataArray
        (band, y, x) on the same grid (see :func:`load_pair`), numpy or dask.
    method : {"diff", "cva", "irmad", "logratio", "zscore"}
    threshold : {"otsu", "ki", "kilog", "kmad", "chi2"} or float, optional
        Default per method (see the module table; KI = Kittler-Illingworth; ``kilog`` =
        KI on ``log1p(magnitude)``, the best automatic threshold for ``irmad`` on OSCD).
    k : float
        For ``kmad``: robust standard deviations above the median (default 3).
    alpha : float
        For ``chi2``: per-pixel false-alarm probability (default 0.01).
    min_area_px, opening_radius_px : int
        Minimum mapping unit (pixels) and opening radius, see
        :func:`changedet.kernels.change_mask`.
    smooth : int
        Box-mean window side applied to both images first (1 = none), see
        :func:`change_score`.
    unobserved : xarray.DataArray or ndarray of bool, optional
        (y, x) pixels without ground on either date (:func:`unobserved_mask` of each
        date, OR-ed): left out of the statistics, NaN in the magnitude, never change.
    """
    mag, extras = change_score(before, after, method, smooth=smooth, unobserved=unobserved)
    return finish_change(mag, extras, method=method, threshold=threshold, k=k, alpha=alpha,
                         min_area_px=min_area_px, opening_radius_px=opening_radius_px)


def finish_change(
    magnitude: xr.DataArray,
    extras: dict,
    *,
    method: str,
    threshold: str | float | None = None,
    k: float = 3.0,
    alpha: float = 0.01,
    min_area_px: int = 9,
    opening_radius_px: int = 1,
) -> ChangeResult:
    """Threshold and clean a magnitude from :func:`change_score` (see :func:`detect_change`).

    Lets several thresholds be tried on one magnitude without recomputing it.
    """
    from changedet import kernels as K

    method = str(method).lower()
    how = str(threshold if threshold is not None else _DEFAULT_THRESHOLD[method]).lower()
    thr = _threshold(magnitude, how, extras, k=k, alpha=alpha)
    mask = K.change_mask(magnitude, threshold=thr, min_area_px=min_area_px, opening_radius_px=opening_radius_px)
    return ChangeResult(method, how, magnitude, float(thr), mask, extras.get("direction"))


def changed_area_m2(mask: xr.DataArray) -> float:
    """Flagged ground area in m^2 for a projected or a geographic (lon/lat) grid.

    Geographic grids use the geodesic area of each pixel row on the CRS ellipsoid.
    Projected grids use pixels x pixel area in metres (any linear unit), times the
    ground/map area ratio of each block of
    :data:`changedet.polygons.AREA_BLOCK_PX` pixels where it departs from 1 by more
    than :data:`changedet.polygons.AREAL_SCALE_TOLERANCE`
    (:func:`changedet.polygons.ground_area_factors`): a Web Mercator pixel (EPSG:3857,
    as Sentinel Hub and EO Browser export) covers about cos^2(lat) of its map area on
    the ground (0.67 at 35 N, 0.25 at 60 N). UTM and national grids (areal scale
    0.9992-1.002) are left as map area.

    :func:`changedet.kernels.changed_area_m2` is the planar part of this (map m^2 of a
    projected grid) and is called for it; both count pixels by one rule,
    :func:`changedet.kernels.threshold.changed_pixels` (True, or non-zero finite: NaN is
    nodata, not change). A lazy (dask) mask is computed once.

    Parameters
    ----------
    mask : xarray.DataArray
        (y, x) mask (leading dims of size 1 allowed) with coordinates and a CRS.

    Returns
    -------
    float
        Changed ground area in m^2.

    Raises
    ------
    GridError
        If the CRS is neither projected nor geographic.
    """
    import pyproj

    from changedet.grid import GridSpec
    from changedet.kernels import changed_area_m2 as planar
    from changedet.kernels.threshold import changed_pixels
    from changedet.polygons import AREA_BLOCK_PX, ground_area_factors

    grid = GridSpec.of(mask)
    if grid.crs.is_projected:
        f = ground_area_factors(grid)
        if f is not None and mask.chunks is not None:
            # One pass over a lazy mask for both the total and the block counts below.
            mask = mask.compute()
        area = planar(mask)
        if area == 0.0 or f is None:
            return area
        m = changed_pixels(mask.squeeze([d for d in mask.dims if d not in ("y", "x")], drop=True))
        counts = m.astype("int64").coarsen(y=AREA_BLOCK_PX, x=AREA_BLOCK_PX, boundary="pad").sum()
        counts = np.asarray(counts.values, dtype="float64")
        n = counts.sum()
        return float(area * np.sum(counts * f) / n) if n else 0.0
    if not grid.crs.is_geographic:
        raise GridError(f"cannot compute areas in CRS {grid.crs.name!r}; reproject to UTM first")
    geod = grid.crs.get_geod() or pyproj.Geod(ellps="WGS84")
    t = grid.transform
    y0 = t.f + np.arange(grid.shape[0]) * t.e
    y1 = y0 + t.e
    x0, x1 = t.c, t.c + t.a
    row_area = np.array(
        [abs(geod.polygon_area_perimeter([x0, x1, x1, x0], [a, a, b, b])[0]) for a, b in zip(y0, y1)]
    )
    # The planar kernel's rule: NaN (nodata in a 0/1 float layer) is not change.
    per_row = np.asarray(changed_pixels(mask).sum("x").values, dtype="float64")
    return float(np.sum(per_row * row_area))


def score_masks(pred, truth, valid=None) -> dict:
    """Precision, recall, F1 and counts of a predicted change mask against a truth mask.

    ``pred`` and ``truth`` are boolean arrays of one shape; ``valid`` (optional) limits
    the pixels scored. F1 is 0 when precision + recall is 0.
    """
    p = np.asarray(pred, dtype=bool)
    t = np.asarray(truth, dtype=bool)
    if p.shape != t.shape:
        raise ChangeError(f"prediction shape {p.shape} differs from truth shape {t.shape}")
    if valid is not None:
        v = np.asarray(valid, dtype=bool)
        p, t = p[v], t[v]
    tp = int(np.sum(p & t))
    fp = int(np.sum(p & ~t))
    fn = int(np.sum(~p & t))
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {"tp": tp, "fp": fp, "fn": fn, "precision": prec, "recall": rec, "f1": f1}

"""Raster I/O: read any GDAL raster into a georeferenced DataArray, write GeoTIFF/COG, reproject."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
import uuid
from glob import escape as glob_escape
from pathlib import Path
from typing import Sequence

import numpy as np
import xarray as xr

from changedet.errors import ChangedetError, GridError, RasterError
from changedet.grid import GridSpec, crs_of, with_crs


def _unreadable(path: Path, exc: BaseException) -> RasterError:
    return RasterError(f"{path}: cannot be read as a raster ({exc.__class__.__name__}: {exc}); "
                       "check that the file is a complete GeoTIFF, COG or JPEG2000")


def _raised_by_raster_library(exc: BaseException) -> bool:
    """True for an error of rasterio/GDAL reading the file, False for one of the caller's code.

    rasterio reports a corrupt block as ``RasterioIOError`` (or a raw ``CPLE_*`` error
    from GDAL); a plain ``OSError`` is the driver's only when rasterio raised it (the
    caller's own file handling raises ``OSError`` too, and is not a corrupt raster).
    """
    from rasterio._err import CPLE_BaseError
    from rasterio.errors import RasterioError

    if isinstance(exc, (RasterioError, CPLE_BaseError)):
        return True
    if not isinstance(exc, OSError):
        return False
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "") if tb is not None else ""
    return module == "rasterio" or module.startswith("rasterio.")


@contextlib.contextmanager
def reading(path: str | Path):
    """Turn an error of rasterio/GDAL reading ``path`` inside the block into a
    :class:`RasterError` naming ``path``; any other error passes through unchanged.

    For code that reads several open files in one block (:func:`open_raster` alone
    cannot tell which of them a read error came from)."""
    try:
        yield
    except Exception as exc:
        if isinstance(exc, ChangedetError) or not _raised_by_raster_library(exc):
            raise
        raise _unreadable(Path(path), exc) from None


def _no_crs_message(path: Path, src) -> str:
    """The fix for a raster without CRS; without a geotransform too, the corners are needed."""
    if src.transform.is_identity and not src.gcps[0]:
        # No world file, no geotransform, no GCPs (a photo, a screenshot, a PNG export):
        # the CRS alone would not place it; its corner coordinates are needed as well.
        head = (f"{path}: has no CRS and no georeferencing (no geotransform, world file or ground control "
                "points); georeference it with its corner coordinates, e.g. ")
        if path.suffix.lower() in (".tif", ".tiff"):
            return head + f"gdal_edit.py -a_srs EPSG:xxxx -a_ullr ULX ULY LRX LRY {path.name}"
        return head + (f"gdal_translate -of GTiff -a_srs EPSG:xxxx -a_ullr ULX ULY LRX LRY {path.name} "
                       f"{path.stem}_georef.tif, and pass the GeoTIFF")
    return f"{path}: has no CRS; georeference it (e.g. gdal_edit.py -a_srs EPSG:xxxx) first"


@contextlib.contextmanager
def open_raster(path: str | Path):
    """Open a georeferenced raster with rasterio, with :func:`read_raster`'s errors.

    Yields the open ``rasterio`` dataset (for windowed reads). A missing file, a file
    without CRS, or one that cannot be opened raises :class:`RasterError` naming the
    file, and so does an error of rasterio/GDAL reading it inside the block (a corrupt
    or truncated block). Any other error raised in the block (the caller's own code,
    changedet errors) passes through unchanged. A block that reads several files
    (nested ``open_raster``) reads each inside :func:`reading` of its own path, or a read
    error of the outer file is blamed on the inner one.
    """
    import rasterio

    path = Path(path)
    if not path.exists():
        raise RasterError(f"{path}: no such file; check the path")
    try:
        # A plain JPEG/PNG opens with NotGeoreferencedWarning; the error below says it
        # better, and the command line silences the warning (never here: threads).
        src = rasterio.open(path)
    except Exception as exc:  # rasterio raises several types for corrupt files
        raise _unreadable(path, exc) from None
    with src:
        try:
            crs = src.crs
        except Exception as exc:
            raise _unreadable(path, exc) from None
        if crs is None:
            raise RasterError(_no_crs_message(path, src))
        with reading(path):
            yield src


def band_names(descriptions) -> list[str]:
    """Band names of a raster file from its band descriptions (``src.descriptions``).

    The one rule for every reader of files (:func:`read_raster`, the co-registration of
    files, the CLI's band checks): a band's description when it has one, else
    ``b<n>`` with ``n`` its 1-based band number, so that a band is called the same
    whichever reader opened the file.

    Parameters
    ----------
    descriptions : sequence of str or None
        One entry per band, in band order; None or "" for a band without description.

    Returns
    -------
    list of str
        The cloud-class bands ``CLM`` and ``SCL`` in upper case whatever the file's case
        (``scl`` from a GDAL export): every mask reader looks them up by those names.
    """
    names = [d if d else f"b{i + 1}" for i, d in enumerate(descriptions)]
    return [n.strip().upper() if n.strip().upper() in ("CLM", "SCL") else n for n in names]


def data_band_indexes(src) -> list[int]:
    """0-based indexes of the bands of open dataset ``src`` that hold data, not alpha.

    An alpha band (GDAL colour interpretation Alpha, as ``gdalwarp -dstalpha`` and QGIS
    exports write) is the validity mask of the other bands: reading it as a band would
    make it a "band 4" full of 255. A file whose every band is alpha keeps them all.
    """
    from rasterio.enums import ColorInterp

    try:
        interp = list(src.colorinterp)
    except Exception:  # a driver without colour interpretation: every band is data
        return list(range(src.count))
    keep = [i for i, ci in enumerate(interp) if ci != ColorInterp.alpha or not _is_mask_band(src, i)]
    return keep or list(range(src.count))


def _alpha_kept_as_data(src, keep: list[int]) -> bool:
    """Whether a band GDAL labels alpha is among the data bands ``keep`` (not a mask)."""
    from rasterio.enums import ColorInterp

    try:
        interp = list(src.colorinterp)
    except Exception:
        return False
    return any(interp[i] == ColorInterp.alpha for i in keep)


#: Descriptions an alpha-labelled band may carry and still be a mask (any other names data).
_MASK_DESCRIPTIONS = ("", "alpha", "mask", "a")


def alpha_candidates(src) -> list[int]:
    """0-based indexes of the bands of open dataset ``src`` GDAL labels alpha with no other
    description, from metadata only: each may be a mask (:func:`_is_mask_band` decides from
    its pixels)."""
    from rasterio.enums import ColorInterp

    try:
        interp = list(src.colorinterp)
    except Exception:  # a driver without colour interpretation: no alpha band
        return []
    return [i for i, ci in enumerate(interp)
            if ci == ColorInterp.alpha and (src.descriptions[i] or "").strip().lower() in _MASK_DESCRIPTIONS]


def _is_mask_band(src, i: int) -> bool:
    """Whether band ``i`` (labelled alpha) really is a mask: GDAL labels band 4 of every
    4-band 8-bit GeoTIFF written without a photometric tag alpha, NIR included. A mask
    has no other description than alpha/mask and holds only 0 and full scale (1, 255,
    65535 or the type's maximum)."""
    desc = (src.descriptions[i] or "").strip().lower()
    if desc not in _MASK_DESCRIPTIONS:
        return False
    h, w = src.height, src.width
    sample = src.read(i + 1, out_shape=(min(h, 512), min(w, 512)))
    full = [1, 255, 65535] + ([np.iinfo(sample.dtype).max] if np.issubdtype(sample.dtype, np.integer) else [])
    return bool(np.isin(sample, [0, *full]).all())


def _read_masked(src) -> tuple[np.ndarray, np.ndarray]:
    """``(stored, data)``: a dataset's values as stored, and as float32 with NaN where it has no data.

    "No data" is what GDAL's mask bands say (``read(masked=True)``). Bands whose only
    mask is their nodata value (or that have none) are masked here, from the raw values,
    with GDAL's comparison (:func:`_near_nodata`; NaN nodata matches NaN): GDAL would build a mask band block by block for them, which costs 2-3x the read
    itself for a float file (4 x 1024^2 float32: 36 ms against 11 ms). Internal, ``.msk``
    and alpha masks, and an integer band's nodata its type cannot hold exactly (GDAL's own
    rounding rules apply), stay GDAL's.
    """
    from rasterio.enums import MaskFlags

    flags = [list(f) for f in src.mask_flag_enums]
    simple = all(f in ([MaskFlags.all_valid], [MaskFlags.nodata]) for f in flags)
    if simple:
        simple = all(_holds(nd, np.dtype(dt)) for nd, dt in zip(src.nodatavals, src.dtypes) if nd is not None)
    if not simple:
        stored = src.read(masked=True)
        return np.ma.getdata(stored), np.ma.filled(stored.astype("float32"), np.float32(np.nan))
    raw = src.read()
    data = raw.astype("float32")
    for j, f in enumerate(flags):
        nd = src.nodatavals[j]
        if f != [MaskFlags.nodata] or nd is None:
            continue
        if np.isnan(nd):
            if raw.dtype.kind == "f":
                data[j][np.isnan(raw[j])] = np.nan
            continue
        data[j][_near_nodata(raw[j], nd)] = np.nan
    return raw, data


def _near_nodata(band: np.ndarray, nd: float) -> np.ndarray:
    """Where ``band`` is the nodata value ``nd`` as GDAL's nodata mask decides it.

    Integers: equal. Floats: GDAL's ``ARE_REAL_EQUAL`` in the band's type, equal or within
    2 float32 epsilons relative (``|v - n| < eps * |v + n| * 2``), so a pixel a few ulps from
    the tag (an ESRI file's -FLT_MAX against its rounded tag, LERC's bounded error) is no
    data, as it always was through GDAL's mask.
    """
    t = band.dtype.type
    n = t(nd)
    if band.dtype.kind in "iu":
        return band == n
    with np.errstate(over="ignore", invalid="ignore"):
        return (band == n) | (np.abs(band - n) < t(np.finfo(np.float32).eps) * np.abs(band + n) * t(2))


def _holds(nd: float, dtype: np.dtype) -> bool:
    """Whether a band of ``dtype`` holds the nodata value ``nd`` exactly enough to compare as GDAL does.

    Integer types: a whole number in range. Float types: NaN, or a value within range (a
    float32 band's 1e40 would round to inf).
    """
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return not np.isnan(nd) and float(nd).is_integer() and info.min <= nd <= info.max
    if dtype.kind == "f":
        return bool(np.isnan(nd) or abs(nd) <= np.finfo(dtype).max)
    return False  # complex and other types: GDAL's masks


def read_raster(path: str | Path, *, bands: list[str] | None = None,
                as_stored: Sequence[str] = ()) -> xr.DataArray:
    """Read a GeoTIFF / COG / JPEG2000 as ``DataArray(band, y, x)`` (float32, NaN for nodata).

    Band names are ``bands`` when given (one per band of the file), else those of
    :func:`band_names` (the file's band descriptions, ``b1, b2, ...`` for bands without
    one). Alpha bands are not returned: they mask the data bands (NaN where alpha is 0),
    see :func:`data_band_indexes`; ``bands`` may name every band of the file (the alpha's
    name is dropped) or the data bands only. Bands named in ``as_stored`` (any case) hold
    their values as stored, with neither the file's nodata nor its masks applied: a
    GeoTIFF's nodata applies to every band, and a class band such as ``CLM`` (0 = clear)
    says itself where it has no data. Raises :class:`RasterError` naming the file for
    unreadable, corrupt or ungeoreferenced input.
    """
    import rioxarray  # noqa: F401  registers the .rio accessor

    path = Path(path)
    # One open: metadata and pixels from the same handle (opening costs about as much as
    # reading a small window, and a second open doubled the cost of small files).
    with open_raster(path) as src:
        descriptions = list(src.descriptions)
        units = [u or "" for u in src.units]
        transform, crs = src.transform, src.crs
        if transform.b or transform.d:
            raise RasterError(f"{path}: has a rotated or sheared geotransform; warp it to a north-up grid "
                              "first (gdalwarp -t_srs <its CRS>)")
        # masked: nodata (per band), internal mask and alpha bands all become NaN, as
        # with rioxarray's masked=True; the mask comes from the raw values as GDAL compares
        # them (before the float32 cast), see _read_masked.
        stored, data = _read_masked(src)
        # The raw values (no second read) only when asked for.
        stored = stored if as_stored else None
        keep = data_band_indexes(src)
        if _alpha_kept_as_data(src, keep):
            # GDAL masks the other bands with a band it labels alpha (band 4 of every 4-band
            # 8-bit GeoTIFF without a photometric tag); kept as data (NIR), its zeros (dark
            # water) are not "no data". Only the bands GDAL masked *by that alpha* are read
            # raw (an internal or .msk mask still applies), masked by their nodata and where
            # every band is 0 (the fill under a transparent pixel; dark water keeps R, G, B).
            from rasterio.enums import MaskFlags

            raw = src.read()
            unmasked = False
            for j in range(src.count):
                if MaskFlags.alpha not in src.mask_flag_enums[j]:
                    continue
                band = raw[j].astype("float32")
                nd = src.nodatavals[j]
                if nd is not None:
                    band[raw[j] == nd] = np.nan
                data[j] = band
                unmasked = True
            if unmasked:
                data[:, np.all(raw == 0, axis=0)] = np.nan
        if len(keep) < data.shape[0]:
            # GDAL makes an alpha band the mask of the others only for gray+alpha and
            # RGB+alpha 8/16-bit files; apply it here for every layout (R, G, B, NIR + alpha...).
            alpha = [i for i in range(data.shape[0]) if i not in keep]
            hidden = np.any(src.read([i + 1 for i in alpha]) == 0, axis=0)
            data[:, hidden] = np.nan
    names = list(bands) if bands else band_names(descriptions)
    if len(names) == data.shape[0] and len(keep) < data.shape[0]:
        names = [names[i] for i in keep]
    elif len(names) != len(keep):
        raise RasterError(f"{path}: has {len(keep)} bands but {len(names)} band names were given"
                          + (f" (its {data.shape[0] - len(keep)} alpha band(s) are read as the validity mask, "
                             "not as data)" if len(keep) < data.shape[0] else ""))
    if as_stored:
        wanted = {str(n).strip().upper() for n in as_stored}
        for j, n in enumerate(names):
            if str(n).strip().upper() in wanted:
                data[keep[j]] = stored[keep[j]].astype("float32")
    if len(keep) < data.shape[0]:
        # The alpha band is the mask of the others (already NaN where it is 0), never a data band.
        data = data[keep]
        descriptions = [descriptions[i] for i in keep]
        units = [units[i] for i in keep]
    rows, cols = data.shape[1:]
    # Pixel-centre coordinates, as rioxarray (and GridSpec) derive them from the transform.
    x = transform.c + (np.arange(cols) + 0.5) * transform.a
    y = transform.f + (np.arange(rows) + 0.5) * transform.e
    attrs = {}
    if any(descriptions):
        attrs["long_name"] = tuple(d or "" for d in descriptions) if len(descriptions) > 1 else descriptions[0]
    if any(units):
        attrs["units"] = units[0] if len(set(units)) == 1 else tuple(units)
    da = xr.DataArray(data, dims=("band", "y", "x"), coords={"band": list(names), "y": y, "x": x}, attrs=attrs)
    da = da.rio.write_crs(crs.to_wkt(), inplace=True)
    return da.rio.write_transform(transform, inplace=True)


#: Metadata items stating a product's reflectance quantification (reflectance = (DN + offset)
#: / quantification), as Sentinel-2 L2A (MTD_MSIL2A.xml, BOA_*) and L1C (RADIO_*) carry them
#: and as GDAL's SENTINEL2 driver and exporters copy them into the GeoTIFF's tags.
QUANTIFICATION_TAGS = ("BOA_QUANTIFICATION_VALUE", "QUANTIFICATION_VALUE", "L2A_QUANTIFICATION_VALUE")
ADD_OFFSET_TAGS = ("BOA_ADD_OFFSET", "RADIO_ADD_OFFSET")


def read_scaling(path: str | Path) -> dict:
    """The value scaling a raster's own metadata states, without reading its pixels.

    Returns ``{"dtype": str, "bands": [{"name", "scale", "offset", "quantification",
    "add_offset"}, ...]}`` for the data bands (alpha bands left out, names as
    :func:`read_raster` gives them): ``scale``/``offset`` are GDAL's (physical value =
    stored x scale + offset; 1 and 0 when the file has none), ``quantification`` and
    ``add_offset`` the Sentinel-2 items of :data:`QUANTIFICATION_TAGS` /
    :data:`ADD_OFFSET_TAGS` (the band's own tag, else the file's; None when absent or not
    a number). Raises :class:`RasterError` naming the file when it cannot be opened.
    """
    def number(tags: dict, keys) -> float | None:
        for k in keys:
            if k in tags:
                try:
                    return float(tags[k])
                except (TypeError, ValueError):
                    return None
        return None

    with open_raster(path) as src:
        keep = data_band_indexes(src)
        names = band_names(list(src.descriptions))
        if len(names) == src.count:
            names = [names[i] for i in keep]
        ds_tags = {str(k).upper(): v for k, v in src.tags().items()}
        bands = []
        for j, i in enumerate(keep):
            bt = {str(k).upper(): v for k, v in src.tags(i + 1).items()}
            q = number(bt, QUANTIFICATION_TAGS)
            a = number(bt, ADD_OFFSET_TAGS)
            bands.append({"name": names[j] if j < len(names) else f"b{i + 1}",
                          "scale": float(src.scales[i]) if src.scales[i] is not None else 1.0,
                          "offset": float(src.offsets[i]) if src.offsets[i] is not None else 0.0,
                          "quantification": q if q is not None else number(ds_tags, QUANTIFICATION_TAGS),
                          "add_offset": a if a is not None else number(ds_tags, ADD_OFFSET_TAGS)})
        return {"dtype": str(src.dtypes[keep[0]] if keep else src.dtypes[0]), "bands": bands}


class OutputPathError(ChangedetError):
    """An output path cannot be written: it is a directory, or its folder cannot be
    created or written to."""


def _through_link(path: Path, what: str) -> Path:
    """The file an output ``path`` that is a symbolic link writes to: the end of its chain.

    Raises :class:`OutputPathError` (naming ``what``) for a loop of links, and for a
    dangling link, as GNU ``cp`` does ("not writing through dangling symlink"): its target
    may lie on a disk that is not mounted, and writing it would make folders there.
    """
    target = Path(os.path.realpath(path))
    if target.is_symlink():
        raise OutputPathError(f"{what}: is a loop of symbolic links; point it at a file or remove it")
    if not target.exists():
        raise OutputPathError(f"{what}: not writing through dangling symbolic link (to {target}, which does not "
                              "exist); make the target file first, point the link at an existing file, or remove it")
    return target


def check_output_path(path: str | Path, *, option: str = "--out", suffix: str = ".tif") -> Path:
    """Refuse an output file path that cannot be written, before any work is done.

    Parameters
    ----------
    path : path
        The file to be written (its folders may not exist yet: the write makes them).
    option : str
        How the caller names the path in messages (the CLI flag, e.g. ``--out``).
    suffix : str
        File extension used in the example name the message suggests.

    Returns
    -------
    Path
        ``path`` as a :class:`~pathlib.Path`.

    Raises
    ------
    OutputPathError
        ``path`` is a URL, an existing directory, a parent of it is an existing file, or
        its nearest existing folder is not writable. For a symbolic link, the checks are
        on the file it points at (:func:`atomic_write` replaces that file, in its own
        folder), and a dangling link or a loop of links is refused.
    """
    import re

    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:/", str(path)):
        # Path() would turn s3://bucket/x.tif into a local folder "s3:".
        raise OutputPathError(f"{option} {path}: is a URL; {option} writes a local file (copy it to the "
                              "object store afterwards, or use a command's --store option)")
    path = given = Path(path)
    if path.is_symlink():
        path = _through_link(path, f"{option} {path}")
    if path.is_dir():
        raise OutputPathError(f"{option} {given}: is a directory; give a file name (e.g. {given / 'result'}"
                              f"{suffix})")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputPathError(f"{option} {given}: {parent} is a file, not a folder; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"{option} {given}: the folder {parent} is not writable; choose a writable folder")
    # Missing folders are made by the write (:func:`atomic_write`), not here: a command
    # that then fails on its inputs leaves no empty folders behind.
    return given


def atomic_write(path: str | Path, write, *, option: str | None = None) -> Path:
    """Call ``write(tmp)`` on a temporary name beside ``path``, then move it into place.

    A crash or a refused path never leaves a half-written file where a good one was, and
    never leaves the temporary file behind; an existing file at ``path`` is only replaced
    by a complete one. A symbolic link at ``path`` is written through, as ``cp`` onto a
    link does, rather than the link being replaced by a regular file: its target (the
    end of a chain of links) is replaced atomically, in its own folder, and the link
    stays a link. The replacement keeps the target's permission bits, and its owner and
    group where the process may set them (root, or a group of its own); being a new
    file, it loses the target's ACLs and extended attributes, and hard links to the old
    file keep the old content. ``path`` is returned as given.

    Raises
    ------
    OutputPathError
        A fault of the path itself: a directory, a folder that cannot be made or written,
        a name too long, a loop of links, a dangling link (its target's folder is never
        made); the message names ``option`` (the CLI flag) when given. Other errors (a
        full disk, an I/O error, a failed read of a lazy input) propagate as they are: the
        flows retry those.
    """
    from rasterio.errors import RasterioError

    given = path = Path(path)
    what = f"{option} {path}" if option else str(path)
    keep = None
    if path.is_symlink():
        # os.replace onto a link replaces the link itself; the user meant the file it
        # points at (an output kept on another disk, a "latest.tif" in a served folder).
        path = _through_link(path, what)
        if not path.is_dir():
            keep = path.stat()
    try:
        if path.is_dir():
            raise IsADirectoryError(21, "is a directory")
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(f"{what}: cannot be written ({exc.strerror or exc}); give a file name in a "
                              "writable folder") from None
    # A name of its own: two writers of one output must not share a temporary file (not
    # made by mkstemp, whose 0600 mode the output would keep), cut so that it stays within
    # the 255-byte file-name limit whenever the output's own name does.
    stem = path.name.encode()[:200].decode(errors="ignore")
    tmp = path.with_name(f".{stem}.{uuid.uuid4().hex[:12]}.tmp")
    # A writer killed outright (out of memory, a lost Dask worker) leaves its temporary
    # file; each retry would add one more full-size file. Those over a day old go.
    with contextlib.suppress(OSError):
        for old in path.parent.glob(f".{glob_escape(stem)}.*.tmp"):
            if time.time() - old.stat().st_mtime > 86400:
                old.unlink()
    # Faults of the path itself; a full disk, an I/O error or a failed read of a lazy
    # input propagate as they are (the flows retry those: transient, not the user's path).
    path_faults = {errno.EACCES, errno.EPERM, errno.EROFS, errno.EISDIR, errno.ENOTDIR, errno.ENAMETOOLONG}
    try:
        write(tmp)
        if keep is not None:
            _keep_mode(tmp, keep)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, RasterioError) or exc.errno not in path_faults:
            raise
        raise OutputPathError(f"{what}: cannot be written ({exc.strerror or exc}); give a file name in a "
                              "writable folder") from None
    except BaseException:
        # Anything else (a corrupt input read while the data is computed, GDAL's own
        # errors) is not the output path's fault: it propagates as it is.
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return given


def _keep_mode(tmp: Path, st: os.stat_result) -> None:
    """Give ``tmp`` the owner, group and permission bits of ``st`` (the file it replaces).

    Owner and group first (chown clears set-id bits); a chown the process may not do (a
    file of another user) is skipped, and so is a mode the file system cannot store: the
    output is written either way. A group-writable output in a shared folder stays
    group-writable.
    """
    now = tmp.stat()
    if (now.st_uid, now.st_gid) != (st.st_uid, st.st_gid):
        with contextlib.suppress(OSError):
            os.chown(tmp, st.st_uid, st.st_gid)
    with contextlib.suppress(OSError):  # a file system without modes (FAT, some SMB mounts)
        os.chmod(tmp, stat.S_IMODE(st.st_mode))


def write_geotiff(da: xr.DataArray, path: str | Path, *, cog: bool = True, dtype: str = "float32",
                  option: str | None = None) -> Path:
    """Write ``da`` as a (Cloud Optimized) GeoTIFF that QGIS opens with its CRS and band names.

    Written to a temporary name and moved into place (:func:`atomic_write`), so a crash
    never leaves a half-written file where a good one was, nor a temporary file behind.
    ``option`` (e.g. ``"--out"``) names the path in the error of an unwritable path.

    Raises
    ------
    OutputPathError
        ``path`` is a directory or cannot be created or written.
    """
    import rioxarray  # noqa: F401

    path = Path(path)
    out = da.astype(dtype)
    if "band" not in out.dims:
        out = out.expand_dims(band=[out.name or "value"])
    names = [str(b) for b in out["band"].values]
    kwargs = {"driver": "COG", "compress": "DEFLATE"} if cog else {"driver": "GTiff", "compress": "DEFLATE",
                                                                    "tiled": True}
    nodata = np.nan if np.issubdtype(np.dtype(dtype), np.floating) else None
    out = out.rio.write_nodata(nodata, encoded=False) if nodata is not None else out
    # rioxarray writes a tuple long_name as the band descriptions QGIS shows.
    out.attrs["long_name"] = tuple(names)
    return atomic_write(path, lambda t: out.rio.to_raster(t, **kwargs), option=option)


#: Largest error (source pixels) of the transformer a warp between two CRSs runs with. GDAL's
#: default (0.125 px) interpolates each destination row linearly between points it transforms
#: exactly, and where it puts those points depends on the destination's extent: a file in
#: EPSG:4326 warped onto a site grid and onto the registration window around it (one lattice)
#: landed 0.04-0.09 px apart at 10 m (40-60 N). At 1e-3 px the error stayed under 0.001 px
#: and a 2048 px grid took about as long as before; 1e-6 px took twice that (notes s19 REG3).
WARP_TOLERANCE_PX = 1e-3


def reproject_to(da: xr.DataArray, grid: GridSpec, *, resampling: str = "bilinear") -> xr.DataArray:
    """Resample ``da`` onto ``grid`` (any CRS and resolution in); NaN outside its footprint.

    Between two CRSs every target pixel centre is transformed exactly (not GDAL's
    approximate transformer) and the kernel's scale is fixed from the local pixel-size ratio
    (not GDAL's per-chunk estimate), so a pixel's value does not depend on the target
    grid's extent: the same file read onto a site grid and onto a larger grid of the same
    lattice agrees on their common pixels (within 0.001 px). A ``da`` already in ``grid``'s
    CRS is resampled as before (an affine map, exact either way), and so, with GDAL's
    approximate transformer, are geographic rasters with longitudes past +-180 (a tile
    across the antimeridian, a 0..360 product) and inputs not shaped (band,) y, x.
    """
    import rioxarray  # noqa: F401
    from rasterio.enums import Resampling

    src_crs = crs_of(da)  # clear error when the input has no CRS
    if src_crs == grid.crs or not _exact_warp_fits(da, src_crs):
        # Float with NaN nodata whatever the input type: outside the footprint must read as missing.
        src = da.astype("float32").rio.write_nodata(np.nan, encoded=False)
        template = grid.attach(np.zeros(grid.shape, dtype="float32"))
        out = src.rio.reproject_match(template, resampling=getattr(Resampling, resampling))
    else:
        out = _warp_exact(da, src_crs, grid, getattr(Resampling, resampling))
    out = out.assign_coords(x=grid.x, y=grid.y)
    if bool(np.all(np.isnan(out.values))):
        raise GridError("the raster does not overlap the target grid; check its CRS and that it covers the AOI")
    return with_crs(out, grid.crs)


def _exact_warp_fits(da: xr.DataArray, src_crs) -> bool:
    """Whether :func:`_warp_exact` can warp ``da``: (band,) y, x dims, and in a geographic CRS
    longitudes within -180..180. A tile written across the antimeridian (179.9..180.1) or a
    0..360 product: its crop window (from bounds GDAL gives in -180..180) and the WarpedVRT
    both lose the part past 180, which rioxarray's reproject fills (review REG 1)."""
    if da.ndim not in (2, 3) or da.dims[-2:] != ("y", "x"):
        return False
    if getattr(src_crs, "is_geographic", False) and da.sizes["x"] > 0:
        x = np.asarray(da["x"].values, dtype="float64")
        half = abs(float(x[1] - x[0])) / 2 if x.size > 1 else 0.0
        if float(np.nanmin(x)) - half < -180.0 or float(np.nanmax(x)) + half > 180.0:
            return False
    return True


def _warp_scales(src_crs, src_transform, grid: GridSpec) -> tuple[float, float]:
    """``(xscale, yscale)``: target pixels per source pixel along the target's x and y at its centre.

    GDAL sizes the resampling kernel from this ratio; left to itself it estimates it per
    processing chunk (target chunk size over the source window read for it, margins
    included), so a small target grid got a wider kernel than a large one, which moved
    values by up to 0.08 px on linear ramps (notes s19 REG3). One ratio for the whole grid
    gives every target pixel the same kernel whatever the grid's extent.
    """
    import pyproj

    to_src = pyproj.Transformer.from_crs(grid.crs, src_crs, always_xy=True)
    (cy,), (cx,) = grid.y[[grid.shape[0] // 2]], grid.x[[grid.shape[1] // 2]]
    r = grid.resolution
    xs, ys = to_src.transform(np.array([cx, cx + r, cx]), np.array([cy, cy, cy - r]))
    inv = ~src_transform
    u, v = zip(*(inv * (x, y) for x, y in zip(xs, ys)))
    along_x = float(np.hypot(u[1] - u[0], v[1] - v[0]))  # source pixels per target column
    along_y = float(np.hypot(u[2] - u[0], v[2] - v[0]))
    if not (np.isfinite(along_x) and np.isfinite(along_y) and along_x > 0 and along_y > 0):
        raise GridError(f"the raster's CRS ({src_crs.name}) cannot be transformed at the centre of the target grid; "
                        "check its CRS and that it covers the AOI")
    return 1.0 / along_x, 1.0 / along_y


def _warp_exact(src: xr.DataArray, src_crs, grid: GridSpec, resampling) -> xr.DataArray:
    """``src`` (NaN for no data) warped onto ``grid`` in another CRS as float32, see :func:`reproject_to`.

    rasterio 1.4's ``reproject`` always uses the 0.125 px approximate transformer; a WarpedVRT
    takes a tolerance (:data:`WARP_TOLERANCE_PX`; 0, the exact transformer, leaves the VRT
    without a transformer function in rasterio 1.4 and fails). Only the source pixels around
    the grid's footprint are copied (as float32) into GDAL: a whole scene is neither
    converted nor copied for a small site.
    """
    import math

    from affine import Affine
    from rasterio.io import MemoryFile
    from rasterio.vrt import WarpedVRT
    from rasterio.warp import transform_bounds

    if src.dims[-2:] != ("y", "x"):
        src = src.transpose(..., "y", "x")
    transform = src.rio.transform()
    xscale, yscale = _warp_scales(src_crs, transform, grid)
    data = np.asarray(src.values)
    flat = data.ndim == 2
    if flat:
        data = data[None]
    rows, cols = data.shape[1:]
    # The source window the grid needs, with a margin wider than any kernel (bilinear and
    # cubic reach 2/scale source pixels, average half a target pixel): the pixels outside
    # it never reach the grid, and GDAL would read them for nothing.
    margin = int(math.ceil(4.0 / min(xscale, yscale, 1.0))) + 2
    try:
        left, bottom, right, top = transform_bounds(grid.crs, src_crs, *grid.bounds, densify_pts=51)
        if not (left < right and bottom < top):  # across the antimeridian: not one window
            raise ValueError("bounds wrap")
        inv = ~transform
        corners = [inv * (x, y) for x in (left, right) for y in (bottom, top)]
        c0 = max(0, int(math.floor(min(c for c, _ in corners))) - margin)
        c1 = min(cols, int(math.ceil(max(c for c, _ in corners))) + margin)
        r0 = max(0, int(math.floor(min(r for _, r in corners))) - margin)
        r1 = min(rows, int(math.ceil(max(r for _, r in corners))) + margin)
    except Exception:  # a grid beyond the source CRS's domain: GDAL decides from the whole raster
        r0, r1, c0, c1 = 0, rows, 0, cols
    if r1 <= r0 or c1 <= c0:
        out = np.full((data.shape[0],) + grid.shape, np.nan, dtype="float32")
    else:
        part = np.ascontiguousarray(data[:, r0:r1, c0:c1], dtype="float32")
        part_tr = transform * Affine.translation(c0, r0)
        with MemoryFile() as mem:
            with mem.open(driver="GTiff", width=part.shape[2], height=part.shape[1], count=part.shape[0],
                          dtype="float32", crs=src_crs.to_wkt(), transform=part_tr, nodata=np.nan,
                          interleave="band") as w:
                w.write(part)
            with mem.open() as ds, WarpedVRT(ds, crs=grid.crs.to_wkt(), transform=grid.transform,
                                             width=grid.shape[1], height=grid.shape[0], resampling=resampling,
                                             tolerance=WARP_TOLERANCE_PX, src_nodata=np.nan, nodata=np.nan,
                                             dtype="float32", XSCALE=repr(xscale), YSCALE=repr(yscale)) as vrt:
                out = vrt.read()
    coords = {k: v for k, v in src.coords.items() if k not in ("x", "y", "spatial_ref") and set(v.dims) <= {"band"}}
    da = xr.DataArray(out[0] if flat else out, dims=src.dims, coords=coords, name=src.name, attrs=dict(src.attrs))
    da = da.assign_coords(x=grid.x, y=grid.y).rio.write_nodata(np.nan, encoded=False)
    return with_crs(da, grid.crs).rio.write_transform(grid.transform)

"""The Sentinel Hub download cache: what it holds, and pruning it.

`SentinelHubSource` keeps every Process API reply it fetched under its ``cache_dir``
(default ``$CHANGEDET_DATA_DIR/cache/sentinelhub``), one folder per request, as the
``sentinelhub`` client writes them: ``<hash>/request.json`` and ``<hash>/response.<ext>``.
A re-run or a backfill over the same days then costs no processing units, but nothing in the
daily run ever removes an entry: the folder grows with every AOI-day processed. This module
measures it and removes entries by age or to a size cap, least recently used first (a cache
hit marks its entry used, see `mark_used`).

Only folders that hold a ``request.json`` are treated as entries, so pointing the prune at
the wrong folder removes nothing else; a folder with a request but no response (a download
cut short) is removed once it is older than ``keep_recent_s``.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from changedet.errors import ChangedetError

__all__ = ["CacheEntry", "PruneReport", "cache_entries", "default_cache_dir", "mark_used", "parse_age",
           "parse_size", "prune_cache"]

_SIZE = re.compile(r"^\s*(?P<n>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?P<unit>[kmgt]?i?b?)\s*$", re.IGNORECASE)
_AGE = re.compile(r"^\s*(?P<n>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?P<unit>[dhm]?)\s*$", re.IGNORECASE)


class CacheError(ChangedetError, ValueError):
    """A cache command given an unusable size, age or folder."""


@dataclass(frozen=True)
class CacheEntry:
    """One cached request.

    Attributes
    ----------
    path : Path
        The entry's folder.
    bytes : int
        Size of its files, bytes.
    last_used : float
        When it was last written or read, seconds since the epoch.
    complete : bool
        Whether it holds a response (False: a download cut short).
    """

    path: Path
    bytes: int
    last_used: float
    complete: bool


@dataclass(frozen=True)
class PruneReport:
    """What `prune_cache` found and removed (or, with ``dry_run``, would remove)."""

    cache_dir: str
    entries: int
    bytes: int
    removed_entries: int
    removed_bytes: int
    incomplete_removed: int
    dry_run: bool

    @property
    def kept_entries(self) -> int:
        return self.entries - self.removed_entries

    @property
    def kept_bytes(self) -> int:
        return self.bytes - self.removed_bytes

    def as_dict(self) -> dict:
        return {"cache_dir": self.cache_dir, "entries": self.entries, "bytes": self.bytes,
                "removed_entries": self.removed_entries, "removed_bytes": self.removed_bytes,
                "incomplete_removed": self.incomplete_removed, "kept_entries": self.kept_entries,
                "kept_bytes": self.kept_bytes, "dry_run": self.dry_run}


def default_cache_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder of a data directory's Sentinel Hub replies (where a source entry names
    no ``cache_dir``).

    ``<data_dir>/cache/sentinelhub`` (``data_dir`` defaults to ``$CHANGEDET_DATA_DIR``, else
    ``changedet-data``); where the data directory is a URL (an object store: the
    ``sentinelhub`` client writes local files only), ``~/.cache/changedet/sentinelhub``.
    """
    data_dir = str(data_dir) if data_dir is not None else os.environ.get("CHANGEDET_DATA_DIR", "changedet-data")
    if "://" in data_dir:
        return Path.home() / ".cache" / "changedet" / "sentinelhub"
    return Path(data_dir) / "cache" / "sentinelhub"


def mark_used(path: str | os.PathLike | None) -> None:
    """Mark a cache entry as just used (its folder's modification time), so a size-capped prune
    removes the entries no run has read for longest; a read-only cache is left as it is."""
    if path is None:
        return
    try:
        os.utime(path)
    except OSError:
        pass


def _entry(folder: Path) -> CacheEntry | None:
    # A prune or a cache write beside this one may remove or replace the folder or a file between
    # the listing and the stat: such an entry is skipped (or its vanished file not counted), never
    # an error for the whole listing.
    try:
        files = [f for f in folder.iterdir() if f.is_file()]
        if not any(f.name == "request.json" for f in files):
            return None
        size, last = 0, folder.stat().st_mtime
    except OSError:
        return None
    for f in files:
        try:
            st = f.stat()
        except OSError:
            continue
        size += st.st_size
        last = max(last, st.st_mtime)
    return CacheEntry(folder, size, last, any(f.name.startswith("response") for f in files))


def cache_entries(cache_dir: str | os.PathLike) -> list[CacheEntry]:
    """Every entry of the cache at ``cache_dir``, least recently used first (none if the folder
    does not exist)."""
    root = Path(cache_dir)
    if not root.exists():
        return []
    if not root.is_dir():
        raise CacheError(f"{root}: not a folder; pass the Sentinel Hub cache folder (the source's cache_dir, "
                         f"default {default_cache_dir()})")
    out = [e for e in (_entry(p) for p in root.iterdir() if p.is_dir()) if e is not None]
    return sorted(out, key=lambda e: (e.last_used, str(e.path)))


def prune_cache(cache_dir: str | os.PathLike, *, older_than_s: float | None = None, max_bytes: int | None = None,
                keep_recent_s: float = 3600.0, dry_run: bool = False, now: float | None = None) -> PruneReport:
    """Remove cache entries unused for ``older_than_s`` seconds, then the least recently used
    until the cache holds at most ``max_bytes``.

    Parameters
    ----------
    cache_dir : path
        The cache folder.
    older_than_s : float, optional
        Remove entries last used longer ago than this (seconds).
    max_bytes : int, optional
        Then remove the least recently used entries until the rest fit in this many bytes.
    keep_recent_s : float
        Never remove an entry used within this many seconds (default an hour): a run going on
        beside the prune may be reading it. Where these alone exceed ``max_bytes`` the cache
        stays over the cap (the report says how far).
    dry_run : bool
        Remove nothing; report what would go.
    now : float, optional
        The time to judge ages by (seconds since the epoch; default the clock).

    Returns
    -------
    PruneReport
    """
    if older_than_s is None and max_bytes is None:
        raise CacheError("prune needs --older-than or --max-size (or both); nothing was removed")
    if older_than_s is not None and older_than_s < 0:
        raise CacheError(f"older than {older_than_s} s: an age cannot be negative")
    if max_bytes is not None and max_bytes < 0:
        raise CacheError(f"max size {max_bytes} bytes: a size cannot be negative")
    now = time.time() if now is None else float(now)
    entries = cache_entries(cache_dir)
    total = sum(e.bytes for e in entries)
    doomed: list[CacheEntry] = []
    for e in entries:
        age = now - e.last_used
        if age < keep_recent_s:
            continue
        if not e.complete or (older_than_s is not None and age > older_than_s):
            doomed.append(e)
    if max_bytes is not None:
        left = total - sum(e.bytes for e in doomed)
        doomed_paths = {e.path for e in doomed}
        for e in entries:  # least recently used first
            if left <= max_bytes:
                break
            if e.path in doomed_paths or now - e.last_used < keep_recent_s:
                continue
            doomed.append(e)
            left -= e.bytes
    gone: list[CacheEntry] = []
    for e in doomed:
        if not dry_run:
            shutil.rmtree(e.path, ignore_errors=True)
            if e.path.exists():
                continue  # not removable here (permissions): it counts as kept
        gone.append(e)
    return PruneReport(str(cache_dir), len(entries), total, len(gone), sum(e.bytes for e in gone),
                       sum(not e.complete for e in gone), dry_run)


def parse_size(text: str) -> int:
    """Bytes from ``"500M"``, ``"2GB"``, ``"1.5GiB"``, ``"0"`` (K, M, G, T: powers of 1000; KiB,
    MiB, GiB, TiB: of 1024; a bare number is bytes)."""
    m = _SIZE.match(str(text))
    if m is None:
        raise CacheError(f"size {text!r}: write a number with an optional unit, e.g. 500M, 2G, 1.5GiB")
    unit = m["unit"].lower().rstrip("b")
    power = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}[unit.rstrip("i")]
    base = 1024 if unit.endswith("i") else 1000
    return int(float(m["n"]) * base ** power)


def parse_age(text: str) -> float:
    """Seconds from ``"30d"``, ``"12h"``, ``"45m"`` or a bare number of days."""
    m = _AGE.match(str(text))
    if m is None:
        raise CacheError(f"age {text!r}: write a number of days, or one with a unit d, h or m (30d, 12h, 45m)")
    return float(m["n"]) * {"": 86400.0, "d": 86400.0, "h": 3600.0, "m": 60.0}[m["unit"].lower()]

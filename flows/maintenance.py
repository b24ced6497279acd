"""``prune_download_cache``: keep the Sentinel Hub download cache from growing for ever.

Every Process API reply a run fetched is kept under ``<data_dir>/cache/sentinelhub`` and no
run removes one; this flow wires :func:`changedet.sources.sh_cache.prune_cache` into a weekly
deployment (``changedet-cache-prune``; ``changedet cache prune`` does the same by hand).
"""

from __future__ import annotations

from prefect import flow, get_run_logger


@flow(name="prune_download_cache", log_prints=True)
def prune_download_cache(data_dir: str | None = None, cache_dir: str | None = None, older_than_days: float = 90.0,
                         max_gb: float | None = None, dry_run: bool = False) -> dict:
    """Remove cached Sentinel Hub replies unused for ``older_than_days``, then the least
    recently used until the cache holds at most ``max_gb`` (10⁹ bytes).

    ``cache_dir`` defaults to ``<data_dir>/cache/sentinelhub`` (``data_dir`` to
    ``$CHANGEDET_DATA_DIR``). Entries used within the hour are kept (a daily run may be
    reading them). Returns the prune report (entries and bytes before, removed, kept).
    """
    from changedet.sources.sh_cache import default_cache_dir, prune_cache

    root = cache_dir or default_cache_dir(data_dir)
    report = prune_cache(root, older_than_s=older_than_days * 86400.0,
                         max_bytes=None if max_gb is None else int(max_gb * 1e9), dry_run=dry_run)
    get_run_logger().info("download cache %s: %s %d of %d entries (%.1f of %.1f MB); %d kept (%.1f MB)", root,
                          "would remove" if dry_run else "removed", report.removed_entries, report.entries,
                          report.removed_bytes / 1e6, report.bytes / 1e6, report.kept_entries,
                          report.kept_bytes / 1e6)
    return report.as_dict()

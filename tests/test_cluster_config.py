"""LocalCluster housekeeping settings of the flows (flows/cluster.py), on real workers."""

import copy

import dask
import pytest

from flows.cluster import QUIET_DASK, WORKER_ENV, configure_worker_malloc


@pytest.fixture
def restore_dask_config():
    saved = copy.deepcopy(dask.config.config)
    yield
    dask.config.config.clear()
    dask.config.config.update(saved)


def test_quiet_settings_reach_local_cluster_workers(restore_dask_config, monkeypatch):
    from distributed import Client, LocalCluster

    monkeypatch.delenv("DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED", raising=False)
    # A user's explicit choice wins over ours.
    monkeypatch.setenv("DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL", "40ms")
    dask.config.refresh()  # as if set before dask was imported
    configure_worker_malloc()
    assert dask.config.get("distributed.worker.profile.enabled") is False
    assert dask.config.get("distributed.worker.memory.monitor-interval") == QUIET_DASK[
        "distributed.worker.memory.monitor-interval"]
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        seen = client.run(lambda: (dask.config.get("distributed.worker.profile.enabled"),
                                   dask.config.get("distributed.admin.tick.interval"),
                                   __import__("os").environ.get("MALLOC_TRIM_THRESHOLD_")))
    (profile, tick, trim), = seen.values()
    assert profile is False
    assert tick == "40ms"
    assert trim == WORKER_ENV["MALLOC_TRIM_THRESHOLD_"]


def test_a_value_from_the_users_dask_yaml_wins(restore_dask_config, monkeypatch, tmp_path):
    (tmp_path / "mine.yaml").write_text("distributed:\n  worker:\n    memory:\n      monitor_interval: 250ms\n")
    monkeypatch.setattr(dask.config, "paths", [str(tmp_path)])
    dask.config.refresh(paths=[str(tmp_path)])  # as if found when dask was imported
    configure_worker_malloc()
    assert dask.config.get("distributed.worker.memory.monitor-interval") == "250ms"
    assert dask.config.get("distributed.worker.profile.enabled") is False  # not set by the user: ours

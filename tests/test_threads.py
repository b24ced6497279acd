"""Thread budget of the library's internally threaded kernels (changedet.threads)."""

import numpy as np
import pytest

from changedet import threads
from changedet.threads import ThreadBudgetError, available_cpus, cpu_budget, set_cpu_budget


@pytest.fixture(autouse=True)
def _no_budget(monkeypatch):
    monkeypatch.delenv(threads.ENV_VAR, raising=False)
    set_cpu_budget(None)
    yield
    set_cpu_budget(None)


def test_default_is_the_cpus_of_this_process():
    assert cpu_budget() == available_cpus() >= 1


def test_set_budget_and_env_only_lower_it(monkeypatch):
    set_cpu_budget(1)
    assert cpu_budget() == 1
    set_cpu_budget(available_cpus() + 7)  # more than the process may use: capped
    assert cpu_budget() == available_cpus()
    set_cpu_budget(None)
    monkeypatch.setenv(threads.ENV_VAR, "1")
    assert cpu_budget() == 1


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "two"])
def test_bad_budget_is_refused_with_its_name(bad, monkeypatch):
    with pytest.raises(ThreadBudgetError, match="threads="):
        set_cpu_budget(bad)
    monkeypatch.setenv(threads.ENV_VAR, str(bad))
    with pytest.raises(ThreadBudgetError, match=threads.ENV_VAR):
        cpu_budget()


def test_budget_reaches_the_fft_threads(monkeypatch):
    """Whole-frame FFTs of the co-registration ask the budget how many workers to use."""
    from changedet import coreg

    seen = []
    real = coreg.sfft.fft2

    def spy(x, *args, workers=None, **kwargs):
        seen.append(workers)
        return real(x, *args, workers=workers, **kwargs)

    monkeypatch.setattr(coreg.sfft, "fft2", spy)
    set_cpu_budget(1)
    assert coreg._workers(1024 * 1024) == 1
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(512, 512)).astype("float32")
    coreg.estimate_shift(ref, np.roll(ref, 2, axis=0))
    assert seen and all(w in (1, None) for w in seen)


def test_budget_reaches_the_numba_baseline_kernel(monkeypatch):
    """numpy input to baseline_zscore runs on as many threads as the budget allows."""
    import concurrent.futures

    import xarray as xr

    from changedet.kernels import fast

    pytest.importorskip("numba")
    used = []
    real_pool = concurrent.futures.ThreadPoolExecutor

    def pool(n):
        used.append(n)
        return real_pool(n)

    from types import SimpleNamespace

    # Only the kernel module's view of concurrent.futures: dask's own pools stay real.
    monkeypatch.setattr(fast, "concurrent", SimpleNamespace(futures=SimpleNamespace(ThreadPoolExecutor=pool)))
    rng = np.random.default_rng(1)
    hist = xr.DataArray(rng.normal(size=(6, 1, 64, 32)).astype("float32"), dims=("time", "band", "y", "x"))
    img = xr.DataArray(rng.normal(size=(1, 64, 32)).astype("float32"), dims=("band", "y", "x"))
    set_cpu_budget(1)
    one = fast.baseline_zscore(hist, img, mad_floor=0.01)
    assert used == []  # a budget of one thread: no pool at all
    set_cpu_budget(None)
    monkeypatch.setattr(threads, "available_cpus", lambda: 2)
    two = fast.baseline_zscore(hist, img, mad_floor=0.01)
    assert used == [2]
    np.testing.assert_array_equal(one.values, two.values)


def test_limited_blocks_nest_across_threads_and_lift():
    from changedet.threads import limited

    with limited(1):
        assert cpu_budget() == 1
        with limited(3):
            assert cpu_budget() == 1  # the smallest open block wins
        assert cpu_budget() == 1
    assert cpu_budget() == available_cpus()  # nothing left behind
    with pytest.raises(ThreadBudgetError):
        with limited(0):
            pass
    assert cpu_budget() == available_cpus()


def test_budget_inside_a_dask_worker_task_is_the_workers_threads():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        assert client.submit(cpu_budget, pure=False).result() == 1
    assert cpu_budget() == available_cpus()  # the worker's size does not leak out


def test_kernels_on_cluster_lifts_the_budget_after_the_task():
    """A task computing locally on an in-process 1-thread worker leaves no budget behind."""
    from distributed import Client, LocalCluster

    from flows.tasks import kernels_on_cluster

    def task():
        with kernels_on_cluster(False):
            return cpu_budget()

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        assert client.submit(task, pure=False).result() == 1
    assert threads._limits == [] and threads._budget is None
    assert cpu_budget() == available_cpus()

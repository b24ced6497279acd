"""Shared fixtures.

Real imagery lives outside the repository in ``../shared/data`` (override with
``CHANGEDET_TEST_DATA``). Locally a missing file skips the test; under CI (``CI=true``)
it fails, so a broken data mount can never turn the suite green by skipping.

The suite runs in parallel with pytest-xdist (``-n 2 --dist loadfile``): a test file's
tests, and so its module fixtures, stay on one worker. Here, under xdist only:

- files holding a test marked ``slow`` are handed out first (with ``--no-loadscope-reorder``
  xdist keeps the collection order), so the long ones do not start last and leave one
  core idle at the end;
- each worker gets its own ``PREFECT_HOME``: two workers running Prefect flows at once
  must not share profiles, local result storage and the memo store.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


_WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", "gw1"... only inside an xdist worker
_OWN_PREFECT_HOME: str | None = None


def pytest_configure(config):
    global _OWN_PREFECT_HOME
    if _WORKER and "PREFECT_HOME" not in os.environ:
        # Set before any test imports prefect: its settings are read from the environment.
        _OWN_PREFECT_HOME = tempfile.mkdtemp(prefix=f"changedet-prefect-{_WORKER}-")
        os.environ["PREFECT_HOME"] = _OWN_PREFECT_HOME


def pytest_unconfigure(config):
    if _OWN_PREFECT_HOME:
        shutil.rmtree(_OWN_PREFECT_HOME, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    if not _WORKER:
        return
    # Stable: slow files first, each file's tests in their own order.
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


def _data_root() -> Path:
    env = os.environ.get("CHANGEDET_TEST_DATA")
    if env:
        return Path(env)
    return REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def test_data():
    """Return a function ``get(relative_path) -> Path`` for files in the shared test data."""
    root = _data_root()

    def get(rel: str) -> Path:
        path = root / rel
        if not path.exists():
            msg = f"test data {path} is missing; set CHANGEDET_TEST_DATA to the shared data folder"
            if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
                pytest.fail(msg)
            pytest.skip(msg)
        return path

    return get


@pytest.fixture(scope="session")
def prefect_env():
    """A throw-away Prefect server and database (Prefect's own harness), one per test session
    (per xdist worker), shared by the flow test files, stopped cleanly at the end."""
    from prefect.testing.utilities import prefect_test_harness

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The CI sets PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS; a busy machine needs more than 30 s.
    timeout = int(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180"))
    with prefect_test_harness(server_startup_timeout=timeout):
        yield


@pytest.fixture
def aoi_dir() -> Path:
    """The AOI registry shipped in the repository."""
    return REPO / "aois"

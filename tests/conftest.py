"""Shared fixtures.

Real imagery lives outside the repository in ``../shared/data`` (override with
``CHANGEDET_TEST_DATA``). Locally a missing file skips the test; under CI (``CI=true``)
it fails, so a broken data mount can never turn the suite green by skipping.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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


@pytest.fixture
def aoi_dir() -> Path:
    """The AOI registry shipped in the repository."""
    return REPO / "aois"

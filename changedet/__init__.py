"""changedet: watch places on Earth through recurring satellite imagery.

The package is a library of small modules, one concept each; Prefect orchestration
lives in the separate top-level ``flows`` package so that this one never imports it.
"""

__version__ = "0.1.0"

from changedet.errors import ChangedetError  # noqa: E402

__all__ = ["ChangedetError", "__version__"]

"""The AOI registry loads without the alert engine's heavy dependencies."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("changedet.baselines", "pandas", "scipy.stats", "xarray")


def _loaded_after(stmt: str) -> set[str]:
    code = f"import json, sys; {stmt}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_aoi_loads_no_heavy_module():
    loaded = _loaded_after("import changedet.aoi")
    assert "changedet.aoi" in loaded
    assert not loaded & set(HEAVY), f"import changedet.aoi loaded {sorted(loaded & set(HEAVY))}"


def test_rule_kinds_still_come_from_the_alert_engine():
    import changedet.aoi as aoi
    from changedet import baselines

    assert aoi.RULE_KINDS == baselines.RULE_KINDS
    assert set(aoi.RULE_PARAMS) == set(baselines.RULE_PARAMS)
    for kind, names in aoi.RULE_PARAMS.items():
        assert set(names) == set(baselines.RULE_PARAMS[kind]) | set(baselines.LIFECYCLE_PARAMS)
    with pytest.raises(AttributeError, match="no_such_name"):
        aoi.no_such_name  # noqa: B018
    assert {"RULE_KINDS", "RULE_PARAMS", "load_aoi"} <= set(dir(aoi))


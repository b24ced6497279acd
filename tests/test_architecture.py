"""Architecture guards: the library never imports Prefect; every module imports cleanly."""

import subprocess
import sys

CODE = r"""
import importlib, pkgutil, sys
import changedet
names = [m.name for m in pkgutil.walk_packages(changedet.__path__, "changedet.") if not m.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
bad = sorted(m for m in sys.modules if m == "prefect" or m.startswith("prefect."))
print(len(names), bad)
assert not bad, f"changedet imports prefect: {bad}"
"""


def test_changedet_never_imports_prefect():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    n = int(out.stdout.split()[0])
    assert n >= 20  # the walk really imported the package's modules


def test_flows_import_prefect_and_only_wire_library_calls():
    import flows.daily  # noqa: F401
    import flows.backfill  # noqa: F401

    assert "prefect" in sys.modules

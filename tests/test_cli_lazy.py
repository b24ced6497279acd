"""The CLI loads only the named command's module (start-up of one-shot commands)."""

import subprocess
import sys

PROBE = """
import sys
from changedet.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
print(sorted(m for m in sys.modules if m.startswith("changedet.cli.")))
"""


def _loaded(argv):
    out = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True, text=True,
                         timeout=300)
    return out.stdout.strip().splitlines()[-1], out.stderr


def test_named_command_loads_only_its_module():
    loaded, _ = _loaded(["coregister", "--help"])
    assert loaded == "['changedet.cli.coregister']"


def test_unknown_command_lists_every_command():
    loaded, err = _loaded(["nosuch"])
    assert "changedet.cli.count" in loaded and "changedet.cli.coregister" in loaded
    assert "invalid choice: 'nosuch'" in err and "'coregister'" in err and "'count'" in err

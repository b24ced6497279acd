"""``changedet`` command line: thin wrappers that parse, call the library and print.

Errors from changedet (:class:`~changedet.errors.ChangedetError`) are printed as one
line naming the input and the fix, with exit code 2; no tracebacks for user mistakes.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import warnings
from pathlib import Path

from changedet import __version__
from changedet.errors import ChangedetError, DateError

log = logging.getLogger(__name__)


def parse_date(text: str):
    """argparse type for YYYY-MM-DD dates with a helpful message."""
    from datetime import date

    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date; write it as YYYY-MM-DD") from None


def default_data_dir() -> Path:
    return Path(os.environ.get("CHANGEDET_DATA_DIR", "changedet-data"))


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``changedet`` parser; with ``command``, only that command's module is loaded.

    Command modules import what their command needs (``count`` the object detectors,
    ``run`` the pipeline, pandas and scipy.stats): loading all of them cost seconds
    before a 20 ms ``changedet coregister`` could start. When ``command`` is not a module
    of that name (or is None, e.g. for ``--help``), every command is loaded.
    """
    if command:
        parser = _build(only=command)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        if command in sub.choices:
            return parser
    return _build()


def _build(only: str | None = None) -> argparse.ArgumentParser:
    import importlib
    import pkgutil

    import changedet.cli as cli_pkg

    parser = argparse.ArgumentParser(
        prog="changedet",
        description="Watch places on Earth through recurring satellite imagery and alert when activity "
        "departs from normal.",
    )
    parser.add_argument("--version", action="version", version=f"changedet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Every module in this package with an ``add_parser(subparsers)`` is a command, so a new
    # command is one new file; the listed ones come first in --help, the rest alphabetically.
    first = ["aois", "simulate", "run", "demo", "alerts"]
    names = sorted(m.name for m in pkgutil.iter_modules(cli_pkg.__path__) if not m.name.startswith("_"))
    if only is not None:
        names = [n for n in names if n == only]
    for name in sorted(names, key=lambda n: (first.index(n) if n in first else len(first), n)):
        module = importlib.import_module(f"changedet.cli.{name}")
        if hasattr(module, "add_parser"):
            module.add_parser(sub)
    # Commands from other packages (``changedet serve``/``backfill`` from flows/), so the
    # library never has to import what they need.
    from importlib.metadata import entry_points

    for ep in sorted(entry_points(group="changedet.commands"), key=lambda e: e.name):
        if only is not None and (names or ep.name != only):
            continue
        try:
            module = ep.load()
        except ImportError:  # that package is not installed here: its commands are absent
            continue
        module.add_parser(sub)
    return parser


#: OSError numbers that are about a path (missing, not writable, full): the hint applies.
_PATH_ERRNOS = frozenset(getattr(errno, n) for n in ("ENOSPC", "EROFS", "EACCES", "EPERM", "ENOENT", "ENOTDIR",
                                                     "EISDIR", "EDQUOT", "ENAMETOOLONG") if hasattr(errno, n))


#: Commands that work day by day and keep each finished day: only their errors and
#: interruptions say so (a failed ``simulate`` or ``report`` has no days to keep).
_RUN_COMMANDS = frozenset({"run", "demo", "fetch", "backfill"})


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv[0] if argv and not argv[0].startswith("-") else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    # rasterio's NotGeoreferencedWarning only repeats what changedet's own error about an
    # image without georeferencing says (io.open_raster): silenced once, process-wide, here
    # at the application's entry, never in library code that runs in threads.
    warnings.filterwarnings("ignore", message="Dataset has no geotransform")
    # CHANGEDET_DEBUG=1: errors keep their traceback (for a bug report), not one line.
    debug = os.environ.get("CHANGEDET_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # Output piped into a reader that stopped (``| head``): exit quietly, as the
        # Python docs advise, pointing stdout at devnull so the exit flush cannot fail again.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):  # stdout without a descriptor (captured)
            pass
        return 141  # 128 + SIGPIPE, what other tools in a pipe report
    except (ChangedetError, DateError) as exc:
        if debug:
            raise
        print(f"changedet: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if debug:
            raise
        log.debug("%s failed", args.command, exc_info=exc)
        # Redacted, since a network error's text can carry a webhook URL with its secret.
        from changedet.alerts.outbox import _redact

        text = _redact(str(exc))
        if exc.filename is not None or exc.errno in _PATH_ERRNOS:
            # A disk that fills up or a directory that turns read-only mid-run: one line
            # naming the path, not a traceback.
            kept = " (days a run finished are kept)" if args.command in _RUN_COMMANDS else ""
            print(f"changedet: error: {text}; check that the path exists, is writable and has free "
                  f"space, then run the command again{kept}", file=sys.stderr)
        else:
            # A network error, or a bug: no filesystem hint that would send the user astray.
            print(f"changedet: error: {type(exc).__name__}: {text} (set CHANGEDET_DEBUG=1 for the traceback)",
                  file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.command in _RUN_COMMANDS:
            print("changedet: interrupted; finished days are kept, re-run to continue", file=sys.stderr)
        else:
            print("changedet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

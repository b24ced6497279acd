"""One exception family for changedet.

Every message names the offending input and says how to fix it; the CLI prints the
message (no traceback) and exits non-zero.
"""


def _rebuilt(cls: type, args: tuple) -> "ChangedetError":
    """An instance of the exception class ``cls`` with ``args``, made without its ``__init__``.

    The unpickling half of :meth:`ChangedetError.__reduce__`; the attributes follow as the
    pickled state.
    """
    exc = cls.__new__(cls, *args)
    exc.args = args
    return exc


class ChangedetError(Exception):
    """Base class for every error changedet raises on purpose.

    Every subclass pickles with its message and attributes, whatever its ``__init__``
    takes: errors cross process boundaries (a Dask worker sends its errors to the flow,
    Prefect keeps a task's exception in its state), and the default pickling of an
    exception calls ``cls(*args)``, which fails for an ``__init__`` with other required
    arguments (the receiving side then sees a ``TypeError`` instead of the error).
    """

    def __reduce__(self):
        if any(base.__basicsize__ > Exception.__basicsize__ for base in type(self).__mro__
               if base.__module__ == "builtins"):
            # Mixed with a built-in that keeps fields in C slots (OSError's errno and filename,
            # UnicodeError's, StopIteration's value), which _rebuilt would lose: that base's own
            # pickling, which knows them (it calls the class with them, as before).
            return super().__reduce__()
        # Rebuilt without calling __init__: args (the message) as raised, attributes as state.
        return _rebuilt, (type(self), self.args), dict(self.__dict__)


class AOIError(ChangedetError):
    """An AOI file (GeoJSON or YAML) is malformed or inconsistent."""


def problems_by_file(problems) -> dict[str, list[str]]:
    """The problems of broken AOI files, grouped by file: ``{path: [problem, ...]}``, in order.

    Problems are :class:`AOIError` (or their text) as :func:`changedet.aoi.scan_registry`
    and the AOI loaders give them: each starts with its file's path and ``": "``; one
    error that lists several (``"2 problems in AOI 'x':\n  - path: ..."``) counts each
    listed line. Whoever says "N broken AOI file(s)" counts the keys, not the problems
    (one file with two typos is one broken file).
    """
    out: dict[str, list[str]] = {}
    for problem in problems:
        text = str(problem)
        listed = [line.strip()[2:] for line in text.splitlines()[1:] if line.strip().startswith("- ")]
        for item in listed or [text]:
            out.setdefault(item.split(": ", 1)[0] if ": " in item else item, []).append(item)
    return out


class GridError(ChangedetError):
    """A pixel grid or CRS is invalid, or two grids do not overlap."""


class SourceError(ChangedetError):
    """Imagery could not be found or loaded from a source.

    Raised as is when the source cannot tell whose the failure is; callers then treat it
    as one that may pass (nothing recorded, tried again later). Sources say more with a
    subclass: :class:`SourceUnavailable` (may pass), :class:`SceneUnreadable` (the
    scene's, for good) or :class:`SourceConfigError` (the source entry's). Code that
    catches ``SourceError`` catches all of them.
    """


class _Typed(SourceError):
    # The typed source errors (pickled as every ChangedetError, see its __reduce__).
    pass


class SourceUnavailable(_Typed):
    """A failure that may pass: a share not mounted, an I/O or permission error of the file
    system, a timeout, HTTP 5xx or 429, an expired signed URL. A later try may succeed."""


class SceneUnreadable(_Typed):
    """One scene cannot be read, and a retry would read the same: a corrupt or truncated
    file, a provider with no pixels for the acquisition.

    Attributes
    ----------
    reason : str
        Why, in a few words (``"the file is there but cannot be read"``), for records
        and day lines; the message has the details.
    """

    def __init__(self, message: str, *, reason: str = "the scene cannot be read") -> None:
        super().__init__(message)
        self.reason = reason


class SourceConfigError(_Typed):
    """The source entry is wrong, so every scene of it fails alike: a ``bands:`` list that
    fits no file, a request the provider rejects (HTTP 400: a bad evalscript), a
    collection id it does not know (HTTP 404), credentials it refuses.

    Attributes
    ----------
    option : str or None
        The entry option (or setting) to fix, e.g. ``"bands"``, ``"byoc_id"``; the
        message says how.
    """

    def __init__(self, message: str, *, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


class RasterError(ChangedetError):
    """A raster file is unreadable, corrupt or lacks georeferencing."""


class CubeError(ChangedetError):
    """The imagery cube is inconsistent or was written with another grid."""


class CoregError(ChangedetError):
    """Co-registration inputs are unusable (no overlap, no valid pixels)."""


class ScenarioError(ChangedetError):
    """A simulator scenario file is malformed."""


class DateError(ChangedetError):
    """A date or date range is malformed or inverted."""


class StoreError(ChangedetError):
    """A metric or alert store cannot be opened, read or written."""


class RuleError(ChangedetError):
    """A baseline rule has an unknown kind or invalid parameters."""

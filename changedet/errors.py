"""One exception family for changedet.

Every message names the offending input and says how to fix it; the CLI prints the
message (no traceback) and exits non-zero.
"""


class ChangedetError(Exception):
    """Base class for every error changedet raises on purpose."""


class AOIError(ChangedetError):
    """An AOI file (GeoJSON or YAML) is malformed or inconsistent."""


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
    # Rebuilt from the message and the attributes (flows send errors between processes;
    # the default pickling passes only the message to __init__).
    def __reduce__(self):
        return (self.__class__, (str(self),), dict(self.__dict__))


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

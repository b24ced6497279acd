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
    """Imagery could not be found or loaded from a source."""


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

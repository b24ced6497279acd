"""The embedded scene simulator as an imagery source (the offline default)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from changedet.errors import SourceError
from changedet.grid import GridSpec
from changedet.simulate.render import MASK_BAND, SENSORS, SimScene, conditions, render_scene
from changedet.simulate.scenario import scenario_for
from changedet.sources.base import SceneRecord, check_range

# Revisit: VHR is tasked (any day); Sentinel-2 every 5 days and Sentinel-1 every 6 days
# (two satellites each), anchored on a real first acquisition date.
_REVISIT = {"vhr": (1, date(2015, 1, 1)), "s2": (5, date(2015, 6, 27)), "s1": (6, date(2014, 10, 3))}
_REFERENCE_DAY = date(2023, 5, 15)


@dataclass
class SimulatorSource:
    """Scenes rendered on demand, deterministic for (AOI, date, sensor, seed).

    Parameters
    ----------
    seed : int
        Changes the draws (counts within scenario ranges, weather, misregistration).
    registry : Path, optional
        AOI registry holding ``scenarios/``; default: the shipped one.
    resolution_m : float, optional
        Override of the sensor's resolution (otherwise the AOI's source spec decides).
    """

    seed: int = 0
    registry: Path | None = None
    name: str = "simulator"

    def _aoi_registry(self) -> Path:
        if self.registry is not None:
            return Path(self.registry)
        from changedet.aoi import default_registry

        return default_registry()

    def search(self, aoi, start: date, end: date, *, sensor: str, max_cloud: float = 100.0,
               resolution_m: float | None = None) -> list[SceneRecord]:
        check_range(start, end)
        if sensor not in SENSORS:
            raise SourceError(f"simulator has no sensor {sensor!r}; use one of {sorted(SENSORS)}")
        step, anchor = _REVISIT[sensor]
        offset = (start - anchor).days % step
        day = start + timedelta(days=(step - offset) % step)
        scenario = scenario_for(aoi.id, self._aoi_registry())
        out = []
        res = float(resolution_m or SENSORS[sensor].resolution_m)
        while day <= end:
            cond = conditions(aoi, day, sensor, seed=self.seed, scenario=scenario)
            cloud = 100.0 * cond.cloud_fraction
            if cloud <= max_cloud:
                out.append(self._record(aoi, day, sensor, res, cond))
            day += timedelta(days=step)
        return out

    def _record(self, aoi, day: date, sensor: str, res: float, cond, reference: bool = False) -> SceneRecord:
        tag = "ref" if reference else f"s{self.seed}"
        return SceneRecord(
            id=f"sim-{sensor}-{aoi.id}-{day.isoformat()}-{tag}-{res:g}m",
            source=self.name, aoi_id=aoi.id, sensor=sensor,
            time=datetime.combine(day, time(1, 30), tzinfo=timezone.utc),
            platform=SENSORS[sensor].platform, cloud_cover=round(100.0 * cond.cloud_fraction, 2),
            footprint=aoi.polygon, resolution_m=res,
            properties={"sun_azimuth_deg": round(cond.sun_azimuth, 3),
                        "sun_elevation_deg": round(cond.sun_elevation, 3),
                        "seed": self.seed, "reference": reference},
        )

    def reference(self, aoi, *, sensor: str, resolution_m: float | None = None) -> SceneRecord:
        """A clear, registration-exact acquisition: the basemap the AOI features were drawn on."""
        scenario = scenario_for(aoi.id, self._aoi_registry())
        res = float(resolution_m or SENSORS[sensor].resolution_m)
        cond = conditions(aoi, _REFERENCE_DAY, sensor, seed=self.seed, scenario=scenario)
        # The reference is rendered clear whatever the day's weather draw.
        cond = replace(cond, cloud_fraction=0.0, haze=0.0, snow=0.0)
        return self._record(aoi, _REFERENCE_DAY, sensor, res, cond, reference=True)

    def render(self, scene: SceneRecord, aoi) -> SimScene:
        reference = bool(scene.properties.get("reference", False))
        return render_scene(aoi, scene.day, scene.sensor, seed=self.seed, resolution_m=scene.resolution_m,
                            registry=self._aoi_registry(), clear=reference, misregistration=not reference)

    def load(self, scene: SceneRecord, grid: GridSpec, *, aoi=None) -> xr.DataArray:
        """Render the scene; bands plus ``CLM`` (optical) on ``grid``."""
        if aoi is None:
            from changedet.aoi import load_aoi

            aoi = load_aoi(scene.aoi_id, registry=self._aoi_registry())
        sim = self.render(scene, aoi)
        return to_dataarray(sim, scene, grid)

    def truth(self, scene: SceneRecord, aoi) -> dict[str, Any]:
        return self.render(scene, aoi).truth


def to_dataarray(sim: SimScene, scene: SceneRecord, grid: GridSpec) -> xr.DataArray:
    data, bands = sim.data, list(sim.bands)
    if sim.cloud_mask is not None:
        data = np.concatenate([data, sim.cloud_mask[None].astype("float32")])
        bands.append(MASK_BAND)
    da = sim.grid.attach(data, bands=bands, name="reflectance" if scene.sensor != "s1" else "sigma0",
                         attrs={"scene_id": scene.id, "sensor": scene.sensor, "platform": scene.platform})
    if not sim.grid.same_as(grid):
        from changedet.io import reproject_to

        da = reproject_to(da, grid)
    return da

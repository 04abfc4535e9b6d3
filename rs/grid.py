"""Pixel grids: where a grid lies, its ground size in metres, and the grid a model sees.

``Grid`` is a pixel grid (CRS, affine transform, size); ``GridSpec`` says where a pair's common
grid lies (BEFORE's pixels, or a CRS and resolution given by the user); ``grid_for_gsd`` is the
GSD policy: the grid imagery is compared on for a model trained at another ground sampling
distance. The metre helpers are here, once: ``utm_crs`` (the UTM zone of a point),
``metric_crs`` (of a layer), ``Grid.pixel_size_m`` and ``pixel_area_m2``. Nothing here reads pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, cast, get_args

import rasterio.transform
import rasterio.warp
import rasterio.windows
from affine import Affine
from pyproj import CRS as ProjCRS
from pyproj import Geod
from pyproj.aoi import AreaOfInterest
from pyproj.database import query_utm_crs_info
from rasterio.crs import CRS
from rasterio.windows import Window

from changewatch.rs.errors import IncompatibleScenesError

if TYPE_CHECKING:
    import geopandas as gpd

GsdPolicy = Literal["auto", "native"]
GSD_POLICIES: tuple[str, ...] = get_args(GsdPolicy)


def utm_crs(lon: float, lat: float) -> CRS:
    """The WGS 84 / UTM zone CRS containing (lon, lat) (degrees), from the PROJ database.

    As GeoPandas' ``estimate_utm_crs`` picks it for a layer.
    """
    info = query_utm_crs_info(datum_name="WGS 84", area_of_interest=AreaOfInterest(lon, lat, lon, lat))
    return CRS.from_epsg(int(info[0].code))


def metric_crs(gdf: gpd.GeoDataFrame) -> ProjCRS:
    """The local UTM CRS of a layer (for areas and distances in metres)."""
    return gdf.estimate_utm_crs()


@dataclass(frozen=True)
class Grid:
    """A georeferenced pixel grid: CRS, affine transform (pixel → CRS units) and size in pixels.

    ``crs`` is None only for plain images compared pixel for pixel (identity transform).
    """

    crs: CRS | None
    transform: Affine
    width: int
    height: int

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the grid's CRS units."""
        return cast("tuple[float, float, float, float]",
                    rasterio.transform.array_bounds(self.height, self.width, self.transform))

    def window_transform(self, window: Window) -> Affine:
        """Affine transform of a window of this grid."""
        return cast(Affine, rasterio.windows.transform(window, self.transform))

    def centre_lonlat(self) -> tuple[float, float]:
        """(longitude, latitude) of the grid's centre (degrees, WGS 84)."""
        x, y = self.transform * (self.width / 2, self.height / 2)
        lon, lat = rasterio.warp.transform(self.crs, "EPSG:4326", [x], [y])
        return lon[0], lat[0]

    def pixel_size_m(self) -> float | None:
        """Ground size of a pixel's side in metres at the grid's centre (mean of its two sides).

        None for plain images without a CRS.
        """
        if self.crs is None:
            return None
        if self.crs.is_projected:
            return float(abs(self.transform.a * self.transform.e) ** 0.5 * self.crs.linear_units_factor[1])
        lon, lat = self.centre_lonlat()
        geod = Geod(ellps="WGS84")
        dx = geod.inv(lon, lat, lon + abs(self.transform.a), lat)[2]
        dy = geod.inv(lon, lat, lon, lat + abs(self.transform.e))[2]
        return float((dx * dy) ** 0.5)

    def metric_crs(self) -> CRS:
        """The grid's CRS when it is projected, else the UTM zone of its centre (``utm_crs``)."""
        if self.crs is not None and self.crs.is_projected:
            return self.crs
        return utm_crs(*self.centre_lonlat())


def pixel_area_m2(grid: Grid) -> float:
    """Ground area of one pixel at the centre of the grid, in m² (measured in local UTM)."""
    import geopandas as gpd
    import shapely

    col, row = grid.width // 2, grid.height // 2
    corners = [grid.transform @ (c, r) for c, r in ((col, row), (col + 1, row), (col + 1, row + 1), (col, row + 1))]
    pixel = gpd.GeoSeries([shapely.Polygon(corners)], crs=grid.crs)
    return float(pixel.to_crs(pixel.estimate_utm_crs()).area.iloc[0])


@dataclass(frozen=True)
class GridSpec:
    """Where the common grid of a pair lies.

    Default (both None): BEFORE's own pixel grid, cropped to where BEFORE and AFTER overlap. With
    ``crs`` (any string rasterio reads: "EPSG:32648", WKT, PROJ) and/or ``resolution`` (pixel size
    in that CRS's units: metres for UTM, degrees for EPSG:4326) a new north-up grid over the
    overlap, with pixel edges on multiples of the resolution (like ``gdalwarp -tap``), so grids of
    different runs line up; a missing resolution is BEFORE's, carried over to ``crs``. Raises
    IncompatibleScenesError when ``resolution`` is not positive.
    """

    crs: str | None = None
    resolution: float | None = None

    def __post_init__(self) -> None:
        if self.resolution is not None and not self.resolution > 0:
            raise IncompatibleScenesError(f"grid resolution must be positive, got {self.resolution}")


def grid_for_gsd(grid: Grid, model_gsd_m: float, policy: GsdPolicy,
                 serves: tuple[float, float] | None = None) -> GridSpec | None:
    """The grid to compare on for a model trained at ``model_gsd_m`` metres, or None to keep ``grid``.

    The model serves input GSDs ``serves`` = (finest, coarsest) at their own pixels (default: half
    to three times ``model_gsd_m``; ``ModelSpec.serves_gsd_m``).

    ``auto``: imagery whose pixel size lies outside ``serves`` (very-high-resolution imagery under
    a 10 m model, say) is compared on a grid at the model's GSD, in the scene's CRS if projected,
    else its UTM zone, so that buildings are the size in pixels the model learnt (bench/RESULTS.md
    measures both ways). ``native``: always the imagery's own pixels. Plain images of unknown
    pixel size are kept as they are. Raises ValueError for another policy.
    """
    if policy not in GSD_POLICIES:
        raise ValueError(f"unknown GSD policy {policy!r}: use one of {', '.join(GSD_POLICIES)}")
    lo, hi = serves or (model_gsd_m / 2, model_gsd_m * 3)
    pixel = grid.pixel_size_m()
    if policy == "native" or pixel is None or lo <= pixel <= hi:
        return None
    return GridSpec(grid.metric_crs().to_string(), model_gsd_m)

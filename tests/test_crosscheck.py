"""rs.crosscheck: permit overlap by area, CRS handling, layer validation and repair."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest
from shapely.geometry import Polygon, box

from rs.crosscheck import NO_PERMIT, PERMITTED, crosscheck, read_layer
from rs.errors import InputFileError, LayerError
from tests.data import ORIGIN, UTM48N, WGS84

X, Y = ORIGIN


def changes() -> gpd.GeoDataFrame:
    """Three 20 m squares 100 m apart along x (UTM 48N)."""
    return gpd.GeoDataFrame({"change_id": [1, 2, 3], "area_m2": [400.0] * 3},
                            geometry=[box(X + i * 100, Y, X + i * 100 + 20, Y + 20) for i in range(3)], crs=UTM48N)


def permits_wgs84() -> gpd.GeoDataFrame:
    """P1 overlaps change 1 (by 10×20 m); P2 only shares an edge with change 2; nothing near change 3."""
    utm = gpd.GeoDataFrame({"permit_id": ["P1", "P2"]},
                           geometry=[box(X + 10, Y, X + 40, Y + 20), box(X + 120, Y, X + 150, Y + 20)], crs=UTM48N)
    return utm.to_crs(WGS84)  # another CRS than the changes: must be reprojected


def test_reasons_by_overlap_area() -> None:
    out = crosscheck(changes(), permits_wgs84())
    assert out.crs == UTM48N
    assert list(out["reasons"]) == [PERMITTED, NO_PERMIT, NO_PERMIT]
    assert list(out["permit_ids"]) == ["P1", "", ""]
    assert list(out["flagged"]) == [False, True, True]
    assert list(out["change_id"]) == [1, 2, 3]


def test_several_permits_listed_sorted() -> None:
    p = gpd.GeoDataFrame({"permit_id": ["Z9", "A1"]},
                         geometry=[box(X, Y, X + 5, Y + 5), box(X + 5, Y + 5, X + 15, Y + 15)], crs=UTM48N)
    out = crosscheck(changes(), p)
    assert out["permit_ids"].iloc[0] == "A1,Z9" and out["reasons"].iloc[0] == PERMITTED


def test_without_permits_everything_is_flagged() -> None:
    out = crosscheck(changes(), None)
    assert (out["reasons"] == NO_PERMIT).all() and out["flagged"].all()


def test_empty_changes() -> None:
    out = crosscheck(changes().iloc[:0], permits_wgs84())
    assert out.empty and {"reasons", "flagged", "permit_ids"} <= set(out.columns)


def test_read_layer_repairs_invalid_geometries(tmp_path: Path) -> None:
    bowtie = Polygon([(X, Y), (X + 20, Y + 20), (X + 20, Y), (X, Y + 20)])
    gpd.GeoDataFrame({"permit_id": ["B"]}, geometry=[bowtie], crs=UTM48N).to_file(tmp_path / "p.gpkg")
    layer = read_layer(tmp_path / "p.gpkg", "permits", ("permit_id",))
    assert layer.repaired == 1 and layer.data.geometry.is_valid.all()
    out = crosscheck(changes(), layer.data)
    assert out["reasons"].iloc[0] == PERMITTED


def test_read_layer_errors(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="not found"):
        read_layer(tmp_path / "missing.gpkg", "permits")
    (tmp_path / "junk.gpkg").write_text("not a geopackage")
    with pytest.raises(InputFileError, match="not a readable vector"):
        read_layer(tmp_path / "junk.gpkg", "permits")
    changes().to_file(tmp_path / "nocol.gpkg")
    with pytest.raises(LayerError, match="lacks column"):
        read_layer(tmp_path / "nocol.gpkg", "permits", ("permit_id",))
    with pytest.warns(UserWarning, match="crs"):  # a shapefile without .prj: no CRS
        gpd.GeoDataFrame({"permit_id": ["X"]}, geometry=[box(0, 0, 1, 1)]).to_file(tmp_path / "nocrs.shp")
    with pytest.raises(LayerError, match="no CRS"):
        read_layer(tmp_path / "nocrs.shp", "permits", ("permit_id",))


def test_dask_geopandas_join_gives_the_same_answer() -> None:
    import numpy as np
    from shapely import box as boxes

    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 5000, size=(3000, 2))
    ch = gpd.GeoDataFrame({"change_id": range(3000)},
                          geometry=boxes(X + xy[:, 0], Y + xy[:, 1], X + xy[:, 0] + 30, Y + xy[:, 1] + 30), crs=UTM48N)
    pxy = rng.uniform(0, 5000, size=(2000, 2))
    pm = gpd.GeoDataFrame({"permit_id": [f"P{i}" for i in range(2000)]},
                          geometry=boxes(X + pxy[:, 0], Y + pxy[:, 1], X + pxy[:, 0] + 40, Y + pxy[:, 1] + 25),
                          crs=UTM48N).to_crs(WGS84)
    plain = crosscheck(ch, pm)
    partitioned = crosscheck(ch, pm, dask_min_features=0)
    assert (plain["reasons"] == "PERMITTED").sum() > 100 and (plain["reasons"] == NO_PERMIT).sum() > 100
    assert list(partitioned["permit_ids"]) == list(plain["permit_ids"])
    assert list(partitioned["reasons"]) == list(plain["reasons"])


def test_read_layer_extent_reads_only_the_scene(tmp_path: Path) -> None:
    far = box(X + 50_000, Y, X + 50_020, Y + 20)
    gpd.GeoDataFrame({"permit_id": ["near", "far"]}, geometry=[box(X, Y, X + 20, Y + 20), far],
                     crs=UTM48N).to_crs(WGS84).to_file(tmp_path / "p.gpkg")
    layer = read_layer(tmp_path / "p.gpkg", "permits", ("permit_id",), extent=((X - 100, Y - 100, X + 1000, Y + 1000), UTM48N))
    assert list(layer.data["permit_id"]) == ["near"]

"""rs.crosscheck.layers and values: permit geometry (union of parts, no points), dates by a declared rule, containers
(GeoPackage layers, GeoParquet, CSV, Shapefile without .prj) and per-layer sanity counts."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import date
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from shapely.geometry import GeometryCollection, LineString, MultiPolygon, Point, Polygon, box

from changewatch.rs.crosscheck.layers import read_layer, split_layer_path
from changewatch.rs.crosscheck.rules import (
    EXCEEDS_PERMIT,
    PERMIT_EXPIRED,
    PERMIT_NOT_YET_VALID,
    PERMITTED,
    crosscheck,
)
from changewatch.rs.crosscheck.settings import CrosscheckInputs, DateFormat, PermitColumns, RuleConfig, Source, Sources
from changewatch.rs.crosscheck.values import parse_dates
from changewatch.rs.errors import InputFileError, LayerError
from tests.data import ORIGIN, UTM48N, WGS84

X, Y = ORIGIN
AS_OF = date(2024, 1, 1)


def at(geom: shapely.Geometry, k: int) -> shapely.Geometry:
    """Case k sits 200 m east of case k-1."""
    return shapely.affinity.translate(geom, X + 200 * k, Y)


def permits(geoms: list[object], ids: list[str] | None = None, crs: object = UTM48N,
            **columns: object) -> gpd.GeoDataFrame:
    ids = ids or [f"P{i}" for i in range(len(geoms))]
    data = {"permit_id": ids, "issued": "2023-01-01", "expires": None, **columns}
    return gpd.GeoDataFrame(data, geometry=geoms, crs=crs)


# --- item 5: a permit covers the union of its parts -------------------------------------------------

def test_multipolygon_parts_cover_their_union(tmp_path: Path) -> None:
    main, extension = box(0, 0, 40, 40), box(20, 20, 60, 60)  # overlapping by 20×20 m
    rows = [(MultiPolygon([main, extension]), extension),                            # the extension
            (MultiPolygon([main, extension]), box(22, 22, 38, 38)),                  # inside the overlap
            (MultiPolygon([box(0, 0, 60, 60), box(15, 15, 45, 45)]), box(15, 15, 45, 45)),  # nested lot + footprint
            (GeometryCollection([box(-5, -5, 45, 45), LineString([(-5, -5), (80, 80)])]), box(0, 0, 40, 40)),
            (Polygon([(x, y, 12.5) for x, y in box(-5, -5, 45, 45).exterior.coords]), box(0, 0, 40, 40))]
    permits([at(g, k) for k, (g, _) in enumerate(rows)]).to_crs(WGS84).to_file(tmp_path / "p.geojson")
    layer = read_layer(tmp_path / "p.geojson", "permits", ("permit_id",))
    assert layer.repaired == 4 and layer.data.geometry.is_valid.all()
    areas = layer.data.to_crs(UTM48N).area.to_numpy()
    np.testing.assert_allclose(areas[:3], [40 * 40 * 2 - 20 * 20, 40 * 40 * 2 - 20 * 20, 60 * 60], rtol=1e-6)
    changes = gpd.GeoDataFrame({"change_id": range(1, 6)}, geometry=[at(c, k) for k, (_, c) in enumerate(rows)],
                               crs=UTM48N)
    out = crosscheck(changes, layer.data, rules=RuleConfig(as_of=AS_OF))
    assert list(out["reasons"]) == [PERMITTED] * 5  # before: EXCEEDS_PERMIT, NO_PERMIT, EXCEEDS_PERMIT, …


def test_bowtie_becomes_its_two_triangles(tmp_path: Path) -> None:
    bowtie = Polygon([(X, Y), (X + 20, Y + 20), (X + 20, Y), (X, Y + 20)])
    permits([bowtie]).to_file(tmp_path / "p.gpkg")
    layer = read_layer(tmp_path / "p.gpkg", "permits")
    assert layer.repaired == 1 and layer.data.area.iloc[0] == pytest.approx(200.0)
    changes = gpd.GeoDataFrame({"change_id": [1]}, geometry=[box(X, Y, X + 20, Y + 20)], crs=UTM48N)
    assert crosscheck(changes, layer.data, rules=RuleConfig(as_of=AS_OF))["reasons"].iloc[0] == EXCEEDS_PERMIT


@pytest.mark.parametrize("geoms,message", [
    ([Point(X, Y), Point(X + 5, Y)], r"2 of 2 features are not polygons \(Point; e.g. P0, P1\)"),
    ([box(X, Y, X + 9, Y + 9), LineString([(X, Y), (X + 9, Y)])], r"1 of 2 .*\(LineString; e.g. P1\)"),
    ([GeometryCollection([LineString([(X, Y), (X + 9, Y)])])], "collections without polygons"),
])
def test_points_and_lines_are_refused(tmp_path: Path, geoms: list[object], message: str) -> None:
    permits(geoms).to_file(tmp_path / "p.gpkg")
    with pytest.raises(LayerError, match=message):
        read_layer(tmp_path / "p.gpkg", "permits", ids="permit_id")


def test_empty_and_null_geometries_are_dropped_and_counted(tmp_path: Path) -> None:
    permits([box(X, Y, X + 9, Y + 9), Polygon(), None]).to_file(tmp_path / "p.gpkg")
    layer = read_layer(tmp_path / "p.gpkg", "permits")
    assert len(layer.data) == 1 and layer.dropped == 2 and layer.features == 3 and layer.in_scene is None
    inputs = CrosscheckInputs(permits=str(tmp_path / "p.gpkg")).read()
    assert inputs.warnings() == [f"permits layer {tmp_path / 'p.gpkg'}: 2 feature(s) with an empty, null or "
                                 f"zero-area geometry were left out"]


# --- item 6: dates by a declared rule ------------------------------------------------------------------

def days(parsed: pd.Series) -> list[str | None]:
    """Parsed dates as YYYY-MM-DD text (None where NaT), after checking they are calendar dates."""
    assert parsed.dtype == "datetime64[s]" and (parsed.dropna() == parsed.dropna().dt.normalize()).all()
    return [None if pd.isna(v) else str(v)[:10] for v in parsed]


def test_iso_dates_with_mixed_offsets_keep_the_day_written() -> None:
    values = pd.Series(["2023-03-05T00:00:00+07:00", "2023-03-20T09:30:00Z", "2023-03-05", None, " ",
                        "2023-03-05 23:59", "9999-12-31"])
    assert days(parse_dates(values)) == ["2023-03-05", "2023-03-20", "2023-03-05", None, None, "2023-03-05",
                                         "9999-12-31"]


def test_day_month_text_without_a_declared_rule_is_an_error() -> None:
    values = pd.Series(["2023-03-05", "03/04/2023"])
    with pytest.raises(LayerError, match=r"1 date\(s\) are not ISO 8601.*'03/04/2023' \(permit_id B\).*date_format"):
        parse_dates(values, DateFormat(), "issued", "permits", pd.Series(["A", "B"], name="permit_id"))


def test_declared_formats() -> None:
    values = pd.Series(["05/03/2023", "20/03/2023 10:30", None])
    formats = DateFormat(formats=("%d/%m/%Y", "%d/%m/%Y %H:%M"))
    assert days(parse_dates(values, formats)) == ["2023-03-05", "2023-03-20", None]
    ids = pd.Series(["GP-1", "GP-2", "GP-3"], name="SO_GP")
    with pytest.raises(LayerError, match=r"cannot be read as date_format '%d/%m/%Y': 'n/a' \(SO_GP GP-3\)"):
        parse_dates(pd.Series(["05/03/2023", "31/03/2023", "n/a"]), DateFormat(formats=("%d/%m/%Y",)), "NGAY",
                    "permits", ids)
    with pytest.raises(LayerError, match=r"'31/02/2023'"):  # no 31 February
        parse_dates(pd.Series(["31/02/2023"]), DateFormat(formats=("%d/%m/%Y",)))


def test_dayfirst() -> None:
    values = pd.Series(["05/03/2023", "5-3-2023 10:00", "05.03.2023", "2023-03-20", "12/04/2023"])
    assert days(parse_dates(values, DateFormat(dayfirst=True))) == ["2023-03-05"] * 3 + ["2023-03-20", "2023-04-12"]
    for unclear in ("2023/03/05", "05/03", "March"):  # year first, no year, no day: never a guess
        with pytest.raises(LayerError, match="day-first"):
            parse_dates(pd.Series([unclear]), DateFormat(dayfirst=True))


def test_typed_dates_are_used_as_they_are() -> None:
    aware = pd.Series(pd.to_datetime(["2023-03-05 00:30"]).tz_localize("Asia/Ho_Chi_Minh"))
    assert parse_dates(aware, DateFormat(formats=("%d/%m/%Y",))).iloc[0] == pd.Timestamp("2023-03-05")


VN_DATES = {"issued": ["05/03/2023", "20/03/2023", "10/02/2022", "12/04/2023"],
            "expires": ["05/03/2025", "20/09/2024", "10/02/2023", None]}


def four_changes() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"change_id": [1, 2, 3, 4]}, geometry=[at(box(0, 0, 40, 40), k) for k in range(4)],
                            crs=UTM48N)


@pytest.mark.parametrize("dates", [DateFormat(formats=("%d/%m/%Y",)), DateFormat(dayfirst=True)])
def test_day_first_permits_get_the_right_reasons(tmp_path: Path, dates: DateFormat) -> None:
    footprints = [at(box(-5, -5, 45, 45), k) for k in range(4)]
    gpd.GeoDataFrame({"SO_GP": ["GP-1", "GP-2", "GP-3", "GP-4"], "NGAY_CAP": VN_DATES["issued"],
                      "NGAY_HET": VN_DATES["expires"]}, geometry=footprints, crs=UTM48N).to_file(tmp_path / "p.gpkg")
    rules = RuleConfig(as_of=date(2023, 4, 1), permit_columns=PermitColumns("SO_GP", "NGAY_CAP", "NGAY_HET"),
                       dates=dates)
    layers = CrosscheckInputs(permits=str(tmp_path / "p.gpkg"), rules=rules).read()
    out = crosscheck(four_changes(), layers.permits.data, rules=rules)
    assert list(out["reasons"]) == [PERMITTED, PERMITTED, PERMIT_EXPIRED, PERMIT_NOT_YET_VALID]
    with pytest.raises(LayerError, match="not ISO 8601"):  # undeclared: an error before any work, not a guess
        CrosscheckInputs(permits=str(tmp_path / "p.gpkg"), rules=RuleConfig(permit_columns=rules.permit_columns)).read()


def test_mixed_offsets_in_a_geojson_keep_the_day_written(tmp_path: Path) -> None:
    """GDAL types these as datetimes (and pyogrio would turn them into UTC: 2023-04-01T00:00+07:00 is
    31 March in UTC); the day written counts."""
    footprints = [at(box(-5, -5, 45, 45), k) for k in range(4)]
    issued = ["2023-04-01T00:00:00+07:00", "2023-03-20T09:30:00Z", "2022-02-10T00:00:00+07:00",
              "2023-04-02T00:00:00+07:00"]
    expires = ["2025-03-05T00:00:00+07:00", "2024-09-20T00:00:00Z", "2023-03-31T23:00:00-05:00", None]
    permits(footprints, ["T1", "T2", "T3", "T4"], issued=issued, expires=expires).to_crs(WGS84).to_file(
        tmp_path / "p.geojson")
    rules = RuleConfig(as_of=date(2023, 4, 1))
    layers = CrosscheckInputs(permits=str(tmp_path / "p.geojson"), rules=rules).read()
    assert list(layers.permits.data["expires"].dt.day.fillna(0)) == [5, 20, 31, 0]
    out = crosscheck(four_changes(), layers.permits.data, rules=rules)
    assert list(out["reasons"]) == [PERMITTED, PERMITTED, PERMIT_EXPIRED, PERMIT_NOT_YET_VALID]


def test_an_unreadable_date_is_never_open_ended(tmp_path: Path) -> None:
    permits([box(X, Y, X + 9, Y + 9)] * 2, ["A", "B"], expires=["2020-01-01", "unbefristet"]).to_file(
        tmp_path / "p.gpkg")
    with pytest.raises(LayerError, match=r"permits column expires: 1 date\(s\).*'unbefristet' \(permit_id B\)"):
        CrosscheckInputs(permits=str(tmp_path / "p.gpkg")).read()


# --- item 7: containers ----------------------------------------------------------------------------------

def by_year(tmp_path: Path) -> Path:
    path = tmp_path / "permits.gpkg"
    permits([box(X, Y, X + 9, Y + 9)], ["A-2017"]).to_file(path, layer="permits_2017")
    permits([box(X + 20, Y, X + 29, Y + 9)], ["B-2018"]).to_file(path, layer="permits_2018")
    return path


def test_a_geopackage_with_several_layers_needs_a_choice(tmp_path: Path) -> None:
    path = by_year(tmp_path)
    with pytest.raises(LayerError, match=r"holds 2 layers \(permits_2017, permits_2018\): say which with FILE:LAYER, "
                                         r"e.g. permits.gpkg:permits_2017"):
        read_layer(path, "permits")
    assert list(read_layer(f"{path}:permits_2018", "permits").data["permit_id"]) == ["B-2018"]
    assert list(read_layer(path, "permits", source=Source(layer="permits_2017")).data["permit_id"]) == ["A-2017"]
    with pytest.raises(LayerError, match="has no layer 'permits_2019'"):
        read_layer(f"{path}:permits_2019", "permits")
    pyogrio.write_dataframe(pd.DataFrame({"permit_id": ["T"]}), path, layer="attributes")  # a table, no geometry
    with pytest.raises(LayerError, match="no layer 'attributes' with geometries"):
        read_layer(f"{path}:attributes", "permits")
    assert split_layer_path(f"{path}:permits_2018") == (path, "permits_2018")
    assert split_layer_path(tmp_path / "missing.gpkg:x") == (Path(f"{tmp_path / 'missing.gpkg'}:x"), None)


def test_geoparquet_as_the_project_exports_it(tmp_path: Path) -> None:
    permits([box(X, Y, X + 9, Y + 9), box(X + 50_000, Y, X + 50_009, Y + 9)], ["near", "far"]).to_crs(WGS84).to_parquet(
        tmp_path / "p.parquet", schema_version="1.1.0", write_covering_bbox=True)
    layer = read_layer(tmp_path / "p.parquet", "permits", ("permit_id",),
                       extent=((X - 100, Y - 100, X + 1000, Y + 1000), UTM48N))
    assert list(layer.data["permit_id"]) == ["near"] and layer.features == 2 and layer.in_scene == 1
    assert layer.data.crs == WGS84
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(InputFileError, match="not a readable GeoParquet"):
        read_layer(tmp_path / "junk.parquet", "permits")


def test_csv_with_wkt_or_xy_and_a_declared_crs(tmp_path: Path) -> None:
    square = box(X, Y, X + 9, Y + 9)
    pd.DataFrame({"permit_id": ["007"], "issued": ["2023-01-01"], "WKT": [square.wkt]}).to_csv(tmp_path / "p.csv",
                                                                                              index=False)
    with pytest.raises(LayerError, match=r"CSV, which carries no CRS: declare .*crs: EPSG:4326, wkt: WKT"):
        read_layer(tmp_path / "p.csv", "permits")
    layer = read_layer(tmp_path / "p.csv", "permits", ("permit_id",), source=Source(crs="EPSG:32648"))
    assert layer.data.crs == UTM48N and layer.data.geometry.iloc[0].equals(square)
    assert layer.data["permit_id"].iloc[0] == "007"  # text stays text
    pd.DataFrame({"permit_id": ["A"], "lon": [106.7], "lat": [10.8]}).to_csv(tmp_path / "pts.csv", index=False)
    with pytest.raises(LayerError, match=r"not polygons \(Point; e.g. A\)"):
        read_layer(tmp_path / "pts.csv", "permits", ids="permit_id", source=Source(crs="EPSG:4326", x="lon", y="lat"))
    pd.DataFrame({"permit_id": ["A", "B"], "wkt": [square.wkt, "POLYGON ((0 0"]}).to_csv(tmp_path / "bad.csv",
                                                                                        index=False)
    with pytest.raises(LayerError, match=r"1 row\(s\) have geometry that cannot be read from wkt \(CSV lines 3\)"):
        read_layer(tmp_path / "bad.csv", "permits", source=Source(crs="EPSG:32648"))


def test_shapefile_without_prj(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="crs"):
        gpd.GeoDataFrame({"permit_id": ["X"]}, geometry=[box(X, Y, X + 9, Y + 9)]).to_file(tmp_path / "p.shp")
    with pytest.raises(LayerError, match=r"no CRS.*Shapefile without its \.prj file.*crs: EPSG"):
        read_layer(tmp_path / "p.shp", "permits")
    assert read_layer(tmp_path / "p.shp", "permits", source=Source(crs="EPSG:32648")).data.crs == UTM48N
    permits([box(X, Y, X + 9, Y + 9)]).to_file(tmp_path / "q.gpkg")
    with pytest.raises(LayerError, match="declares EPSG:4326"):  # a declared CRS never overrides the file's own
        read_layer(tmp_path / "q.gpkg", "permits", source=Source(crs="EPSG:4326"))


# --- item 8: sanity counts -----------------------------------------------------------------------------

def test_a_layer_with_nothing_inside_the_scene_is_a_warning(tmp_path: Path) -> None:
    near = permits([box(X, Y, X + 9, Y + 9)]).to_crs(WGS84)
    swapped = near.set_geometry(shapely.transform(near.geometry.to_numpy(), lambda xy: xy[:, ::-1]))
    swapped.to_file(tmp_path / "swapped.gpkg")
    near.to_file(tmp_path / "near.gpkg")
    extent = ((X - 100, Y - 100, X + 1000, Y + 1000), UTM48N)
    layers = CrosscheckInputs(permits=str(tmp_path / "swapped.gpkg"), zoning=None,
                              parcels=None).read(extent)
    assert layers.permits.features == 1 and layers.permits.in_scene == 0
    assert layers.provenance().layer_counts["permits"] == {"features": 1, "in_scene": 0, "repaired": 0,
                                                              "dropped_empty": 0}
    [warning] = layers.warnings()
    assert "none of its 1 features lies inside the scene" in warning and "lon/lat swapped" in warning
    assert CrosscheckInputs(permits=str(tmp_path / "near.gpkg")).read(extent).warnings() == []


def test_sources_reach_every_layer(tmp_path: Path) -> None:
    path = by_year(tmp_path)
    inputs = CrosscheckInputs(permits=str(path), sources=Sources(permits=Source(layer="permits_2018")))
    assert list(inputs.read().permits.data["permit_id"]) == ["B-2018"]
    assert json.dumps(asdict(inputs.read().provenance()))  # serialisable for summary.json
    assert inputs.read().provenance().permits.endswith("permits.gpkg:permits_2018")

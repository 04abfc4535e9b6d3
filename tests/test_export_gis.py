"""What GIS teams take away: styled GeoPackage 1.2 layers, a portable STAC item, exports that open cleanly."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import sqlite3
import struct
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from shapely.geometry import box

from changewatch.cli import cli
from changewatch.rs.config import DetectConfig, InferenceConfig
from changewatch.rs.crosscheck.judge import Judgement, judge
from changewatch.rs.crosscheck.layers import Layer, Layers
from changewatch.rs.crosscheck.rules import PERMITTED, SEVERITY
from changewatch.rs.crosscheck.settings import ParcelColumns, RuleConfig
from changewatch.rs.infer import ModelCache
from changewatch.rs.pipeline import detect
from changewatch.rs.runfolder import CROSSCHECK_SUMMARY, StagedOutput, read_run_layers, write_judgement, write_summary
from changewatch.rs.stac import validate_item
from changewatch.rs.summary import ChangeLayerInputs, RulesRecord, RunSummary
from tests.data import AS_OF, UTM48N, X, Y, plant_square, rule_case, textured_scene, utm_transform, write_raster
from tests.test_pipeline import sensitive_model

WARD = "Phường Bến Nghé"
PERMIT_PREFIX = "GP-Sở XD/"
GPKG_APPLICATION_ID = 0x47504B47  # "GPKG"
GPKG_1_2 = 10200


def judged_rule_case(ch: gpd.GeoDataFrame, permits: gpd.GeoDataFrame, zoning: gpd.GeoDataFrame,
                     parcel_ids: list[str], wards: list[str]) -> Judgement:
    """The rule case judged as of AS_OF with two parcels (ids and wards given) over its first and last changes."""
    parcels = gpd.GeoDataFrame({"parcel_id": parcel_ids, "ward": wards},
                               geometry=[box(X - 10, Y - 10, X + 250, Y + 30), box(X + 690, Y - 10, X + 900, Y + 30)],
                               crs=UTM48N)
    return judge(ch, Layers(Layer(permits, 0, "p"), Layer(zoning, 0, "z"), Layer(parcels, 0, "q")),
                 RuleConfig(as_of=AS_OF), ParcelColumns())


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A cross-check run folder (UTM 48N) of the hand-built rule case, with Vietnamese permit ids and wards."""
    ch, permits, zoning = rule_case()
    ch["area_m2"] = ch.area
    ch["max_prob"] = np.linspace(0.5, 0.9, len(ch)).astype(np.float32)
    permits["permit_id"] = PERMIT_PREFIX + permits["permit_id"]
    judgement = judged_rule_case(ch, permits, zoning, ["A", "C"], [WARD, "Phường Đa Kao"])
    run = tmp_path / "run"
    with StagedOutput(run) as out:
        write_judgement(judgement, out.path("changes.gpkg"), out.path("flagged.gpkg"))
        write_summary(RunSummary(judgement.counts(), judgement.areas(), ChangeLayerInputs(changes="changes.gpkg"),
                                 RulesRecord(AS_OF.isoformat(), "given", 20.0, 0.1, False)),
                      out.path(CROSSCHECK_SUMMARY))
    return run


def export(run: Path, out: Path, *options: str) -> None:
    result = CliRunner().invoke(cli, ["export", str(run), "-o", str(out), *options], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def styles(gpkg: Path) -> dict[str, dict[str, Any]]:
    """The rows of a GeoPackage's layer_styles table, by f_table_name (read with sqlite3)."""
    with sqlite3.connect(gpkg) as db:
        db.row_factory = sqlite3.Row
        return {row["f_table_name"]: dict(row) for row in db.execute("SELECT * FROM layer_styles")}


def geometry_columns(gpkg: Path) -> dict[str, str]:
    with sqlite3.connect(gpkg) as db:
        return dict(db.execute("SELECT table_name, column_name FROM gpkg_geometry_columns").fetchall())


def gpkg_version(gpkg: Path) -> tuple[int, int]:
    with sqlite3.connect(gpkg) as db:
        return db.execute("PRAGMA application_id").fetchone()[0], db.execute("PRAGMA user_version").fetchone()[0]


def rule_labels(qml: str) -> list[str]:
    root = ET.fromstring(qml)
    assert root.find("renderer-v2").get("type") == "RuleRenderer"
    return [rule.get("label") for rule in root.iter("rule")]


def test_exported_geopackage_is_version_1_2_with_qgis_styles(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "e"
    export(run_dir, out, "--formats", "gpkg")
    gpkg = out / "changewatch.gpkg"
    assert gpkg_version(gpkg) == (GPKG_APPLICATION_ID, GPKG_1_2)  # GDAL 3.12 alone writes 1.4 (10400)
    assert "layer_styles" in {name for name, _ in pyogrio.list_layers(gpkg)}  # GDAL sees the table
    assert len(pyogrio.read_dataframe(gpkg, layer="layer_styles")) == 3
    rows = styles(gpkg)
    assert set(rows) == {"changes", "flagged_changes", "flagged_parcels"}
    columns = geometry_columns(gpkg)
    for layer, row in rows.items():  # keyed as QGIS looks a layer's default style up
        assert (row["f_table_catalog"], row["f_table_schema"], row["useAsDefault"]) == ("", "", 1)
        assert row["f_geometry_column"] == columns[layer] and row["styleName"] == layer
        ET.fromstring(row["styleSLD"].encode())
    codes = [c for c in SEVERITY if c != PERMITTED]
    assert rule_labels(rows["flagged_changes"]["styleQML"]) == codes  # one colour per reason code
    assert rule_labels(rows["flagged_parcels"]["styleQML"]) == codes
    assert rule_labels(rows["changes"]["styleQML"]) == ["flagged", "not flagged"]
    sld = ET.fromstring(rows["flagged_changes"]["styleSLD"].encode())
    assert [e.text for e in sld.iter("{http://www.opengis.net/se}Name")][2:] == codes
    fills = {e.get("v") for e in ET.fromstring(rows["flagged_changes"]["styleQML"]).iter("prop")
             if e.get("k") == "color"}
    assert len(fills) == len(codes)  # each code its own colour
    source = read_run_layers(run_dir)["flagged_changes"]  # the layers themselves are unchanged
    back = gpd.read_file(gpkg, layer="flagged_changes")
    assert list(back["reasons"]) == list(source["reasons"])


def test_a_flag_with_several_codes_is_drawn_once_in_its_most_severe_colour() -> None:
    from changewatch.rs.styles import layer_styles, ogc_filter, qgis_filter

    style = next(s for s in layer_styles() if s.layer == "flagged_changes")
    filters = [qgis_filter(style, i) for i in range(len(style.classes))]
    assert filters[0] == "array_contains(string_to_array(\"reasons\", ','), 'NO_BUILD_ZONE')"
    assert filters[1] == ("array_contains(string_to_array(\"reasons\", ','), 'NO_PERMIT') AND "
                          "NOT array_contains(string_to_array(\"reasons\", ','), 'NO_BUILD_ZONE')")
    ogc = "{http://www.opengis.net/ogc}"
    second = ogc_filter(style, 1)
    assert [e.tag for e in second[0]] == [f"{ogc}Or", f"{ogc}Not"]
    assert [e.text for e in second.iter(f"{ogc}Literal")][:4] == ["NO_PERMIT", "NO_PERMIT,*", "*,NO_PERMIT",
                                                                   "*,NO_PERMIT,*"]


def test_detect_run_folder_is_styled_and_records_what_stac_needs(tmp_path: Path) -> None:
    before = textured_scene(64, 64, seed=21)
    write_raster(tmp_path / "before.tif", before, UTM48N, utm_transform())
    write_raster(tmp_path / "after.tif", plant_square(before, 20, 20, 12), UTM48N, utm_transform())
    for name, day in (("before.tif", "2017-01-10"), ("after.tif", "2018-03-23")):
        with rasterio.open(tmp_path / name, "r+") as ds:
            ds.update_tags(ACQUISITION_DATE=day)
    run = tmp_path / "run"
    detect(DetectConfig(str(tmp_path / "before.tif"), str(tmp_path / "after.tif"), str(run), min_area_m2=0.0,
                        threshold=0.5, inference=InferenceConfig(64, 16, 4)),
           progress=False, models=ModelCache(fixed=sensitive_model()))
    for gpkg, layers in (("changes.gpkg", {"changes"}), ("flagged.gpkg", {"flagged_changes"})):
        assert gpkg_version(run / gpkg) == (GPKG_APPLICATION_ID, GPKG_1_2)
        assert set(styles(run / gpkg)) == layers
    qml = ET.fromstring((run / "change_prob.qml").read_text())
    renderer = qml.find("pipe/rasterrenderer")
    assert (renderer.get("type"), renderer.get("classificationMin"), renderer.get("classificationMax")) == (
        "singlebandpseudocolor", "0", "1")
    assert [float(i.get("value")) for i in qml.iter("item")] == [0.0, 0.25, 0.5, 0.75, 1.0]
    inputs = json.loads((run / "summary.json").read_text())["inputs"]
    assert (inputs["before_date"], inputs["after_date"]) == ("2017-01-10", "2018-03-23")
    scene = str((tmp_path / "before.tif").resolve())
    assert inputs["files"][scene] == {"size": (tmp_path / "before.tif").stat().st_size,
                                      "checksum": "1220" + hashlib.sha256((tmp_path / "before.tif").read_bytes())
                                      .hexdigest()}

    out = tmp_path / "e"
    export(run, out)
    item = json.loads((out / "item.json").read_text())
    props = item["properties"]
    assert (props["start_datetime"], props["end_datetime"]) == ("2017-01-10T00:00:00Z", "2018-03-23T23:59:59Z")
    inputs_read = {link["title"]: link for link in item["links"] if link["rel"] == "derived_from"}
    assert inputs_read["before scene"]["file:checksum"] == inputs["files"][scene]["checksum"]
    assert inputs_read["before scene"]["href"] == Path(scene).as_uri()
    assert {"run folder: summary.json", "run folder: change_prob.tif", "after scene", "model",
            "model weights"} <= set(inputs_read)
    assert item["assets"]["change_prob.tif"]["type"] == "image/tiff; application=geotiff; profile=cloud-optimized"
    assert item["assets"]["change_prob.qml"]["roles"] == ["metadata"]
    assert (out / "change_prob.tif").read_bytes() == (run / "change_prob.tif").read_bytes()


def block_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network blocked by the test")

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def check_item_where_it_lies(folder: Path) -> dict[str, Any]:
    """Validate ``folder/item.json`` against the bundled schemas; every href relative and pointing at a file of
    ``folder`` with the recorded size and checksum. Returns the item."""
    import pystac

    data = json.loads((folder / "item.json").read_text())
    validate_item(data)
    item = pystac.Item.from_file(str(folder / "item.json"))
    files = [item.assets[key] for key in item.assets]
    for asset in files:
        assert asset.href.startswith("./")
        parts = [asset.to_dict(), *asset.extra_fields.get("changewatch:parts", {}).values()]
        for part in parts:
            path = folder / part["href"]
            assert path.is_file() and path.resolve().is_relative_to(folder.resolve())
            assert part["file:size"] == path.stat().st_size
            assert part["file:checksum"] == "1220" + hashlib.sha256(path.read_bytes()).hexdigest()
    return data


def test_stac_item_stays_valid_offline_after_a_move_or_a_zip(run_dir: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    block_network(monkeypatch)
    (run_dir / "notes.txt").write_text("a planner's note, not the run's")  # stray: neither asset nor input
    export(run_dir, tmp_path / "e")
    moved = tmp_path / "elsewhere" / "export"
    moved.parent.mkdir()
    shutil.move(tmp_path / "e", moved)
    item = check_item_where_it_lies(moved)
    written = {p.relative_to(moved).as_posix() for p in moved.rglob("*") if p.is_file()} - {"item.json"}
    listed = {a["href"][2:] for a in item["assets"].values()}
    listed |= {p["href"][2:] for a in item["assets"].values() for p in a.get("changewatch:parts", {}).values()}
    assert listed == written  # every file the export wrote, and nothing else
    assert not any("notes.txt" in json.dumps(part) for part in (item["assets"], item["links"]))
    shp = item["assets"]["shapefile/changes"]  # one asset per Shapefile, its parts in it
    assert shp["href"] == "./shapefile/changes.shp" and shp["roles"] == ["data"]
    assert set(shp["changewatch:parts"]) == {".shx", ".dbf", ".prj", ".cpg"}
    assert item["assets"]["changes.geojson"]["type"] == "application/geo+json"
    assert item["assets"]["shapefile/field_names.csv"]["roles"] == ["metadata"]
    archive = shutil.make_archive(str(tmp_path / "export"), "zip", moved)
    unzipped = tmp_path / "unzipped"
    shutil.unpack_archive(archive, unzipped)
    check_item_where_it_lies(unzipped)


def test_validation_refuses_an_invalid_item_and_an_unbundled_schema(run_dir: Path, tmp_path: Path) -> None:
    from pystac.errors import STACValidationError

    export(run_dir, tmp_path / "e", "--formats", "csv")
    item = json.loads((tmp_path / "e" / "item.json").read_text())
    bad = json.loads(json.dumps(item))
    bad["assets"]["changes.csv"]["file:checksum"] = "not hex"
    with pytest.raises(STACValidationError):
        validate_item(bad)
    item["stac_extensions"].append("https://stac-extensions.github.io/processing/v1.2.0/schema.json")
    with pytest.raises(ValueError, match="no bundled schema"):
        validate_item(item)


def test_csv_with_a_bom_for_excel(run_dir: Path, tmp_path: Path) -> None:
    export(run_dir, tmp_path / "bom", "--formats", "csv,shp", "--csv-bom", "--no-stac")
    export(run_dir, tmp_path / "plain", "--formats", "csv,shp", "--no-stac")
    for name in ("flagged_parcels.csv", "changes.csv", "flagged_change_parcels.csv", "shapefile/field_names.csv"):
        raw = (tmp_path / "bom" / name).read_bytes()
        assert raw.startswith(b"\xef\xbb\xbf") and raw[3:] == (tmp_path / "plain" / name).read_bytes()
        assert not (tmp_path / "plain" / name).read_bytes().startswith(b"\xef\xbb\xbf")
    parcels = pd.read_csv(tmp_path / "bom" / "flagged_parcels.csv", encoding="utf-8-sig")
    assert list(parcels.columns)[0] == "parcel_id" and WARD in set(parcels["ward"])
    changes = pd.read_csv(tmp_path / "bom" / "changes.csv", encoding="utf-8-sig", keep_default_na=False)
    assert f"{PERMIT_PREFIX}valid" in set(changes["permit_ids"])


def test_geojson_follows_rfc_7946(run_dir: Path, tmp_path: Path) -> None:
    export(run_dir, tmp_path / "e", "--formats", "geojson", "--no-stac")
    for name in ("changes", "flagged_changes", "flagged_parcels"):
        text = (tmp_path / "e" / f"{name}.geojson").read_text(encoding="utf-8")
        collection = json.loads(text)
        assert "crs" not in collection
        coordinates = [xy for feature in collection["features"] for ring in feature["geometry"]["coordinates"]
                       for xy in ring]
        assert coordinates and all(round(v, 7) == v for xy in coordinates for v in xy)  # at most 7 decimals
        assert max(len(repr(v).split(".")[1]) for xy in coordinates for v in xy) == 7
        for feature in collection["features"]:
            assert shapely.geometry.shape(feature["geometry"]).exterior.is_ccw
        assert WARD in text or name != "flagged_parcels"


def dbf_field_types(dbf: Path) -> dict[str, str]:
    """Field name → dBASE type letter, from the header of a .dbf file."""
    raw = dbf.read_bytes()
    header_size = struct.unpack("<H", raw[8:10])[0]
    fields = {}
    for offset in range(32, header_size - 1, 32):
        name = raw[offset:offset + 11].split(b"\0")[0].decode()
        fields[name] = chr(raw[offset + 11])
    return fields


def test_shapefile_booleans_are_integers(run_dir: Path, tmp_path: Path) -> None:
    export(run_dir, tmp_path / "e", "--formats", "shp", "--no-stac")
    assert dbf_field_types(tmp_path / "e" / "shapefile" / "changes.dbf")["flagged"] == "N"  # not dBASE logical L
    shp = gpd.read_file(tmp_path / "e" / "shapefile" / "changes.shp")
    source = read_run_layers(run_dir)["changes"]
    assert pd.api.types.is_integer_dtype(shp["flagged"])
    assert list(shp["flagged"]) == [int(v) for v in source["flagged"]]


def test_reason_colours_are_distinct_from_most_severe_red_to_permitted_blue() -> None:
    from changewatch.rs.crosscheck.rules import PERMITTED, SEVERITY
    from changewatch.rs.styles import reason_colours

    colours = reason_colours()
    assert list(colours) == list(SEVERITY) and len(set(colours.values())) == len(SEVERITY)
    first, last = colours[SEVERITY[0]], colours[PERMITTED]
    assert int(first[1:3], 16) > int(first[5:7], 16) and int(last[5:7], 16) > int(last[1:3], 16)

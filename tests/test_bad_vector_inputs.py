"""README "Bad inputs" rows for vector layers, settings and exports, each run through the CLI.

Every case names its README row (the ``input`` cell): the test checks that the row exists with the
exit code the CLI gives, that an error is one ``error:`` line with the row's key words, and, for
inputs that are read, the right value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
import shapely
from click.testing import CliRunner
from shapely.geometry import MultiPolygon, Point, box

from changewatch.cli import cli
from tests.data import ORIGIN, UTM48N, WGS84

X, Y = ORIGIN
README = Path(__file__).resolve().parents[1] / "README.md"


def changes(tmp_path: Path) -> Path:
    """One 40×40 m change at (X+20, Y+20) (UTM 48N)."""
    gpd.GeoDataFrame({"change_id": [1]}, geometry=[box(X + 20, Y + 20, X + 60, Y + 60)], crs=UTM48N).to_file(
        tmp_path / "changes.gpkg", layer="changes")
    return tmp_path / "changes.gpkg"


def permits(geoms: list[object], **columns: object) -> gpd.GeoDataFrame:
    data = {"permit_id": [f"P{i}" for i in range(len(geoms))], "issued": "2023-01-01", "expires": None, **columns}
    return gpd.GeoDataFrame(data, geometry=geoms, crs=UTM48N)


COVER = box(X + 15, Y + 15, X + 65, Y + 65)  # covers the change


def crosscheck(tmp_path: Path, layer: str, *extra: str) -> list[str]:
    return ["crosscheck", str(changes(tmp_path)), "-o", str(tmp_path / "out"), "--permits", layer,
            "--as-of", "2024-01-01", *extra]


def reasons(tmp_path: Path) -> list[str]:
    return list(gpd.read_file(tmp_path / "out" / "changes.gpkg", layer="changes")["reasons"])


def points(tmp_path: Path) -> list[str]:
    permits([Point(X + 30, Y + 30)]).to_file(tmp_path / "p.gpkg")
    return crosscheck(tmp_path, str(tmp_path / "p.gpkg"))


def overlapping_parts(tmp_path: Path) -> list[str]:
    main, extension = box(X, Y, X + 40, Y + 40), box(X + 20, Y + 20, X + 60, Y + 60)  # the change is the extension
    permits([MultiPolygon([main, extension])]).to_file(tmp_path / "p.gpkg")
    return crosscheck(tmp_path, str(tmp_path / "p.gpkg"))


def dd_mm(tmp_path: Path) -> list[str]:
    permits([COVER], issued=["05/03/2023"]).to_file(tmp_path / "p.gpkg")
    return crosscheck(tmp_path, str(tmp_path / "p.gpkg"))


def not_the_declared_format(tmp_path: Path) -> list[str]:
    permits([COVER, COVER], issued=["05/03/2023", "2023-03-06"]).to_file(tmp_path / "p.gpkg")
    (tmp_path / "columns.yaml").write_text("permits: {date_format: '%d/%m/%Y'}\n")
    return crosscheck(tmp_path, str(tmp_path / "p.gpkg"), "--columns", str(tmp_path / "columns.yaml"))


def mixed_offsets(tmp_path: Path) -> list[str]:
    permits([COVER, COVER], issued=["2023-03-05T00:00:00+07:00", "2023-03-20T09:30:00Z"],
            expires=["2024-01-01T00:00:00+07:00", None]).to_crs(WGS84).to_file(tmp_path / "p.geojson")
    return crosscheck(tmp_path, str(tmp_path / "p.geojson"))


def several_layers(tmp_path: Path) -> list[str]:
    permits([box(X - 100, Y, X - 90, Y + 10)]).to_file(tmp_path / "p.gpkg", layer="permits_2017")
    permits([COVER]).to_file(tmp_path / "p.gpkg", layer="permits_2018")
    return crosscheck(tmp_path, str(tmp_path / "p.gpkg"))


def geoparquet(tmp_path: Path) -> list[str]:
    permits([COVER]).to_crs(WGS84).to_parquet(tmp_path / "p.parquet", schema_version="1.1.0", write_covering_bbox=True)
    return crosscheck(tmp_path, str(tmp_path / "p.parquet"))


def csv_without_crs(tmp_path: Path) -> list[str]:
    pd.DataFrame({"permit_id": ["A"], "issued": ["2023-01-01"], "expires": [""], "WKT": [COVER.wkt]}).to_csv(
        tmp_path / "p.csv", index=False)
    return crosscheck(tmp_path, str(tmp_path / "p.csv"))


def shapefile_without_prj(tmp_path: Path) -> list[str]:
    permits([COVER]).to_file(tmp_path / "p.shp")
    (tmp_path / "p.prj").unlink()
    return crosscheck(tmp_path, str(tmp_path / "p.shp"))


def nothing_inside(tmp_path: Path) -> list[str]:
    lonlat = permits([COVER]).to_crs(WGS84)
    swapped = lonlat.set_geometry(shapely.transform(lonlat.geometry.to_numpy(), lambda xy: xy[:, ::-1]))
    swapped.to_file(tmp_path / "p.gpkg")
    return crosscheck(tmp_path, str(tmp_path / "p.gpkg"))


def columns_file(text: str) -> Callable[[Path], list[str]]:
    def build(tmp_path: Path) -> list[str]:
        permits([COVER]).to_file(tmp_path / "p.gpkg")
        (tmp_path / "columns.yaml").write_text(text)
        return crosscheck(tmp_path, str(tmp_path / "p.gpkg"), "--columns", str(tmp_path / "columns.yaml"))
    return build


def manifest_not_utf8(tmp_path: Path) -> list[str]:
    (tmp_path / "jobs.csv").write_bytes("area_id,before,after\nw1,São_Paulo/b.tif,a.tif\n".encode("latin-1"))
    return ["batch", str(tmp_path / "jobs.csv"), "-o", str(tmp_path / "out"), "--scheduler", "serial"]


def run_folder(tmp_path: Path) -> Path:
    """A crosscheck run whose change carries 30 permit ids (359 bytes: over dBASE's 254)."""
    many = permits([COVER] * 30)
    many["permit_id"] = [f"GP-{i:04d}/2023" for i in range(30)]
    many.to_file(tmp_path / "p.gpkg")
    args = crosscheck(tmp_path, str(tmp_path / "p.gpkg"))
    assert CliRunner().invoke(cli, args).exit_code == 0
    return tmp_path / "out"


def long_text_export(tmp_path: Path) -> list[str]:
    return ["export", str(run_folder(tmp_path)), "-o", str(tmp_path / "e"), "--formats", "shp"]


def export_over_an_export(tmp_path: Path) -> list[str]:
    run = run_folder(tmp_path)
    assert CliRunner().invoke(cli, ["export", str(run), "-o", str(tmp_path / "e")]).exit_code == 0
    return ["export", str(run), "-o", str(tmp_path / "e"), "--formats", "gpkg"]


def full_values_kept(tmp_path: Path) -> None:
    full = pd.read_csv(tmp_path / "e" / "shapefile" / "changes_full_values.csv")
    assert full["permit_ids"].iloc[0] == ",".join(f"GP-{i:04d}/2023" for i in range(30))
    item = json.loads((tmp_path / "e" / "item.json").read_text())
    assert item["properties"]["changewatch:shapefile"]["changes"]["values"] == {"permit_ids": 1, "valid_permit_ids": 1}


def no_stale_files(tmp_path: Path) -> None:
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == ["changewatch.gpkg", "item.json"]


def permitted(tmp_path: Path) -> None:
    assert reasons(tmp_path) == ["PERMITTED"]


def warned(tmp_path: Path) -> None:
    summary = json.loads((tmp_path / "out" / "crosscheck_summary.json").read_text())
    assert summary["inputs"]["layer_counts"]["permits"]["in_scene"] == 0 and len(summary["warnings"]) == 1
    assert reasons(tmp_path) == ["NO_PERMIT"]


@dataclass(frozen=True)
class Case:
    row: str  # the README row's ``input`` cell
    build: Callable[[Path], list[str]]
    exit: int
    words: tuple[str, ...] = ()  # in stderr
    check: Callable[[Path], None] | None = None


CASES = [
    Case("permit, zoning or parcel layer of points or lines", points, 5, ("not polygons", "Point", "P0")),
    Case("MultiPolygon permit whose parts overlap or nest", overlapping_parts, 0,
         check=permitted),
    Case("permit dates as text that is not ISO 8601 (`05/03/2023`), no format declared", dd_mm, 5,
         ("not ISO 8601", "'05/03/2023' (permit_id P0)", "date_format")),
    Case("a permit date that does not match the declared `date_format`", not_the_declared_format, 5,
         ("cannot be read as date_format '%d/%m/%Y'", "'2023-03-06' (permit_id P1)")),
    Case("ISO dates with mixed UTC offsets (`+07:00`, `Z`)", mixed_offsets, 0,
         check=permitted),
    Case("GeoPackage with several layers, none chosen", several_layers, 5,
         ("holds 2 layers (permits_2017, permits_2018)", ":LAYER")),
    Case("GeoParquet layer (as `export` writes it)", geoparquet, 0,
         check=permitted),
    Case("CSV layer without a declared CRS", csv_without_crs, 5, ("is a CSV, which carries no CRS", "crs: EPSG:4326")),
    Case("Shapefile without its `.prj`", shapefile_without_prj, 5, ("has no CRS", "without its .prj file")),
    Case("a layer none of whose features lies inside the scene (lon/lat swapped, wrong file)", nothing_inside, 0,
         ("warning: permits layer", "none of its 1 features lies inside the scene"), warned),
    *(Case("columns file that is a list, has a section that is not a mapping, a tolerance that is not a number, or "
           "an unknown key", columns_file(text), 3, ("error: columns config", words))
      for text, words in (("- permits\n", "found a list"), ("permits: [permit_id]\n", "must be a mapping"),
                          ("exceed_min_m2: 20 m2\n", "must be a number"), ("permit: {}\n", "unknown key"))),
    Case("batch manifest that is not UTF-8", manifest_not_utf8, 3, ("error: manifest", "cannot be parsed")),
    Case("Shapefile export of text over 254 bytes or field names over 10 bytes", long_text_export, 0,
         check=full_values_kept),
    Case("export into a folder holding an earlier export", export_over_an_export, 0, check=no_stale_files),
]


def readme_rows() -> dict[str, int]:
    """The Bad inputs table of README.md: input → exit code."""
    section = README.read_text(encoding="utf-8").split("## Bad inputs", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (.+?) \| .+ \| (\d+) \|$", section, flags=re.MULTILINE)
    return {row: int(code) for row, code in rows}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.row[:48])
def test_bad_input(case: Case, tmp_path: Path) -> None:
    assert readme_rows().get(case.row) == case.exit, f"README row {case.row!r} is missing or has another exit code"
    result = CliRunner().invoke(cli, case.build(tmp_path))
    assert result.exit_code == case.exit, result.output
    assert "Traceback" not in result.output
    if case.exit:
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    for words in case.words:
        assert words in result.stderr, result.stderr
    if case.check:
        case.check(tmp_path)

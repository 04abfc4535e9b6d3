"""CSV cells a spreadsheet would run as formulas are defused (``rs.io.csvcells``) in ``export``'s and ``report``'s CSVs.

OWASP "CSV Injection": text starting with ``=``, ``+``, ``-``, ``@``, tab or carriage return gets a ``'`` before it;
numbers are never changed.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from changewatch.cli import cli
from changewatch.rs.io.csvcells import defuse_cell, defuse_formulas
from changewatch.rs.io.vector import write_gpkg, write_table
from changewatch.rs.runfolder import StagedOutput, write_judgement
from tests.data import rule_case
from tests.report_data import make_run
from tests.test_cli import readme_bad_inputs
from tests.test_export_gis import judged_rule_case

LINK = '=HYPERLINK("http://evil.example/x","Ward 1")'
PARCEL = "+HK-0001"
README_ROW = ("a permit, zoning or parcel value starting with `=`, `+`, `-`, `@`, tab or CR "
              "(`=HYPERLINK(\"http://evil.example/x\",\"Ward 1\")`)")


def read_csv(path: Path) -> pd.DataFrame:
    """A CSV as text cells exactly as written (no NA guessing), BOM or not."""
    return pd.read_csv(path, encoding="utf-8-sig", dtype=str, keep_default_na=False)


@pytest.mark.parametrize(("cell", "written"), [
    (LINK, "'" + LINK), (PARCEL, "'" + PARCEL), ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\t=1", "'\t=1"), ("\r=1", "'\r=1"), ("Phường 1", "Phường 1"), ("P-001", "P-001"), ("", ""),
])
def test_text_cells_starting_a_formula_get_a_quote(cell: str, written: str) -> None:
    assert defuse_formulas(pd.DataFrame({"ward": [cell]}))["ward"].tolist() == [written]


def test_numbers_and_missing_values_are_untouched() -> None:
    table = pd.DataFrame({"lon": [-122.5, 10.0], "area_m2": [-0.0, 3.5], "n": [-3, 4], "flag": [True, False],
                          "mixed": [-7, None]})
    out = defuse_formulas(table)
    pd.testing.assert_frame_equal(out, table)
    assert out["mixed"].tolist()[0] == -7


def formula_run(tmp_path: Path) -> Path:
    """A crosscheck run folder (the rule case, UTM 48N) whose parcels hold formula-like ids and wards."""
    ch, permits, zoning = rule_case()
    ch["area_m2"] = ch.area
    judgement = judged_rule_case(ch, permits, zoning, [PARCEL, "@P-2"], [LINK, "-2+3"])
    run = tmp_path / "run"
    with StagedOutput(run) as out:
        write_judgement(judgement, out.path("changes.gpkg"), out.path("flagged.gpkg"))
    return run


def test_export_csvs_defuse_formulas_and_keep_numbers(tmp_path: Path) -> None:
    """The README's Bad inputs row, on export: parcels, links and changes CSVs; lon/lat and areas as numbers."""
    assert readme_bad_inputs()[README_ROW] == "0"
    run = formula_run(tmp_path)
    result = CliRunner().invoke(cli, ["export", str(run), "-o", str(tmp_path / "x"), "--formats", "csv",
                                      "--csv-geometry", "centroid", "--no-stac"])
    assert result.exit_code == 0, result.output
    parcels = read_csv(tmp_path / "x" / "flagged_parcels.csv").set_index("parcel_id")
    assert parcels.loc["'" + PARCEL, "ward"] == "'" + LINK and parcels.loc["'@P-2", "ward"] == "'-2+3"
    links = read_csv(tmp_path / "x" / "flagged_change_parcels.csv")
    assert set(links["parcel_id"]) <= {"'" + PARCEL, "'@P-2"} and len(links)
    changes = pd.read_csv(tmp_path / "x" / "flagged_changes.csv")
    assert changes["lon"].dtype == np.float64 and changes["area_m2"].dtype == np.float64
    assert not any(str(v).startswith("'") for v in read_csv(tmp_path / "x" / "flagged_changes.csv")["lon"])


def test_work_orders_defuse_formulas(tmp_path: Path) -> None:
    """The README's Bad inputs row, on report: parcel and ward of work_orders.csv; lon/lat stay numbers."""
    run = make_run(tmp_path)
    parcels = gpd.read_file(run / "flagged.gpkg", layer="flagged_parcels")
    names = {"P-001": PARCEL, "P-002": "@P-2"}
    write_gpkg(parcels.assign(parcel_id=parcels["parcel_id"].map(names), ward=[LINK, "-2+3"]),
               run / "flagged.gpkg", "flagged_parcels")
    links = gpd.read_file(run / "flagged.gpkg", layer="flagged_change_parcels")
    write_table(pd.DataFrame(links.assign(parcel_id=links["parcel_id"].map(names))), run / "flagged.gpkg",
                "flagged_change_parcels")
    result = CliRunner().invoke(cli, ["report", str(run), "-o", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    orders = read_csv(tmp_path / "report" / "work_orders.csv").set_index("id")
    assert orders.loc["1", "parcel"] == "'" + PARCEL and orders.loc["1", "ward"] == "'" + LINK
    assert orders.loc["3", "ward"] == f"'-2+3; {LINK}"  # sorted; only a cell's start can begin a formula
    assert pd.read_csv(tmp_path / "report" / "work_orders.csv", encoding="utf-8-sig")["lon"].dtype == np.float64


@pytest.mark.parametrize(("cell", "written"), [("-46.6333333", "-46.6333333"), ("+1.5e3", "+1.5e3"), ("-.5", "-.5"),
                                               ("-1+2", "'-1+2"), ("-", "'-"), ("+HK-1", "'+HK-1")])
def test_numbers_written_as_text_are_kept_formulas_are_not(cell: str, written: str) -> None:
    """A negative coordinate written as text (work orders' 7-decimal lon/lat) is a number, not a formula."""
    assert defuse_cell(cell) == written

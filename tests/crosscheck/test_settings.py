"""rs.crosscheck.settings: the --columns file read into typed settings; malformed files are one InputFileError."""

from __future__ import annotations

from pathlib import Path

import pytest

from changewatch.rs.crosscheck.settings import DateFormat, ParcelColumns, PermitColumns, Settings, Source, load_settings
from changewatch.rs.errors import InputFileError


def write(tmp_path: Path, text: str, suffix: str = ".yaml") -> Path:
    path = tmp_path / f"columns{suffix}"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file() -> None:
    assert load_settings(None) == Settings()


def test_every_key(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, """
permits: {permit_id: SỐ_GIẤY_PHÉP, issued: NGÀY_CẤP, date_format: "%d/%m/%Y", layer: permits_2018, crs: 4326}
zoning: {construction_allowed: DUOC_XAY}
parcels: {parcel_id: MA_THUA, owner: CHU, crs: "EPSG:32648", x: X, y: Y}
changes: {crs: "EPSG:4326", wkt: WKT}
exceed_min_m2: 35
exceed_min_fraction: 0.2
"""))
    rules = settings.rules
    assert rules.permit_columns == PermitColumns(permit_id="SỐ_GIẤY_PHÉP", issued="NGÀY_CẤP")
    assert rules.dates == DateFormat(formats=("%d/%m/%Y",)) and rules.zoning_columns.construction_allowed == "DUOC_XAY"
    assert (rules.exceed_min_m2, rules.exceed_min_fraction) == (35.0, 0.2)
    assert settings.parcel_columns == ParcelColumns(parcel_id="MA_THUA", owner="CHU")
    assert settings.sources.permits == Source(layer="permits_2018", crs="EPSG:4326")
    assert settings.sources.parcels == Source(crs="EPSG:32648", x="X", y="Y")
    assert settings.sources.changes == Source(crs="EPSG:4326", wkt="WKT")
    toml = load_settings(write(tmp_path, '[permits]\ndate_format = ["%d/%m/%Y", "%d/%m/%Y %H:%M"]\n', ".toml"))
    assert toml.rules.dates == DateFormat(formats=("%d/%m/%Y", "%d/%m/%Y %H:%M"))
    assert load_settings(write(tmp_path, "[permits]\ndayfirst = true\n", ".toml")).rules.dates.dayfirst


@pytest.mark.parametrize("text,message", [
    ("- permits\n- zoning\n", "must be a mapping with sections permits:, zoning:, parcels: .*found a list"),
    ("permits:\n  - permit_id\n", "permits must be a mapping of our column name to yours .*not a list"),
    ("permits: SO_GP\n", "permits must be a mapping"),
    ("permits: {permit_id: [A, B]}\n", r"permits: permit_id must be text .*not \['A', 'B'\]"),
    ("permits: {permit_no: X}\n", r"permits: unknown key\(s\) permit_no"),
    ("colour: red\n", r"unknown key\(s\) colour"),
    ("exceed_min_m2: twenty\n", "exceed_min_m2 must be a number, not 'twenty'"),
    ("exceed_min_m2: true\n", "exceed_min_m2 must be a number"),
    ("exceed_min_fraction: 10\n", "exceed_min_fraction must be ≥ 0 and ≤ 1, not 10"),
    ("permits: {date_format: dd/mm/yyyy}\n", "date_format must be a strptime format such as '%d/%m/%Y'"),
    ("permits: {date_format: '%d/%m/%Y', dayfirst: true}\n", "give date_format or dayfirst, not both"),
    ("permits: {dayfirst: 'yes'}\n", "dayfirst must be true or false"),
    ("permits: {crs: EPSG:999999}\n", "crs 'EPSG:999999' is not a CRS"),
    ("permits: {crs: 'EPSG:4326', x: lon}\n", "give both"),
    ("permits: {crs: 'EPSG:4326', x: lon, y: lat, wkt: WKT}\n", "not both"),
    ("zoning: {date_format: '%d/%m/%Y'}\n", r"zoning: unknown key\(s\) date_format"),
    ("changes: {change_id: ID}\n", r"changes: unknown key\(s\) change_id"),
    ("permits: {permit_id: X\n", "cannot be parsed"),
])
def test_malformed_settings_are_one_input_file_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InputFileError, match=message) as caught:
        load_settings(write(tmp_path, text))
    assert caught.value.exit_code == 3 and "\n" not in str(caught.value)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="not found"):
        load_settings(tmp_path / "missing.yaml")
    (tmp_path / "latin1.yaml").write_bytes("permits: {permit_id: SỐ}\n".encode("utf-16"))
    with pytest.raises(InputFileError, match="cannot be parsed"):
        load_settings(tmp_path / "latin1.yaml")
    with pytest.raises(InputFileError, match="cannot be parsed"):
        load_settings(write(tmp_path, "permits = [\n", ".toml"))

"""rs.crosscheck.rules and parcels: permit overlap by area, CRS handling, layer validation and repair."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import Polygon, box

from changewatch.rs.crosscheck.layers import read_layer
from changewatch.rs.crosscheck.parcels import attribute_parcels
from changewatch.rs.crosscheck.rules import (
    DEMOLISHED,
    EXCEEDS_PERMIT,
    NO_BUILD_ZONE,
    NO_PERMIT,
    PERMIT_EXPIRED,
    PERMIT_NOT_YET_VALID,
    PERMITTED,
    crosscheck,
    worst_reason,
)
from changewatch.rs.crosscheck.settings import ParcelColumns, RuleConfig, load_settings
from changewatch.rs.errors import InputFileError, LayerError
from tests.data import AS_OF, ORIGIN, UTM48N, WGS84, rule_case

X, Y = ORIGIN


def changes() -> gpd.GeoDataFrame:
    """Three 20 m squares 100 m apart along x (UTM 48N)."""
    return gpd.GeoDataFrame({"change_id": [1, 2, 3], "area_m2": [400.0] * 3},
                            geometry=[box(X + i * 100, Y, X + i * 100 + 20, Y + 20) for i in range(3)], crs=UTM48N)


def permits_wgs84() -> gpd.GeoDataFrame:
    """P1 overlaps change 1 (by 10×20 m); P2 only shares an edge with change 2; nothing near change 3."""
    utm = gpd.GeoDataFrame({"permit_id": ["P1", "P2"], "issued": ["2020-01-01"] * 2, "expires": ["2030-01-01"] * 2},
                           geometry=[box(X + 10, Y, X + 40, Y + 20), box(X + 120, Y, X + 150, Y + 20)], crs=UTM48N)
    return utm.to_crs(WGS84)  # another CRS than the changes: must be reprojected


def test_reasons_by_overlap_area() -> None:
    out = crosscheck(changes(), permits_wgs84(), rules=RuleConfig(as_of=date(2024, 1, 1), exceed_min_m2=1e9))
    assert out.crs == UTM48N
    assert list(out["reasons"]) == [PERMITTED, NO_PERMIT, NO_PERMIT]
    assert list(out["permit_ids"]) == ["P1", "", ""]
    assert list(out["flagged"]) == [False, True, True]
    assert list(out["change_id"]) == [1, 2, 3]


def test_several_permits_listed_sorted() -> None:
    p = gpd.GeoDataFrame({"permit_id": ["Z9", "A1"], "issued": ["2020-01-01"] * 2, "expires": [None, None]},
                         geometry=[box(X, Y, X + 5, Y + 5), box(X + 5, Y + 5, X + 15, Y + 15)], crs=UTM48N)
    out = crosscheck(changes(), p, rules=RuleConfig(as_of=date(2024, 1, 1), exceed_min_m2=1e9))
    assert out["permit_ids"].iloc[0] == "A1,Z9" and out["reasons"].iloc[0] == PERMITTED


def test_without_permits_everything_is_flagged() -> None:
    out = crosscheck(changes(), None)
    assert (out["reasons"] == NO_PERMIT).all() and out["flagged"].all()


def test_empty_changes() -> None:
    out = crosscheck(changes().iloc[:0], permits_wgs84())
    assert out.empty and {"reasons", "flagged", "permit_ids"} <= set(out.columns)


def test_read_layer_repairs_invalid_geometries(tmp_path: Path) -> None:
    bowtie = Polygon([(X, Y), (X + 20, Y + 20), (X + 20, Y), (X, Y + 20)])
    gpd.GeoDataFrame({"permit_id": ["B"], "issued": ["2020-01-01"], "expires": ["2030-01-01"]},
                     geometry=[bowtie], crs=UTM48N).to_file(tmp_path / "p.gpkg")
    layer = read_layer(tmp_path / "p.gpkg", "permits", ("permit_id",))
    assert layer.repaired == 1 and layer.data.geometry.is_valid.all()
    out = crosscheck(changes(), layer.data, rules=RuleConfig(as_of=date(2024, 1, 1)))
    assert out["permit_ids"].iloc[0] == "B"
    assert out["reasons"].iloc[0] == EXCEEDS_PERMIT  # the repaired bow-tie covers only half of the 400 m² change


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
    pm["issued"], pm["expires"] = "2020-01-01", "2030-01-01"
    plain = crosscheck(ch, pm, rules=RuleConfig(as_of=date(2024, 1, 1)))
    partitioned = crosscheck(ch, pm, rules=RuleConfig(as_of=date(2024, 1, 1), dask_min_features=0))
    assert (plain["reasons"] == EXCEEDS_PERMIT).sum() > 100 and (plain["reasons"] == NO_PERMIT).sum() > 100
    assert list(partitioned["permit_ids"]) == list(plain["permit_ids"])
    assert list(partitioned["reasons"]) == list(plain["reasons"])


def test_read_layer_extent_reads_only_the_scene(tmp_path: Path) -> None:
    far = box(X + 50_000, Y, X + 50_020, Y + 20)
    gpd.GeoDataFrame({"permit_id": ["near", "far"]}, geometry=[box(X, Y, X + 20, Y + 20), far],
                     crs=UTM48N).to_crs(WGS84).to_file(tmp_path / "p.gpkg")
    layer = read_layer(tmp_path / "p.gpkg", "permits", ("permit_id",),
                       extent=((X - 100, Y - 100, X + 1000, Y + 1000), UTM48N))
    assert list(layer.data["permit_id"]) == ["near"]


# --- the rules, on hand-built layers -------------------------------------------------------------
def test_every_reason_code() -> None:
    ch, permits, zoning = rule_case()
    out = crosscheck(ch, permits, zoning, RuleConfig(as_of=AS_OF))
    assert list(out["reasons"]) == [
        PERMITTED, PERMIT_EXPIRED, PERMIT_NOT_YET_VALID, PERMIT_EXPIRED, EXCEEDS_PERMIT, PERMITTED, PERMITTED,
        NO_BUILD_ZONE, f"{NO_BUILD_ZONE},{NO_PERMIT}"]
    assert list(out["flagged"]) == [r != PERMITTED for r in out["reasons"]]
    assert out["permit_ids"].iloc[3] == "expired-b,future-b" and out["valid_permit_ids"].iloc[3] == ""
    assert out["zone_ids"].iloc[8] == "green" and out["zone_ids"].iloc[0] == "open"


def test_date_edges() -> None:
    ch, permits, zoning = rule_case()
    day_after = crosscheck(ch, permits, rules=RuleConfig(as_of=date(2018, 3, 24)))
    assert day_after["reasons"].iloc[2] == PERMITTED            # "future" became valid on its issue day
    assert day_after["reasons"].iloc[6] == PERMIT_EXPIRED       # "edge-day" expired the day before
    day_before = crosscheck(ch, permits, rules=RuleConfig(as_of=date(2018, 3, 22)))
    assert day_before["reasons"].iloc[1] == PERMITTED           # "expired" still valid on its last day
    assert day_before["reasons"].iloc[6] == PERMIT_NOT_YET_VALID


def test_exceeds_tolerances_are_configurable() -> None:
    ch, permits, _ = rule_case()
    strict = crosscheck(ch, permits, rules=RuleConfig(as_of=AS_OF, exceed_min_m2=5.0, exceed_min_fraction=0.01))
    assert strict["reasons"].iloc[5] == EXCEEDS_PERMIT          # 19.75 m² outside now counts
    lax = crosscheck(ch, permits, rules=RuleConfig(as_of=AS_OF, exceed_min_fraction=0.8))
    assert lax["reasons"].iloc[4] == PERMITTED                  # 75 % outside is under 80 %


def test_empty_layers_and_worst_reason() -> None:
    ch, permits, zoning = rule_case()
    out = crosscheck(ch, permits.iloc[:0], zoning.iloc[:0], RuleConfig(as_of=AS_OF))
    assert (out["reasons"] == NO_PERMIT).all()
    reasons = crosscheck(ch, permits, zoning, RuleConfig(as_of=AS_OF))["reasons"]
    assert list(worst_reason(reasons))[-2:] == [NO_BUILD_ZONE, NO_BUILD_ZONE]
    assert worst_reason(reasons).iloc[0] == PERMITTED


def test_zoning_values_must_be_yes_or_no() -> None:
    ch, permits, zoning = rule_case()
    zoning["construction_allowed"] = ["yes", "maybe"]
    with pytest.raises(LayerError, match="maybe"):
        crosscheck(ch, permits, zoning, RuleConfig(as_of=AS_OF))


def test_parcels_attribution_and_table() -> None:
    ch, permits, zoning = rule_case()
    checked = crosscheck(ch, permits, zoning, RuleConfig(as_of=AS_OF))
    checked["max_prob"] = [0.5 + i / 20 for i in range(9)]
    flagged = checked[checked["flagged"]].reset_index(drop=True)  # changes 2, 3, 4, 5, 8, 9
    # parcel A covers changes 1–3 (x 0…250), B the left 5 m of change 5 (x 400…405), C changes 8–9; D nothing
    parcels = gpd.GeoDataFrame(
        {"parcel_id": ["A", "B", "C", "D"], "ward": ["W1", "W1", "W2", "W2"], "owner": ["o1", "o2", "o3", "o4"]},
        geometry=[box(X - 10, Y - 10, X + 250, Y + 30), box(X + 395, Y - 10, X + 405, Y + 30),
                  box(X + 690, Y - 10, X + 900, Y + 30), box(X + 2000, Y, X + 2100, Y + 100)], crs=UTM48N,
    ).to_crs(WGS84)
    links, table = attribute_parcels(flagged, parcels, ParcelColumns(owner="owner"))
    assert [tuple(r) for r in links[["change_id", "parcel_id"]].itertuples(index=False)] == \
        [(2, "A"), (3, "A"), (5, "B"), (8, "C"), (9, "C")]
    np.testing.assert_allclose(links["overlap_m2"], [400, 400, 100, 400, 400], rtol=1e-6)
    assert list(table["parcel_id"]) == ["A", "B", "C"] and list(table["ward"]) == ["W1", "W1", "W2"]
    assert list(table["n_flags"]) == [2, 1, 2] and list(table["owner"]) == ["o1", "o2", "o3"]
    np.testing.assert_allclose(table["flagged_area_m2"], [800, 100, 800], rtol=1e-6)
    assert list(table["worst_reason"]) == [PERMIT_EXPIRED, EXCEEDS_PERMIT, NO_BUILD_ZONE]
    np.testing.assert_allclose(table["max_prob"], [0.6, 0.7, 0.9])
    assert table.crs == WGS84


def test_parcels_with_nothing_flagged() -> None:
    ch, _, _ = rule_case()
    parcels = gpd.GeoDataFrame({"parcel_id": ["A"], "ward": ["W"]}, geometry=[box(X, Y, X + 50, Y + 50)], crs=UTM48N)
    links, table = attribute_parcels(ch.iloc[:0].assign(reasons=[], max_prob=[]), parcels)
    assert links.empty and table.empty and "worst_reason" in table.columns


def typed_rule_case() -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """rule_case with a change_type per change: changes 2 (expired permit), 5 (exceeds its permit),
    8 (in the no-build zone) and 9 (no permit, no-build zone) are demolitions."""
    ch, permits, zoning = rule_case()
    kinds = ["new_building", "demolished", "enlarged", "new_building", "demolished", "other_change",
             "new_building", "demolished", "demolished"]
    return ch.assign(change_type=kinds), permits, zoning


def test_demolitions_get_their_own_reason() -> None:
    ch, permits, zoning = typed_rule_case()
    out = crosscheck(ch, permits, zoning, RuleConfig(as_of=AS_OF))
    assert list(out["reasons"]) == [
        PERMITTED, DEMOLISHED, PERMIT_NOT_YET_VALID, PERMIT_EXPIRED, DEMOLISHED, PERMITTED, PERMITTED,
        DEMOLISHED, DEMOLISHED]
    assert out["flagged"].iloc[1] and out["permit_ids"].iloc[1] == "expired"  # still listed for the inspector
    untyped = crosscheck(ch.assign(change_type=None), permits, zoning, RuleConfig(as_of=AS_OF))
    assert DEMOLISHED not in set(untyped["reasons"])  # a model without building outputs cannot tell


def test_demolitions_judged_like_construction_when_the_rules_say_so(tmp_path: Path) -> None:
    ch, permits, zoning = typed_rule_case()
    (tmp_path / "rules.yaml").write_text("demolition_needs_permit: true\n")
    rules = load_settings(tmp_path / "rules.yaml").rules
    assert rules.demolition_needs_permit and not load_settings(None).rules.demolition_needs_permit
    judged = crosscheck(ch, permits, zoning, RuleConfig(as_of=AS_OF, demolition_needs_permit=True))
    plain = crosscheck(ch.drop(columns="change_type"), permits, zoning, RuleConfig(as_of=AS_OF))
    assert list(judged["reasons"]) == list(plain["reasons"])
    (tmp_path / "rules.toml").write_text("demolition_needs_permit = false\n")
    assert not load_settings(tmp_path / "rules.toml").rules.demolition_needs_permit


def test_demolition_setting_must_be_a_boolean(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text("demolition_needs_permit: maybe\n")
    with pytest.raises(InputFileError, match="demolition_needs_permit must be true or false, not 'maybe'"):
        load_settings(tmp_path / "rules.yaml")


def test_demolished_is_the_least_severe_flag() -> None:
    reasons = gpd.pd.Series([DEMOLISHED, f"{DEMOLISHED},{PERMIT_NOT_YET_VALID}", PERMITTED])
    assert list(worst_reason(reasons)) == [DEMOLISHED, PERMIT_NOT_YET_VALID, PERMITTED]
    ch, permits, zoning = typed_rule_case()
    flagged = crosscheck(ch, permits, zoning, RuleConfig(as_of=AS_OF)).assign(max_prob=0.9)
    flagged = flagged[flagged["flagged"]].reset_index(drop=True)  # changes 2, 3, 4, 5, 8, 9
    parcels = gpd.GeoDataFrame({"parcel_id": ["A", "B"], "ward": ["W1", "W1"]},
                               geometry=[box(X + 90, Y - 10, X + 250, Y + 30), box(X + 390, Y - 10, X + 430, Y + 30)],
                               crs=UTM48N)
    _, table = attribute_parcels(flagged, parcels)
    # A holds a demolition (change 2) and a permit not yet valid (change 3); B only a demolition
    assert list(table["worst_reason"]) == [PERMIT_NOT_YET_VALID, DEMOLISHED]

"""rs.buildings through rs.vectorize: one change object per building and its change type, on planted
probability rasters at 0.5 m (a 20×20-pixel house is 10 × 10 m = 100 m²)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from changewatch.rs.buildings import (
    DEMOLISHED,
    ENLARGED,
    NEW_BUILDING,
    OTHER_CHANGE,
    BuildingConfig,
    change_types,
)
from changewatch.rs.vectorize import VectorizeConfig, vectorize, vectorize_changes
from tests.data import write_probabilities

SIZE = 80
HOUSE_M2 = 100.0  # 20 × 20 pixels of 0.25 m²


def blank() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Change, building BEFORE and building AFTER probabilities: nothing anywhere."""
    return (np.full((SIZE, SIZE), 0.05, np.float32), np.full((SIZE, SIZE), 0.05, np.float32),
            np.full((SIZE, SIZE), 0.05, np.float32))


def two_touching_new_houses() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two new 20×20 houses side by side (cols 10–29 and 30–49): one change region; the building
    map dips along their shared wall (col 29), as segmenters draw a line between roofs."""
    change, before, after = blank()
    change[10:30, 10:50] = 0.9
    after[10:30, 10:50] = 0.9
    after[10:30, 29] = 0.3
    return change, before, after


def objects(tmp_path: Path, bands: tuple[np.ndarray, ...], min_area_m2: float = 20.0, block: int = 1024,
            **building: float):
    path = write_probabilities(tmp_path / "prob.tif", *bands)
    return vectorize_changes(path, VectorizeConfig(0.5, min_area_m2, buildings=BuildingConfig(**building)), block)


def test_two_touching_new_buildings_become_two_objects(tmp_path: Path) -> None:
    result = objects(tmp_path, two_touching_new_houses())
    changes = result.changes
    assert result.buildings and result.unsplit == 0
    assert list(changes["change_type"]) == [NEW_BUILDING, NEW_BUILDING]
    assert changes["area_m2"].sum() == pytest.approx(2 * HOUSE_M2)
    # the shared wall (one pixel column, 5 m²) goes to one side or the other
    assert all(95.0 <= a <= 105.0 for a in changes["area_m2"])
    assert changes.geometry.iloc[0].centroid.x < changes.geometry.iloc[1].centroid.x
    assert all(g.geom_type == "Polygon" for g in changes.geometry)
    np.testing.assert_allclose(changes["mean_prob"], [0.9, 0.9], atol=1e-6)


def test_touching_buildings_joined_by_a_neck_are_split_without_a_gap_in_the_map(tmp_path: Path) -> None:
    change, before, after = blank()
    for rows, cols in ((np.s_[10:30], np.s_[5:25]), (np.s_[14:34], np.s_[33:53]), (np.s_[18:22], np.s_[25:33])):
        change[rows, cols] = after[rows, cols] = 0.9  # two roofs and a 2 m wide passage between them
    changes = objects(tmp_path, (change, before, after)).changes
    assert list(changes["change_type"]) == [NEW_BUILDING, NEW_BUILDING]
    assert changes["area_m2"].sum() == pytest.approx(2 * HOUSE_M2 + 4 * 8 * 0.25)
    assert all(HOUSE_M2 <= a <= HOUSE_M2 + 8 for a in changes["area_m2"])


def test_a_long_roof_is_one_building(tmp_path: Path) -> None:
    change, before, after = blank()
    change[10:22, 5:75] = after[10:22, 5:75] = 0.9  # 6 × 35 m: its distance-transform ridge is a plateau
    changes = objects(tmp_path, (change, before, after)).changes
    assert list(changes["change_type"]) == [NEW_BUILDING] and changes["area_m2"].iloc[0] == pytest.approx(210.0)


def test_a_building_in_before_only_is_demolished(tmp_path: Path) -> None:
    change, before, after = blank()
    change[40:60, 40:60] = before[40:60, 40:60] = 0.9
    changes = objects(tmp_path, (change, before, after)).changes
    assert list(changes["change_type"]) == [DEMOLISHED]
    assert changes["area_m2"].iloc[0] == pytest.approx(HOUSE_M2)


def test_an_extension_of_a_standing_building_is_enlarged(tmp_path: Path) -> None:
    change, before, after = blank()
    before[10:30, 10:30] = after[10:30, 10:30] = 0.9   # a house standing on both dates
    after[10:30, 30:40] = 0.9                            # its new 5 m extension
    change[10:30, 27:40] = 0.9                           # the change map bleeds 1.5 m onto the old house
    after[10:30, 50:60] = change[10:30, 50:60] = 0.9     # a new shed 5 m away: not attached
    changes = objects(tmp_path, (change, before, after)).changes
    assert list(changes["change_type"]) == [ENLARGED, NEW_BUILDING]
    np.testing.assert_allclose(changes["area_m2"], [20 * 13 * 0.25, 20 * 10 * 0.25])


def test_change_with_no_building_is_other_change(tmp_path: Path) -> None:
    change, before, after = blank()
    change[5:25, 5:45] = 0.8  # a new car park
    changes = objects(tmp_path, (change, before, after)).changes
    assert list(changes["change_type"]) == [OTHER_CHANGE]
    assert changes["area_m2"].iloc[0] == pytest.approx(200.0)


def test_a_new_house_and_its_changed_yard_are_separate_objects(tmp_path: Path) -> None:
    change, before, after = blank()
    change[10:30, 10:60] = 0.9
    after[10:30, 10:30] = 0.9  # the house; cols 30–59 a new paved yard
    changes = objects(tmp_path, (change, before, after)).changes.sort_values("change_type")
    # the house keeps the changed fringe within 1 m (2 pixels) of its roof
    assert list(changes["change_type"]) == [NEW_BUILDING, OTHER_CHANGE]
    np.testing.assert_allclose(changes["area_m2"], [20 * 22 * 0.25, 20 * 28 * 0.25])


def test_change_only_raster_is_not_split_and_has_no_change_type(tmp_path: Path) -> None:
    change, _, _ = two_touching_new_houses()
    result = objects(tmp_path, (change,))
    assert not result.buildings and len(result.changes) == 1
    assert result.changes["area_m2"].iloc[0] == pytest.approx(2 * HOUSE_M2)
    assert result.changes["change_type"].isna().all() and result.changes["change_type"].dtype == object
    assert any("change_type empty" in note for note in result.notes)


def test_building_probabilities_of_one_date_only_do_not_split(tmp_path: Path) -> None:
    change, _, after = two_touching_new_houses()
    result = objects(tmp_path, (change, None, after))
    assert not result.buildings and len(result.changes) == 1 and result.changes["change_type"].isna().all()


def test_regions_larger_than_the_split_window_stay_whole_and_are_noted(tmp_path: Path) -> None:
    bands = two_touching_new_houses()
    # the region's window is 42 × 22 = 924 pixels (its bounding box and one pixel around)
    kept = objects(tmp_path, bands, max_split_pixels=923)
    assert len(kept.changes) == 1 and kept.unsplit == 1
    assert list(kept.changes["change_type"]) == [NEW_BUILDING]  # typed from its pixel counts
    assert any("1 change region(s) larger than 923 pixels" in note for note in kept.notes)
    split = objects(tmp_path, bands, max_split_pixels=924)
    assert len(split.changes) == 2 and split.unsplit == 0 and not split.notes


def test_minimum_area_applies_per_building(tmp_path: Path) -> None:
    change, before, after = two_touching_new_houses()
    change[10:30, 40:50] = after[10:30, 40:50] = 0.05  # the second house is now 10 × 5 m = 50 m²
    changes = objects(tmp_path, (change, before, after), min_area_m2=60.0).changes
    assert len(changes) == 1 and 95.0 <= changes["area_m2"].iloc[0] <= 105.0


@pytest.mark.parametrize("block", [7, 16])
def test_blocks_give_the_same_buildings_as_one_read(tmp_path: Path, block: int) -> None:
    change, before, after = two_touching_new_houses()
    before[50:70, 50:70] = change[50:70, 50:70] = 0.9  # and a demolished house
    path = write_probabilities(tmp_path / "prob.tif", change, before, after)
    whole = vectorize(path, VectorizeConfig(0.5, 20.0), block=1024)
    blocks = vectorize(path, VectorizeConfig(0.5, 20.0), block=block)
    assert list(whole["change_type"]) == [NEW_BUILDING, NEW_BUILDING, DEMOLISHED]
    assert list(blocks["change_type"]) == list(whole["change_type"])
    assert all(a.equals(b) for a, b in zip(blocks.geometry, whole.geometry, strict=True))
    np.testing.assert_allclose(blocks["mean_prob"], whole["mean_prob"], rtol=1e-6)


def test_simplify_applies_per_building(tmp_path: Path) -> None:
    path = write_probabilities(tmp_path / "prob.tif", *two_touching_new_houses())
    changes = vectorize(path, VectorizeConfig(0.5, 20.0, simplify_m=1.0))
    assert len(changes) == 2 and changes.geometry.is_valid.all()


def test_change_type_rule_by_hand() -> None:
    config = BuildingConfig()
    pixels = np.array([100, 100, 100, 100, 100, 100], float)
    counts = np.array([  # new, gone, standing
        [30, 10, 40],    # 60 not standing, 40 of them new or gone (≥ half): new outnumbers gone
        [30, 10, 40],    # the same, sharing a 3 m wall with a standing building
        [10, 30, 40],    # gone outnumbers new
        [20, 5, 40],     # 25 of 60 new or gone: under half
        [0, 0, 100],     # all standing on both dates
        [0, 0, 0],       # no building at all
    ], float)
    wall = np.array([1.5, 3.0, 3.0, 3.0, 0.0, 0.0])
    assert list(change_types(pixels, counts, wall, config)) == [
        NEW_BUILDING, ENLARGED, DEMOLISHED, OTHER_CHANGE, OTHER_CHANGE, OTHER_CHANGE]

"""rs.evaluate: known-answer evaluations of whole pairs (pixels and objects), site discovery, a folder from Python."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import torch
from shapely.geometry import box

from changewatch.rs.config import EvalOptions
from changewatch.rs.errors import IncompatibleScenesError, InputFileError
from changewatch.rs.evaluate import evaluate, evaluate_folder, find_sites, predicted_objects
from changewatch.rs.infer import ChangeModel
from tests.data import (
    ORIGIN,
    UTM48N,
    BrightnessChangeNet,
    BuildingBrightnessNet,
    building_spec,
    plant_square,
    pointwise_spec,
    textured_scene,
    utm_transform,
    write_raster,
)


def test_find_sites(sites: Path, tmp_path: Path) -> None:
    assert [s.name for s in find_sites(sites)] == ["alpha", "beta", "gamma"]
    assert [s.name for s in find_sites(sites, ["gamma", "alpha"])] == ["gamma", "alpha"]
    with pytest.raises(InputFileError, match="no labelled pair named delta"):
        find_sites(sites, ["delta"])
    with pytest.raises(InputFileError, match="no labelled pairs"):
        find_sites(tmp_path / "sites" / "alpha")


def test_evaluate_known_answer(sites: Path) -> None:
    # The pointwise brightness model finds exactly the planted squares: perfect scores.
    model = ChangeModel(BrightnessChangeNet(4), pointwise_spec(), torch.device("cpu"))
    report = evaluate(find_sites(sites), model, EvalOptions(threshold=0.5))
    assert report.pooled.tp == 12 * 12 + 8 * 8 + 10 * 10 + 6 * 6 + 14 * 14
    assert report.pooled.f1 == pytest.approx(1.0)
    figures = report.metrics()
    assert figures.pooled.pixels.f1 == pytest.approx(1.0) and figures.sites["beta"].objects.objects_hit == 1
    d = report.to_dict()
    assert {"precision", "recall", "f1", "iou", "object_recall", "sites"} <= set(d)
    assert set(d["sites"]) == {"alpha", "beta", "gamma"}
    # 10 m pixels: the 6×6 square (3 600 m²) and larger count at the default 200 m²; all five are hit
    assert (report.objects.total, report.objects.hit) == (5, 5) and d["object_recall"] == 1.0


def test_object_precision_recall_f1_of_a_known_prediction(tmp_path: Path) -> None:
    # the pointwise model predicts the three planted squares exactly; the labels are other shapes
    site = tmp_path / "sites" / "one"
    site.mkdir(parents=True)
    before = textured_scene(64, 64, seed=4)
    after = plant_square(plant_square(plant_square(before, 10, 10, 10), 40, 40, 10), 5, 45, 10)
    label = np.zeros((64, 64), np.uint8)
    label[10:20, 10:16] = 1          # IoU with the first square 0.6
    label[40:50, 40:43] = 1          # IoU with the second 0.3; the third square is a false positive
    for name, data in (("before.tif", before), ("after.tif", after), ("change.tif", label)):
        write_raster(site / name, data, UTM48N, utm_transform())
    model = ChangeModel(BrightnessChangeNet(4), pointwise_spec(), torch.device("cpu"))
    report = evaluate(find_sites(tmp_path / "sites"), model, EvalOptions(threshold=0.5))
    assert (report.objects.total, report.objects.predicted, report.objects.matched) == (2, 3, 1)
    d = report.to_dict()
    assert d["object_precision"] == pytest.approx(1 / 3) and d["object_recall_iou50"] == pytest.approx(0.5)
    assert d["object_f1"] == pytest.approx(0.4) and d["object_recall"] == 1.0  # both true objects are touched
    assert d["sites"]["one"]["object_f1"] == pytest.approx(0.4)


def touching_houses_site(root: Path) -> Path:
    """A vector-labelled site at 0.5 m: two new houses (16 × 16 and 12 × 12 px) joined by a 2 m wide
    passage, one change region; labelled as two polygons, the passage unlabelled change."""
    site = root / "houses"
    site.mkdir(parents=True)
    before = textured_scene(200, 200, seed=5)
    after = plant_square(plant_square(before, 20, 20, 16), 22, 40, 12)
    after[:, 26:30, 36:40] = 6000
    t = utm_transform(pixel_m=0.5)
    write_raster(site / "before.tif", before, UTM48N, t)
    write_raster(site / "after.tif", after, UTM48N, t)
    x, y = ORIGIN
    houses = [box(x + 10, y - 18, x + 18, y - 10), box(x + 20, y - 17, x + 26, y - 11)]
    gpd.GeoDataFrame({"kind": ["house", "house"]}, geometry=houses, crs=UTM48N).to_file(site / "changes.gpkg")
    return root


def test_predicted_objects_are_split_per_building_with_building_outputs(tmp_path: Path) -> None:
    sites = find_sites(touching_houses_site(tmp_path / "sites"))
    options = EvalOptions(object_min_m2=10.0)
    split = evaluate(sites, ChangeModel(BuildingBrightnessNet(4), building_spec(), torch.device("cpu")),
                     options).objects
    assert (split.total, split.predicted, split.matched) == (2, 2, 2)
    # the same prediction without building outputs: one region, which matches the larger house
    # only (IoU 256 / 416)
    change_only = replace(building_spec(), outputs=("change",))
    whole = evaluate(sites, ChangeModel(BuildingBrightnessNet(4, building_outputs=False), change_only,
                                        torch.device("cpu")), options).objects
    assert (whole.total, whole.predicted, whole.matched) == (2, 1, 1)


def test_predicted_objects_wants_the_smallest_object_resolved(tmp_path: Path) -> None:
    # None means "the model's own", which predicted_objects cannot know: a clear error, before any reading
    with pytest.raises(ValueError, match="object_min_m2 must be given"):
        predicted_objects(tmp_path / "prob.tif", None, 0.5, EvalOptions())  # type: ignore[arg-type]


def test_a_folder_is_evaluated_from_python_as_the_command_does(sites: Path, tiny_checkpoint: Path) -> None:
    done = evaluate_folder(sites, ["gamma", "alpha"], str(tiny_checkpoint), EvalOptions(threshold=0.5))
    assert list(done.report.sites) == ["gamma", "alpha"] and done.report.threshold == 0.5
    assert done.model == "tiny-test" and done.choice.reason == "given with --model"
    with pytest.raises(IncompatibleScenesError, match="too small for model changewatch-rgbn"):
        evaluate_folder(sites, ["beta"])  # without --model: the shipped model for 4 bands at 10 m, which wants 128²

"""``rs.runinputs``: a run's scene files against the checksums its summary records — a changed file (also a STAC
item's asset) is refused naming it, a missing one is left to the scene reader, one without a record is returned."""

from __future__ import annotations

from pathlib import Path

import pytest

from changewatch.rs.errors import InputChangedError, InputFileError
from changewatch.rs.runinputs import check_scene_files, not_checked, scene_files
from changewatch.rs.summary import SceneInputs, file_records


def _inputs(tmp_path: Path, record: bool = True) -> tuple[SceneInputs, dict[str, Path]]:
    """A run's inputs: BEFORE a plain file, AFTER a STAC item (in a collection) with one asset and a mask."""
    files = {name: tmp_path / name for name in ("before.tif", "items.json", "B04.tif", "SCL.tif", "mask.gpkg")}
    for i, path in enumerate(files.values()):
        path.write_bytes(bytes([i]) * 64)
    intake = {"after": {"item": f"{files['items.json']}#S2B_1", "assets": [{"href": str(files["B04.tif"])}],
                        "mask": {"href": str(files["SCL.tif"])}}}
    inputs = SceneInputs(before=str(files["before.tif"]), after=f"{files['items.json']}#S2B_1", intake=intake,
                         masks=[str(files["mask.gpkg"])], files=file_records(files.values()) if record else {})
    return inputs, files


def test_scene_files_are_the_scenes_the_intake_files_and_the_masks(tmp_path: Path) -> None:
    inputs, files = _inputs(tmp_path)
    assert scene_files(inputs.before, inputs.after, inputs.intake, inputs.masks) == [
        str(files["before.tif"]), f"{files['items.json']}#S2B_1", str(files["items.json"]), str(files["B04.tif"]),
        str(files["SCL.tif"]), str(files["mask.gpkg"])]


def test_unchanged_files_pass(tmp_path: Path) -> None:
    inputs, _ = _inputs(tmp_path)
    assert check_scene_files(inputs) == []


@pytest.mark.parametrize("name", ["before.tif", "items.json", "B04.tif", "SCL.tif", "mask.gpkg"])
def test_a_changed_file_is_refused_by_name(tmp_path: Path, name: str) -> None:
    inputs, files = _inputs(tmp_path)
    files[name].write_bytes(b"\xff" * 64)  # same size, other content
    with pytest.raises(InputChangedError, match=f"{files[name]} changed since the run: checksum differs; re-run"):
        check_scene_files(inputs)
    assert issubclass(InputChangedError, InputFileError) and InputChangedError.exit_code == 3


def test_a_missing_file_is_left_to_the_reader(tmp_path: Path) -> None:
    inputs, files = _inputs(tmp_path)
    files["B04.tif"].unlink()
    assert check_scene_files(inputs) == []


def test_files_without_a_recorded_checksum_are_returned_and_warned(tmp_path: Path) -> None:
    inputs, files = _inputs(tmp_path, record=False)
    unchecked = [str(files[n]) for n in ("before.tif", "items.json", "B04.tif", "SCL.tif", "mask.gpkg")]
    assert check_scene_files(inputs) == unchecked
    assert not_checked(unchecked[:1]) == [f"{unchecked[0]} not checked against the run: it recorded no checksum "
                                          "for it (an earlier version, or not a local file)"]


def test_a_zipped_product_is_checked_by_its_archive(tmp_path: Path) -> None:
    archive = tmp_path / "S2B_MSIL2A.zip"
    archive.write_bytes(b"PK" * 32)
    member = f"/vsizip/{archive}/S2B_MSIL2A.SAFE"
    intake = {"before": {"item": f"{member}/MTD_MSIL2A.xml", "assets": [{"href": f"{member}/B04_10m.jp2"}],
                         "mask": None}}
    inputs = SceneInputs(before=member, after=member, intake=intake, files=file_records([archive]))
    assert scene_files(inputs.before, inputs.after, inputs.intake, inputs.masks) == [str(archive)]
    assert check_scene_files(inputs) == []
    archive.write_bytes(b"PK" * 33)
    with pytest.raises(InputChangedError, match="S2B_MSIL2A.zip changed since the run"):
        check_scene_files(inputs)

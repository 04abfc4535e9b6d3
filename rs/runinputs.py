"""Whether a detect run's scene files are still the files it read: their checksums against its ``summary.json``.

``detect`` records the size and SHA-256 of every file it read (``rs.summary.FileRecord``, in ``inputs.files``).
Commands that read a run's scenes again (``report``, ``labels``) call ``check_scene_files`` first: a scene whose
pixels changed since the run (same path, same grid, other pixels) would otherwise be drawn or cut beside the
run's flags and probabilities, which it no longer gives.

The scene files of a run (``scene_files``): BEFORE and AFTER; for a date given as a STAC item or a Sentinel-2
product, the item file and every asset and mask file read for it (``inputs.intake``); the masks given; a file
inside an archive (a zipped product) as its archive. ``detect`` records the checksums of these files. Rules:

- a file whose checksum differs from the recorded one: ``InputChangedError`` naming it (nothing is read further);
- a file that no longer exists, or a folder (a ``.SAFE`` product, whose files are checked one by one): left to
  the reader of the scenes, which names a missing one (``InputFileError``);
- a file the run recorded no checksum for (a run of an earlier version, or a GDAL path such as ``/vsicurl/…``
  that is not a local file): not checked, returned so the command can print a ``warning:`` line.

The notebook's ``rs.review.load_run`` does not call it: hashing reads every scene file whole (gigabytes for a
Sentinel-2 product), while the notebook often only lists flags; call ``check_scene_files(run.summary.inputs)``
before drawing chips from scenes that may have changed. Light: no heavy library.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from changewatch.rs.errors import InputChangedError
from changewatch.rs.io.gdalpaths import archive_of, is_gdal_path
from changewatch.rs.io.stac_scene import split_ref
from changewatch.rs.summary import FileRecord, SceneInputs


def scene_files(before: str | os.PathLike[str], after: str | os.PathLike[str],
                intake: Mapping[str, Mapping[str, Any]], masks: Iterable[str | os.PathLike[str]]) -> list[str]:
    """The files a detect run reads for its two dates, in order: BEFORE, AFTER, intake files, masks.

    Args:
        before: the BEFORE scene as given (a raster, a STAC item, a Sentinel-2 product).
        after: the AFTER scene, likewise.
        intake: per date given as a STAC item or product, what ``summary.json`` records of it
            (``inputs.intake``: ``item``, ``assets`` with their ``href``, ``mask`` with its ``href`` or None).
        masks: the mask files given (``--mask``).

    Returns:
        The paths as recorded (not resolved), each once; a file inside an archive (``/vsizip/ARCHIVE.zip/…``, a
        zipped Sentinel-2 product) as its archive, the local file that holds it.
    """
    files = [os.fspath(before), os.fspath(after)]
    for scene in intake.values():
        files.append(split_ref(str(scene["item"]))[0])  # collection.json#ID: its file
        files += [str(asset["href"]) for asset in scene["assets"]]
        if scene.get("mask"):
            files.append(str(scene["mask"]["href"]))
    return list(dict.fromkeys(_local(f) for f in [*files, *(os.fspath(m) for m in masks)]))


def _local(name: str) -> str:
    """The local file holding ``name``: its archive for an archive path (``rs.io.gdalpaths.archive_of``)."""
    archive = archive_of(name)
    return name if archive is None else str(archive)


def check_scene_files(inputs: SceneInputs) -> list[str]:
    """Check that a detect run's scene files still have the checksums it recorded (see the module docstring).

    Args:
        inputs: what the run read (``RunSummary.inputs`` of a detect run).

    Returns:
        The scene files that exist but have no recorded checksum (not checked), by absolute path.

    Raises:
        InputChangedError: a scene file's content differs from what the run read (exit code 3).
    """
    unchecked = []
    for name in scene_files(inputs.before, inputs.after, inputs.intake, inputs.masks):
        path = Path(name)
        key = str(path.resolve())
        recorded = inputs.files.get(key)
        if is_gdal_path(name):
            unchecked.append(name)  # not a local file: detect records no checksum
        elif not path.is_file():
            continue  # missing: the reader of the scenes names it; a product folder: its files are checked
        elif recorded is None:
            unchecked.append(key)
        elif FileRecord.of(path).checksum != recorded.checksum:
            raise InputChangedError(f"{key} changed since the run: checksum differs; re-run detect")
    return unchecked


def not_checked(paths: Iterable[str]) -> list[str]:
    """One warning line (without ``warning:``) per scene file ``check_scene_files`` could not check."""
    return [f"{p} not checked against the run: it recorded no checksum for it (an earlier version, or not a local "
            "file)" for p in paths]

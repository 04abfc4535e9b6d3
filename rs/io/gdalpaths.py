"""Scene paths that are not plain local files: GDAL virtual file systems and URLs.

A scene may be named by a path GDAL opens itself: ``/vsizip/archive.zip/scene.tif`` (a file inside an archive;
also ``/vsitar/``, ``/vsigzip/``, ``/vsi7z/``), ``/vsicurl/https://…`` or another ``/vsi…`` handler, or a URL
(``https://…``). These pass to GDAL as given: they are never made absolute as file paths are (that would
collapse ``//`` in a URL). Only the archive inside an archive path is a local file, so only it is resolved
against the folder of the file that lists the scene (``resolve_scene``) and checked for existence
(``archive_of``): a missing archive is reported as a missing file, not as an unreadable raster.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# /vsizip/ARCHIVE/inside: ARCHIVE relative (archive.zip) or absolute (/data/archive.zip, written /vsizip//data/…)
ARCHIVE_PATH = re.compile(r"^/vsi(?:zip|tar|gzip|7z|rar)/(?P<archive>.+?\.(?:zip|tar|tar\.gz|tgz|gz|7z|rar))(?=/|$)",
                          re.IGNORECASE)


def is_gdal_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is for GDAL to resolve (a ``/vsi…/`` path or a URL), not a local file path."""
    text = os.fspath(path)
    return text.startswith("/vsi") or "://" in text


def archive_of(path: str | os.PathLike[str]) -> Path | None:
    """The local archive an archive path (``/vsizip/ARCHIVE/inside``) reads, else None."""
    found = ARCHIVE_PATH.match(os.fspath(path))
    return Path(found["archive"]) if found else None


def resolve_scene(base: Path, path: str) -> str:
    """A scene path as listed in a file in folder ``base``, made absolute.

    Local paths are resolved against ``base``; GDAL paths are kept as given, but for the archive of an
    archive path, which is resolved against ``base`` (``/vsizip/a.zip/s.tif`` → ``/vsizip//base/a.zip/s.tif``).
    """
    if not is_gdal_path(path):
        return str((base / path).resolve())
    archive = archive_of(path)
    if archive is None or archive.is_absolute():
        return path
    prefix = path[:path.index("/", 1) + 1]  # "/vsizip/"
    return prefix + str((base / archive).resolve()) + path[len(prefix) + len(str(archive)):]


def scene_name(path: str | os.PathLike[str]) -> str:
    """How a run records a scene: the absolute path of a local file, a GDAL path as given."""
    return os.fspath(path) if is_gdal_path(path) else str(Path(path).resolve())

"""Writing files so that a failure loses nothing: atomically, with write failures reported as one line.

``atomic_write`` replaces one file: it is written under a temporary name beside it and renamed, so
a reader sees the old file or the complete new one. ``writing`` turns a failed write (permission
denied, read-only or full disk, a GDAL write error) into ``OutputError``. ``write_json`` and
``sha256`` are the JSON writer and the checksum every run record uses. Whole folders are replaced
by ``rs.io.staging``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from changewatch.rs.errors import ChangewatchError, OutputError

TMP_GLOB = ".*.tmp-*"  # what atomic_write's temporary names look like (for clean-up after a kill)


@contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` when the block succeeds.

    The temporary name is hidden and keeps the extension (GDAL drivers look at it); it is
    removed when the block raises. Permissions follow the umask, as for any new file.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{target.suffix}")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def _write_errors() -> tuple[type[BaseException], ...]:
    """Exceptions the writers raise when a file cannot be written (imported only when needed)."""
    from sqlite3 import Error as SQLiteError  # styles written into a GeoPackage (rs.styles)

    from pyogrio.errors import DataLayerError, DataSourceError
    from rasterio._err import CPLE_BaseError

    return OSError, CPLE_BaseError, DataSourceError, DataLayerError, SQLiteError


def describe_write_error(target: str | os.PathLike[str], exc: BaseException,
                         shown_as: tuple[str, str] | None = None) -> str:
    """One line: what could not be written and why (GDAL's reason, or the system's with its errno).

    GDAL reports a full disk or a read-only folder in its own words ("no such table", "sqlite3_open(...)
    failed: unable to open database file"), so where the error carries no errno the likely cause is
    added: the folder is read-only (``write_denied``), else the free space of the disk. ``shown_as``:
    (path, shown instead) — a staging folder is shown as the OUTDIR it stands for.
    """
    reason = " ".join(str(exc).split()) or type(exc).__name__
    if shown_as:
        reason = reason.replace(*shown_as)
    if not isinstance(exc, OSError) or exc.errno is None:
        folder = Path(target)
        while not folder.is_dir() and folder != folder.parent:
            folder = folder.parent
        denied = write_denied(folder)
        if denied:
            reason += f" ({folder}: {denied})"
        else:
            try:
                reason += f" ({shutil.disk_usage(folder).free / 2**20:,.0f} MiB free on that disk)"
            except OSError:
                pass
    return f"outputs cannot be written: {target}: {reason}"


def write_denied(folder: str | os.PathLike[str]) -> str | None:
    """Why nothing can be written into the existing ``folder``, as the system tells; None when it can be.

    "read-only file system" (mounted read-only), or "permission denied: read-only for this user" (its mode or
    owner; ``os.access``, so not for root).
    """
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except (OSError, AttributeError):  # no statvfs on Windows
        pass
    if not os.access(folder, os.W_OK):
        return "permission denied: read-only for this user"
    return None


@contextmanager
def writing(target: str | os.PathLike[str], shown_as: tuple[str, str] | None = None) -> Iterator[None]:
    """Turn a failed write inside the block into ``OutputError`` naming ``target``.

    A failed write: permission denied, read-only or full disk, a GDAL write error (see
    ``describe_write_error``). ChangewatchErrors pass unchanged.
    """
    try:
        yield
    except ChangewatchError:
        raise
    except Exception as exc:
        if not isinstance(exc, _write_errors()):
            raise
        raise OutputError(describe_write_error(target, exc, shown_as)) from exc


def write_json(data: dict[str, Any], path: Path) -> Path:
    """Write indented JSON (UTF-8); values json cannot encode are written with ``str``."""
    path.write_text(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (memory: one block, whatever the file size)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

"""Write a file so that readers see either the old file or the complete new one, never a part."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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

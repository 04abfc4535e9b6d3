"""Replace a whole output folder so that readers see either the old one or the complete new one.

``StagedDir`` replaces a whole output folder (a run's OUTDIR). The guarantee, whatever moment the
process is killed at (``kill -9``, power loss after the file system's journal replay):

- OUTDIR is either the complete earlier run or the complete new one, never a mix;
- the new run is written into a staging folder ``.NAME.staging-ID`` beside OUTDIR. When it is
  complete, OUTDIR is renamed ``.NAME.old-ID``, the staging folder is renamed OUTDIR, and the old
  folder is deleted. Between those two renames (microseconds) a reader finds no OUTDIR;
- a process killed between the two renames leaves no OUTDIR and the earlier run whole in
  ``.NAME.old-ID``: the next changewatch command that writes OUTDIR (or reads it as a run
  folder) renames it back first (``recover``). Staging folders of killed runs and old folders
  are deleted by the next run that writes OUTDIR.

Runs that write the same OUTDIR at the same time do not corrupt it: the last to finish wins.
Each live run holds a lock (``flock``) on its staging folder, so another run deletes only the
staging folders of dead runs, and the swap is serialised by a lock on OUTDIR's parent folder.
On a file system without ``flock`` (some network shares) run one changewatch per OUTDIR at a
time. OUTDIR may not be a mount point (it cannot be renamed): write into a folder inside it.

Because the whole folder is replaced, a run refuses (``OutputError``) an OUTDIR that holds
anything changewatch did not write, and an OUTDIR that contains one of the run's inputs.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import stat
import uuid
from collections.abc import Collection, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Self

from changewatch.rs.errors import OutputError
from changewatch.rs.io.files import TMP_GLOB, writing

STAGING = ".staging-"  # .NAME.staging-ID: a run being written
OLD = ".old-"  # .NAME.old-ID: the run OUTDIR held, between the swap and its deletion
OS_LITTER = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})  # files a desktop adds to any folder


# --- locks -----------------------------------------------------------------------------------

def _flock(fd: int, blocking: bool) -> bool:
    """Take an exclusive lock on ``fd``; False when another process holds it (non-blocking).

    Where locks are unsupported (no ``fcntl``, or a file system without ``flock``) it returns
    True: changewatch then assumes one run per OUTDIR at a time.
    """
    try:
        import fcntl
    except ImportError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (released when the block ends or the process dies)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        _flock(fd, blocking=True)
        yield
    finally:
        os.close(fd)


def _is_live(staging: Path) -> bool:
    """Whether a live process holds the lock on ``staging`` (a run still writing it)."""
    try:
        fd = os.open(staging, os.O_RDONLY)
    except OSError:
        return False
    try:
        return not _flock(fd, blocking=False)
    finally:
        os.close(fd)  # closing releases the lock we may just have taken


# --- replacing a folder ----------------------------------------------------------------------

def _siblings(target: Path, mark: str) -> list[Path]:
    """``.NAME<mark>*`` folders beside ``target``."""
    prefix = f".{target.name}{mark}"
    try:
        return [p for p in target.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return []


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)


def _recover(target: Path) -> None:
    """Undo a swap interrupted between its two renames and delete what dead runs left beside ``target``.

    The caller holds the lock on ``target.parent``.
    """
    olds = _siblings(target, OLD)
    if olds and not os.path.lexists(target):  # killed between the renames: the old run is whole
        newest = max(olds, key=lambda p: p.lstat().st_ctime_ns)  # the rename that removed OUTDIR
        os.rename(newest, target)
        olds.remove(newest)
    for old in olds:
        _remove(old)
    for staging in _siblings(target, STAGING):
        if not _is_live(staging):
            _remove(staging)


def recover(outdir: str | os.PathLike[str]) -> None:
    """Restore OUTDIR if a run was killed while swapping it, and delete what killed runs left beside it.

    That is the staging and old folders. Does nothing (and writes nothing) when there are none.
    Raises OutputError when OUTDIR cannot be restored.
    """
    target = _real(Path(outdir))
    if not (_siblings(target, OLD) or _siblings(target, STAGING)):
        return
    with writing(target), _folder_lock(target.parent):
        _recover(target)


def recover_children(folder: str | os.PathLike[str]) -> None:
    """``recover`` every output folder inside ``folder`` (a batch's per-area folders), and its temporary files.

    Deletes the temporary files ``atomic_write`` calls killed there left.
    """
    root = Path(folder)
    names = {p.name[1:].split(mark)[0] for mark in (STAGING, OLD) for p in root.glob(f".*{mark}*")}
    for name in names:
        recover(root / name)
    for tmp in root.glob(TMP_GLOB):
        _remove(tmp)


def _real(outdir: Path) -> Path:
    """Where OUTDIR really is (a symbolic link at OUTDIR is followed: the folder it names is replaced)."""
    return Path(os.path.realpath(outdir))


def _ours(name: str, known: Collection[str]) -> bool:
    """Whether an entry of an output folder is changewatch's.

    An output, a sidecar of one (``change_prob.tif.aux.xml``, ``flagged.gpkg-wal``), a temporary
    file of ``atomic_write``, or a desktop's litter.
    """
    return (name in known or name in OS_LITTER or fnmatch.fnmatch(name, TMP_GLOB)
            or any(name.startswith((f"{k}.", f"{k}-")) for k in known))


def foreign_names(folder: Path, known: Collection[str]) -> list[str]:
    """Names of the entries of the folder ``folder`` that changewatch did not write, sorted (see ``_ours``)."""
    return sorted(p.name for p in folder.iterdir() if not _ours(p.name, known))


def check_replaceable(outdir: str | os.PathLike[str], known: Collection[str],
                      inputs: Iterable[str | os.PathLike[str]] = ()) -> None:
    """Raise OutputError unless a run may replace ``outdir`` as a whole.

    It may when ``outdir`` is absent, or a folder holding only what changewatch writes (``known``
    names and their sidecars), it contains none of ``inputs``, lies inside none of them (the folders
    among ``inputs`` are run folders, which hold only what changewatch writes), and it is not a
    mount point.
    """
    target = _real(Path(outdir))
    for given in inputs:
        path = Path(os.path.realpath(given))
        if path in target.parents and path.is_dir():
            raise OutputError(f"output folder {outdir} is inside the run folder {given}, which holds only what "
                              "changewatch writes: write the outputs outside it")
        if path == target or target in path.parents:
            where = "is the output folder" if path == target else f"is inside the output folder {outdir}"
            raise OutputError(f"{given} {where}, which the run replaces as a whole: write the outputs to another "
                              "folder")
    if not os.path.lexists(target):
        return
    if not target.is_dir():
        raise OutputError(f"output folder {outdir} is a file")
    if os.path.ismount(target):
        raise OutputError(f"output folder {outdir} is a mount point, which cannot be replaced by renaming: "
                          f"write into a folder inside it (e.g. {Path(outdir) / 'run'})")
    foreign = foreign_names(target, known)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise OutputError(f"output folder {outdir} holds files changewatch did not write ({shown}); a run replaces "
                          "its output folder as a whole: move them away, or choose a new or empty folder")


def _swap(stage: Path, target: Path) -> Path | None:
    """Put ``stage`` in place of ``target``; returns the old folder to delete (None if there was none)."""
    if not os.path.lexists(target) or (target.is_dir() and not any(target.iterdir())):
        os.replace(stage, target)  # rename(2) replaces an empty folder in one step
        return None
    old = target.with_name(f".{target.name}{OLD}{uuid.uuid4().hex[:12]}")
    os.chmod(stage, stat.S_IMODE(target.stat().st_mode))  # the folder keeps its permissions
    os.rename(target, old)
    try:
        os.rename(stage, target)
    except BaseException:
        os.rename(old, target)  # put the earlier run back
        raise
    return old


class StagedDir:
    """A staging folder beside ``outdir`` that replaces it as a whole on success, or is deleted on failure.

    See the module docstring for the guarantee; on failure ``outdir`` is left as it was.

    Use as a context manager; write files under ``.path(name)``. ``known``: every name
    changewatch writes into such a folder (an OUTDIR holding anything else is refused);
    ``inputs``: files the run reads, which must not lie inside ``outdir``. Creating it checks
    both, restores or cleans what killed runs left, and creates the staging folder, so a
    folder that cannot be written fails before any work. Raises OutputError. Leaving the ``with``
    block normally commits (``commit``); an exception, or a failed commit, discards (``discard``).
    """

    def __init__(self, outdir: str | os.PathLike[str], known: Collection[str],
                 inputs: Iterable[str | os.PathLike[str]] = ()) -> None:
        self.outdir = Path(outdir)
        self.known = frozenset(known)
        self._target = _real(self.outdir)
        with writing(self.outdir):
            check_replaceable(self.outdir, self.known, inputs)
            self._target.parent.mkdir(parents=True, exist_ok=True)
            recover(self._target)
            check_replaceable(self.outdir, self.known)  # a restored folder is checked too
            self.stage = self._mkdir()
        self._fd: int | None = os.open(self.stage, os.O_RDONLY)
        _flock(self._fd, blocking=False)  # live: other runs leave this staging folder alone

    def _mkdir(self) -> Path:
        while True:
            stage = self._target.with_name(f".{self._target.name}{STAGING}{uuid.uuid4().hex[:12]}")
            try:
                stage.mkdir(0o777)  # permissions follow the umask, as for a folder made with mkdir
            except FileExistsError:
                continue
            return stage

    def path(self, name: str) -> Path:
        """Where to write output ``name`` while the run is in progress."""
        return self.stage / name

    def final(self, name: str) -> Path:
        """Where output ``name`` will be once the run has succeeded."""
        return self.outdir / name

    def writing(self, name: str | None = None) -> AbstractContextManager[None]:
        """``writing`` for output ``name`` (for several outputs, None: the folder).

        The staging folder is shown as OUTDIR in the reason.
        """
        return writing(self.final(name) if name else self.outdir, shown_as=(str(self.stage), str(self.outdir)))

    def commit(self) -> list[Path]:
        """Replace ``outdir`` by the staging folder; returns the final paths of its entries."""
        names = sorted(p.name for p in self.stage.iterdir())
        with writing(self.outdir):
            with _folder_lock(self._target.parent):
                _recover(self._target)  # a run killed mid-swap since we started
                check_replaceable(self.outdir, self.known)
                old = _swap(self.stage, self._target)
            self._release()
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)  # what is left is deleted by the next run
        return [self.outdir / n for n in names]

    def discard(self) -> None:
        """Delete the staging folder; ``outdir`` is left as it was."""
        self._release()
        shutil.rmtree(self.stage, ignore_errors=True)

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self.discard()
            return
        try:
            self.commit()
        except BaseException:
            self.discard()
            raise

"""A monitor re-run that detects nothing leaves the store untouched (works read-only); read-only folders are named.

``rs.monitor.digest`` (history.gpkg rewritten only when what it holds changed) and ``rs.io.files.write_denied``
(a write error without errno on a read-only folder says so, not the free space).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner
from pyogrio.errors import DataSourceError

from changewatch.cli import cli
from changewatch.rs.errors import OutputError
from changewatch.rs.io import files
from changewatch.rs.io.files import writing
from changewatch.rs.monitor import history
from changewatch.rs.monitor.history import HISTORY_GPKG
from tests.test_cli import readme_bad_inputs
from tests.test_monitor import store_state, write_scenes

NO_OP_ROW = "`monitor` re-run on a read-only store with no new scene (nothing to detect, layers unchanged)"
READ_ONLY_ROW = ("an output folder or store made read-only, where GDAL's error carries no reason "
                 "(`sqlite3_open(...) failed: unable to open database file`)")
SQLITE = "sqlite3_open(/s/history.gpkg) failed: unable to open database file"


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """Every folder under ``folder`` without write permission (root writes anyway: see ``refuse_writes``)."""
    folders = [folder, *(p for p in folder.rglob("*") if p.is_dir())]
    for f in folders:
        f.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        yield
    finally:
        for f in folders:
            f.chmod(stat.S_IRWXU)


def refuse_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to replace history.gpkg fails as on a read-only store, even for root."""
    def refused(path: Path) -> Iterator[Path]:
        raise DataSourceError(SQLITE)

    monkeypatch.setattr(history, "atomic_write", contextmanager(refused))


def test_a_no_op_rerun_leaves_a_read_only_store_as_it_was(tmp_path: Path, tiny_checkpoint: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's Bad inputs row: pairs skipped, exit 0, not one file of the store written."""
    assert readme_bad_inputs()[NO_OP_ROW] == "0"
    write_scenes(tmp_path, 3)
    store = tmp_path / "store"
    args = ["monitor", str(tmp_path / "scenes.csv"), "-o", str(store), "--model", str(tiny_checkpoint), "-q",
            "--tile", "64", "--overlap", "16"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    before = store_state(store)
    refuse_writes(monkeypatch)
    with read_only(store):
        again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert "[skipped] 2024-01-10_2024-03-05\n[skipped] 2024-03-05_2024-05-20\n" in again.output
    assert store_state(store) == before


def test_a_new_scene_still_rewrites_the_history(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """The digest is of what the history holds: a new date changes it, and the file is replaced."""
    write_scenes(tmp_path, 2)
    store = tmp_path / "store"
    args = ["monitor", str(tmp_path / "scenes.csv"), "-o", str(store), "--model", str(tiny_checkpoint), "-q",
            "--tile", "64", "--overlap", "16"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    written = (store / HISTORY_GPKG).read_bytes()
    write_scenes(tmp_path, 3)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0 and "[detected] 2024-03-05_2024-05-20" in result.output
    assert (store / HISTORY_GPKG).read_bytes() != written


def test_a_write_error_in_a_read_only_folder_names_the_permission_not_the_free_space(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's Bad inputs row: exit code 8, the folder and 'permission denied', no 'MiB free'."""
    assert readme_bad_inputs()[READ_ONLY_ROW] == "8"
    store = tmp_path / "store"
    store.mkdir()
    if os.geteuid() == 0:  # root may write anywhere: the system's answer for another user
        monkeypatch.setattr(files.os, "access", lambda path, mode: Path(path) != store)
    with read_only(store), pytest.raises(OutputError) as raised, writing(store / HISTORY_GPKG):
        raise DataSourceError(SQLITE)
    message = str(raised.value)
    assert raised.value.exit_code == 8
    assert message == (f"outputs cannot be written: {store / HISTORY_GPKG}: {SQLITE} "
                       f"({store}: permission denied: read-only for this user)")


def test_a_read_only_file_system_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class ReadOnly:
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(files.os, "statvfs", lambda path: ReadOnly())
    assert files.write_denied(tmp_path) == "read-only file system"


def test_a_full_disk_still_gets_the_free_space(tmp_path: Path) -> None:
    """A writable folder: GDAL's reason with the disk's free space, as before."""
    message = files.describe_write_error(tmp_path / "x.gpkg", DataSourceError("no such table"))
    assert message.startswith(f"outputs cannot be written: {tmp_path / 'x.gpkg'}: no such table (")
    assert message.endswith(" MiB free on that disk)")

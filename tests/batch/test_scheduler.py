"""An unreachable ``--scheduler``: one error line, exit code 2, nothing written (``rs.batch.scheduler``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dask
import distributed
import pytest
from click.testing import CliRunner

from changewatch.cli import cli
from changewatch.rs.batch.run import run_batch
from changewatch.rs.config import BatchConfig
from changewatch.rs.errors import SchedulerError
from tests.test_cli import readme_bad_inputs

NOWHERE = "tcp://127.0.0.1:1"  # port 1: nothing listens there
README_ROW = "`batch --scheduler tcp://…` where no Dask scheduler answers (`tcp://127.0.0.1:1`)"


@pytest.fixture(autouse=True)
def short_connect_timeout() -> Iterator[None]:
    """Dask tries a connection for 1 s instead of 30 s.

    ``distributed`` is imported first: leaving ``dask.config.set`` restores the settings as they were on entry,
    which would drop the ``distributed`` settings its import adds inside the block.
    """
    assert distributed.__version__
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        yield


def manifest(tmp_path: Path) -> Path:
    """A manifest of one job (its scenes are never read: the scheduler is checked first)."""
    path = tmp_path / "m.csv"
    path.write_text("area_id,before,after\nw1,a.tif,b.tif\n", encoding="utf-8")
    return path


def test_unreachable_scheduler_is_one_error_line_exit_2_nothing_written(tmp_path: Path) -> None:
    """The README's Bad inputs row: no traceback, no OUTDIR left behind."""
    assert readme_bad_inputs()[README_ROW] == "2"
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["batch", str(manifest(tmp_path)), "-o", str(out), "--scheduler", NOWHERE])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: cannot reach the Dask scheduler {NOWHERE}: "), result.output
    assert result.output.count("\n") == 1
    assert not out.exists()


def test_run_batch_raises_scheduler_error_before_creating_the_batch_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(SchedulerError, match="cannot reach the Dask scheduler tcp://127.0.0.1:1"):
        run_batch(BatchConfig(manifest=str(manifest(tmp_path)), outdir=str(out), scheduler=NOWHERE))
    assert not out.exists()

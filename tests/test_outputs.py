"""Outputs under faults: a run folder is replaced as a whole (kill -9 at every step leaves it wholly
old or wholly new, and the next run cleans up), and a write failure anywhere is one `error:` line,
exit 8, with OUTDIR left as it was. Tests run as root too, where chmod does not stop writes, so the
failures are made real in other ways (a path through a file, a file-size limit) or simulated."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import resource
import signal
import stat
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pytest
from click.testing import CliRunner

from changewatch.cli import cli
from changewatch.rs.errors import OutputError
from changewatch.rs.io import staging
from changewatch.rs.io.staging import StagedDir, check_replaceable, recover
from tests.data import UTM48N, plant_square, textured_scene, utm_transform, write_raster

ROOT = Path(__file__).resolve().parents[1]
KILLPOINTS = ROOT / "tests" / "killpoints.py"
FAKE_NAMES = {"a.txt", "b.txt", "sub"}


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path → SHA-256 of every file under ``folder`` (empty when it does not exist)."""
    if not folder.exists():
        return {}
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(outdir: Path) -> list[str]:
    """Staging and old folders, and temporary files, beside ``outdir``."""
    return sorted(p.name for p in outdir.parent.iterdir() if p.name.startswith(f".{outdir.name}."))


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


# --- StagedDir ---------------------------------------------------------------------------------

def fake(outdir: Path, tag: str, **kw: object) -> list[Path]:
    with StagedDir(outdir, FAKE_NAMES, **kw) as out:  # type: ignore[arg-type]
        out.path("a.txt").write_text(tag)
        out.path("sub").mkdir()
        (out.path("sub") / "c.txt").write_text(tag)
        out.path("b.txt").write_text(tag)
    return sorted(outdir.rglob("*"))


def contents(outdir: Path) -> set[str]:
    return {p.read_text() for p in outdir.rglob("*.txt")}


def test_replacing_a_folder_as_a_whole(tmp_path: Path) -> None:
    out = tmp_path / "run"
    fake(out, "v1")
    (out / "a.txt.aux.xml").write_text("sidecar of an old output")  # e.g. written by QGIS
    (out / ".DS_Store").write_text("desktop litter")
    with StagedDir(out, FAKE_NAMES) as staged:
        staged.path("a.txt").write_text("v2")  # the new run has fewer files than the old one
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"] and contents(out) == {"v2"}
    assert leftovers(out) == []


def test_a_failed_run_leaves_the_folder_as_it_was(tmp_path: Path) -> None:
    out = tmp_path / "run"
    fake(out, "v1")
    before = snapshot(out)
    with pytest.raises(RuntimeError), StagedDir(out, FAKE_NAMES) as staged:
        staged.path("a.txt").write_text("v2")
        raise RuntimeError("the run failed half-way")
    assert snapshot(out) == before and leftovers(out) == []


def test_folder_permissions(tmp_path: Path) -> None:
    made = tmp_path / "made"
    made.mkdir()
    fake(tmp_path / "new", "v1")  # a new folder gets the umask's permissions, as mkdir gives
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == stat.S_IMODE(made.stat().st_mode)
    (tmp_path / "new").chmod(0o750)
    fake(tmp_path / "new", "v2")  # a replaced folder keeps its own
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o750


def test_a_symbolic_link_to_the_folder_is_kept(tmp_path: Path) -> None:
    real, link = tmp_path / "real", tmp_path / "link"
    fake(real, "v1")
    link.symlink_to(real)
    fake(link, "v2")
    assert link.is_symlink() and contents(real) == {"v2"} and leftovers(real) == []


@pytest.mark.parametrize("case", ["foreign file", "input inside", "input is the folder", "a file"])
def test_folders_a_run_may_not_replace(tmp_path: Path, case: str) -> None:
    out = tmp_path / "run"
    fake(out, "v1")
    inputs: list[Path] = []
    if case == "foreign file":
        (out / "notes.docx").write_text("a planner's notes")
        message = r"holds files changewatch did not write \(notes.docx\)"
    elif case == "input inside":
        inputs = [out / "sub" / "c.txt"]
        message = "is inside the output folder"
    elif case == "input is the folder":
        inputs = [out]
        message = "is the output folder"
    else:
        out = tmp_path / "file"
        out.write_text("x")
        message = "is a file"
    before = snapshot(out) if out.is_dir() else out.read_text()
    with pytest.raises(OutputError, match=message):
        fake(out, "v2", inputs=inputs)
    assert (snapshot(out) if out.is_dir() else out.read_text()) == before
    assert leftovers(out) == []


def test_recovery_after_a_kill_between_the_two_renames(tmp_path: Path) -> None:
    out = tmp_path / "run"
    fake(out, "v1")
    fake(tmp_path / "staged", "v2")
    # the state a kill between the renames leaves: no OUTDIR, the old run aside, a complete staging folder
    out.rename(tmp_path / ".run.old-0123")
    (tmp_path / "staged").rename(tmp_path / ".run.staging-4567")
    recover(out)  # what every command writing OUTDIR, or reading it as a run folder, does first
    assert contents(out) == {"v1"} and leftovers(out) == []


def test_a_live_run_keeps_its_staging_folder_and_the_last_to_finish_wins(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = StagedDir(out, FAKE_NAMES)
    first.path("a.txt").write_text("first")
    fake(out, "second")  # starts and finishes while the first is still writing
    assert first.stage.exists() and contents(out) == {"second"}
    first.commit()
    assert contents(out) == {"first"} and leftovers(out) == []


def test_check_replaceable_accepts_what_changewatch_writes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    for name in ("a.txt", "a.txt.aux.xml", "b.txt-wal", "._done.tmp-1-abc.json", "Thumbs.db"):
        (out / name).write_text("x")
    check_replaceable(out, FAKE_NAMES)
    (out / "a.txt2").write_text("x")  # not a sidecar: a different name
    with pytest.raises(OutputError, match=r"\(a.txt2\)"):
        check_replaceable(out, FAKE_NAMES)


# --- kill -9 at every step ----------------------------------------------------------------------

def run_killed(root: Path, kill_at: int | str, target: str, *args: object) -> list[list[str]]:
    """Run ``target`` under tests/killpoints.py, killed before its file-system change ``kill_at``
    (an index, or ``EVENT:TEXT``, see tests/killpoints.py);
    returns the changes it made (``[event, path]``) when it was not killed, [] when it was."""
    count = root.parent / f"{root.name}.count"
    count.unlink(missing_ok=True)
    proc = subprocess.run([sys.executable, str(KILLPOINTS), str(root), str(kill_at), str(count), target,
                           *map(str, args)], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode == -signal.SIGKILL:
        return []
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(count.read_text())


def assert_wholly_old_or_new(out: Path, old: dict[str, str], is_new: callable[[Path], bool]) -> str:
    """After a kill: OUTDIR is missing only between the two renames (the old run then lies aside,
    whole); once recovered it is the old run byte for byte, or a complete new one."""
    if not out.exists():
        assert [p for p in leftovers(out) if ".old-" in p], "OUTDIR is missing and no old run lies beside it"
    recover(out)
    now = snapshot(out)
    if now == old:
        return "old"
    assert is_new(out), f"OUTDIR is neither the old run nor a complete new one: {sorted(now)}"
    return "new"


def test_fake_run_killed_at_every_step(tmp_path: Path) -> None:
    root = tmp_path / "k"
    root.mkdir()
    out = root / "run"
    assert run_killed(root, -1, "tests.killpoints:fake_run", out, "v1")
    old = snapshot(out)
    steps = len(run_killed(root, -1, "tests.killpoints:fake_run", out, "count"))
    assert steps >= 10  # mkdir staging, 3 files, a folder, chmod, 2 renames, rmtree of the old run…
    seen = set()
    for kill_at in range(steps):
        fake(out, "v1")  # the old run, and nothing beside it
        assert run_killed(root, kill_at, "tests.killpoints:fake_run", out, "v2") == []
        seen.add(assert_wholly_old_or_new(out, old, lambda o: snapshot(o).keys() == old.keys()
                                          and contents(o) == {"v2"}))
        fake(out, "v3")  # the next run cleans up what the killed one left
        assert contents(out) == {"v3"} and leftovers(out) == []
    assert seen == {"old", "new"}


def _detect_args(scenes: Path, after: str, model: Path, out: Path) -> list[object]:
    return ["detect", scenes / "before.tif", scenes / after, "-o", out, "--model", model, "--threshold", "0.5",
            "--tile", "64", "--overlap", "16", "-q", "--no-coregister"]


@pytest.fixture
def scenes(tmp_path: Path) -> Path:
    """BEFORE and two different AFTERs (so an old and a new run differ in every output)."""
    folder = tmp_path / "scenes"
    folder.mkdir()
    before = textured_scene(96, 96, seed=1)
    for name, data in {"before.tif": before, "after.tif": plant_square(before, 40, 30, 10),
                       "after2.tif": plant_square(before, 10, 60, 14)}.items():
        write_raster(folder / name, data, UTM48N, utm_transform())
    return folder


def is_new_detect_run(out: Path) -> bool:
    summary = json.loads((out / "summary.json").read_text())
    names = ["change_prob.qml", "change_prob.tif", "changes.gpkg", "flagged.gpkg", "summary.json"]
    return (sorted(p.name for p in out.iterdir()) == names
            and summary["inputs"]["after"].endswith("after2.tif")
            and len(gpd.read_file(out / "changes.gpkg", layer="changes")) == summary["counts"]["changes"]
            and len(gpd.read_file(out / "flagged.gpkg", layer="flagged_changes")) == summary["counts"]["flagged"])


def sweep_detect(tmp_path: Path, scenes: Path, model: Path) -> set[str]:
    root = tmp_path / "k"
    root.mkdir()
    out = root / "run"
    assert CliRunner().invoke(cli, list(map(str, _detect_args(scenes, "after.tif", model, out)))).exit_code == 0
    pristine = tmp_path / "pristine"
    os.rename(out, pristine)
    old = snapshot(pristine)
    seen = set()

    def reset() -> None:
        subprocess.run(["rm", "-rf", str(out), *map(str, root.glob(".run.*"))], check=True)
        subprocess.run(["cp", "-a", str(pristine), str(out)], check=True)

    reset()
    steps = len(run_killed(root, -1, "changewatch.cli:cli", *_detect_args(scenes, "after2.tif", model, out)))
    for kill_at in range(steps):
        reset()
        assert run_killed(root, kill_at, "changewatch.cli:cli", *_detect_args(scenes, "after2.tif", model, out)) == []
        seen.add(assert_wholly_old_or_new(out, old, is_new_detect_run))
    result = CliRunner().invoke(cli, list(map(str, _detect_args(scenes, "after2.tif", model, out))))
    assert result.exit_code == 0 and is_new_detect_run(out) and leftovers(out) == []
    return seen


def test_detect_killed_between_the_two_renames(tmp_path: Path, scenes: Path, tiny_checkpoint: Path) -> None:
    """The moment a kill used to leave a new changes.gpkg beside an old flagged.gpkg: now OUTDIR is
    missing, the old run lies whole beside it and is put back by the next command, which then
    cleans up. (Every other step: ``test_detect_killed_at_every_step``, slow.)"""
    root = tmp_path / "k"
    root.mkdir()
    out = root / "run"
    old = _first_run(scenes, tiny_checkpoint, out)
    new_args = _detect_args(scenes, "after2.tif", tiny_checkpoint, out)
    assert run_killed(root, "os.rename:.run.staging-", "changewatch.cli:cli", *new_args) == []
    assert not out.exists() and any(".old-" in p for p in leftovers(out))
    assert assert_wholly_old_or_new(out, old, is_new_detect_run) == "old"
    result = CliRunner().invoke(cli, list(map(str, new_args)))
    assert result.exit_code == 0 and is_new_detect_run(out) and leftovers(out) == []


@pytest.mark.slow
def test_detect_killed_at_every_step(tmp_path: Path, scenes: Path, tiny_checkpoint: Path) -> None:
    assert sweep_detect(tmp_path, scenes, tiny_checkpoint) == {"old", "new"}


@pytest.mark.slow
@pytest.mark.parametrize("command", ["crosscheck", "export"])
def test_crosscheck_and_export_killed_at_every_step(tmp_path: Path, command: str) -> None:
    from tests.data import AS_OF, rule_case

    ch, permits, _ = rule_case()
    ch.to_file(tmp_path / "changes.gpkg")
    permits.to_file(tmp_path / "permits.gpkg")
    root = tmp_path / "k"
    root.mkdir()
    out = root / "out"

    def args(as_of: str) -> list[str]:
        if command == "crosscheck":
            return ["crosscheck", str(tmp_path / "changes.gpkg"), "-o", str(out), "--permits",
                    str(tmp_path / "permits.gpkg"), "--as-of", as_of]
        return ["export", str(tmp_path / f"run-{as_of}"), "-o", str(out), "--formats", "gpkg,csv,shp"]

    for as_of in (AS_OF.isoformat(), "2031-01-01"):  # two runs whose results differ (permits expired by 2031)
        run_dir = tmp_path / f"run-{as_of}"
        assert CliRunner().invoke(cli, ["crosscheck", str(tmp_path / "changes.gpkg"), "-o", str(run_dir),
                                        "--permits", str(tmp_path / "permits.gpkg"), "--as-of", as_of]).exit_code == 0
    old_args, new_args = args(AS_OF.isoformat()), args("2031-01-01")
    assert CliRunner().invoke(cli, old_args).exit_code == 0
    old = snapshot(out)
    pristine = tmp_path / "pristine"
    subprocess.run(["cp", "-a", str(out), str(pristine)], check=True)

    def is_new(o: Path) -> bool:
        text = "".join(p.read_text(errors="replace") for p in o.rglob("*.csv")) + "".join(
            p.read_text() for p in o.glob("*.json"))
        if command == "crosscheck":
            return json.loads((o / "crosscheck_summary.json").read_text())["rules"]["as_of"] == "2031-01-01" and \
                len(gpd.read_file(o / "flagged.gpkg", layer="flagged_changes")) == \
                json.loads((o / "crosscheck_summary.json").read_text())["counts"]["flagged"]
        return "run-2031-01-01" in text and (o / "shapefile").is_dir() and (o / "changewatch.gpkg").is_file()

    steps = len(run_killed(root, -1, "changewatch.cli:cli", *new_args))
    seen = set()
    for kill_at in range(steps):
        subprocess.run(["rm", "-rf", str(out), *map(str, root.glob(".out.*"))], check=True)
        subprocess.run(["cp", "-a", str(pristine), str(out)], check=True)
        assert run_killed(root, kill_at, "changewatch.cli:cli", *new_args) == []
        seen.add(assert_wholly_old_or_new(out, old, is_new))
    assert seen == {"old", "new"}
    assert CliRunner().invoke(cli, new_args).exit_code == 0 and leftovers(out) == []


# --- write failures -----------------------------------------------------------------------------

def _first_run(scenes: Path, model: Path, out: Path) -> dict[str, str]:
    result = CliRunner().invoke(cli, list(map(str, _detect_args(scenes, "after.tif", model, out))))
    assert result.exit_code == 0, result.output
    return snapshot(out)


def assert_refused_and_intact(result: CliRunner.invoke, out: Path, before: dict[str, str], *words: str) -> None:
    assert result.exit_code == 8, result.output
    errors = error_lines(result.output)
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert all(w in errors[0] for w in words), errors[0]
    assert snapshot(out) == before and leftovers(out) == []


@pytest.mark.parametrize("output", ["change_prob.tif", "change_prob.qml", "changes.gpkg", "flagged.gpkg",
                                    "summary.json"])
def test_detect_cannot_write_an_output(output: str, scenes: Path, tiny_checkpoint: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A real write failure of each writer (GDAL raster, GeoPackage, JSON): the output's staged path
    runs through a file, which fails for any user, root included."""
    out = tmp_path / "run"
    before = _first_run(scenes, tiny_checkpoint, out)
    real_path = StagedDir.path

    def blocked(self: StagedDir, name: str) -> Path:
        if name != output:
            return real_path(self, name)
        (self.stage / "blocker").touch()
        return self.stage / "blocker" / name

    monkeypatch.setattr(StagedDir, "path", blocked)
    result = CliRunner().invoke(cli, list(map(str, _detect_args(scenes, "after2.tif", tiny_checkpoint, out))))
    assert_refused_and_intact(result, out, before, "error: outputs cannot be written:", output)


@pytest.mark.parametrize("writer", ["write_probability", "write_judgement", "write_summary"])
def test_detect_on_a_full_disk(writer: str, scenes: Path, tiny_checkpoint: Path, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    from changewatch.rs import pipeline, runfolder

    out = tmp_path / "run"
    before = _first_run(scenes, tiny_checkpoint, out)

    def full(*args: object, **kw: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(runfolder if writer == "write_judgement" else pipeline, writer, full)  # where it is called
    result = CliRunner().invoke(cli, list(map(str, _detect_args(scenes, "after2.tif", tiny_checkpoint, out))))
    assert_refused_and_intact(result, out, before, "outputs cannot be written", "No space left on device")


def test_detect_cannot_store_the_qgis_styles(scenes: Path, tiny_checkpoint: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite's own write error (styles are written into the GeoPackages with sqlite3) is an output error too."""
    import sqlite3

    from changewatch.rs import styles

    out = tmp_path / "run"
    before = _first_run(scenes, tiny_checkpoint, out)

    def full(gpkg: Path) -> list[str]:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(styles, "write_styles", full)
    result = CliRunner().invoke(cli, list(map(str, _detect_args(scenes, "after2.tif", tiny_checkpoint, out))))
    assert_refused_and_intact(result, out, before, "outputs cannot be written", "database or disk is full")


@pytest.mark.parametrize("step", [0, 1])
def test_the_folder_swap_fails(step: int, scenes: Path, tiny_checkpoint: Path, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only file system refusing the first rename (OUTDIR aside) or the second (staging in):
    the earlier run is back in place either way."""
    out = tmp_path / "run"
    before = _first_run(scenes, tiny_checkpoint, out)
    real_rename, calls = os.rename, []

    def rename(src: object, dst: object) -> None:
        calls.append(src)
        if len(calls) == step + 1:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(src))
        real_rename(src, dst)

    monkeypatch.setattr(staging.os, "rename", rename)
    result = CliRunner().invoke(cli, list(map(str, _detect_args(scenes, "after2.tif", tiny_checkpoint, out))))
    assert_refused_and_intact(result, out, before, "outputs cannot be written", "Read-only file system")


def test_permission_denied_before_any_work(scenes: Path, tiny_checkpoint: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """No staging folder can be made: refused before inference (the predictor never runs)."""
    from changewatch.rs import pipeline

    out = tmp_path / "run"
    before = _first_run(scenes, tiny_checkpoint, out)
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args: object, **kw: object) -> None:
        if ".staging-" in self.name:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        real_mkdir(self, *args, **kw)  # type: ignore[arg-type]

    def predictor(*args: object, **kw: object) -> None:
        raise AssertionError("inference ran although the outputs could not be written")

    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.setattr(pipeline, "predict_pair", predictor)
    result = CliRunner().invoke(cli, list(map(str, _detect_args(scenes, "after2.tif", tiny_checkpoint, out))))
    assert_refused_and_intact(result, out, before, "outputs cannot be written", "Permission denied")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder(scenes: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    parent = tmp_path / "ro"
    out = parent / "run"
    before = _first_run(scenes, tiny_checkpoint, out)
    parent.chmod(0o555)
    try:
        result = CliRunner().invoke(cli, list(map(str, _detect_args(scenes, "after2.tif", tiny_checkpoint, out))))
    finally:
        parent.chmod(0o755)
    assert_refused_and_intact(result, out, before, "outputs cannot be written", "Permission denied")


def test_file_size_limit_fails_gdal_for_real(scenes: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    """A real write failure inside GDAL (the probability raster): files may not grow past 20 kB."""
    out = tmp_path / "run"
    before = _first_run(scenes, tiny_checkpoint, out)

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    proc = subprocess.run([sys.executable, str(ROOT / "cli.py"),
                           *map(str, _detect_args(scenes, "after2.tif", tiny_checkpoint, out))],
                          cwd=ROOT, capture_output=True, text=True, preexec_fn=limit)
    assert proc.returncode == 8, proc.stderr
    errors = error_lines(proc.stderr)
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert "outputs cannot be written" in errors[0] and "change_prob.tif" in errors[0]
    assert snapshot(out) == before and leftovers(out) == []


@pytest.mark.parametrize("output", ["changewatch.gpkg", "changes.csv", "shapefile", "item.json"])
def test_export_cannot_write(output: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.data import AS_OF, rule_case

    ch, permits, _ = rule_case()
    ch.to_file(tmp_path / "changes.gpkg")
    assert CliRunner().invoke(cli, ["crosscheck", str(tmp_path / "changes.gpkg"), "-o", str(tmp_path / "run"),
                                    "--as-of", AS_OF.isoformat()]).exit_code == 0
    out = tmp_path / "e"
    assert CliRunner().invoke(cli, ["export", str(tmp_path / "run"), "-o", str(out)]).exit_code == 0
    before = snapshot(out)
    real_path = StagedDir.path

    def blocked(self: StagedDir, name: str) -> Path:
        if name != output:
            return real_path(self, name)
        (self.stage / "blocker").touch()
        return self.stage / "blocker" / name

    monkeypatch.setattr(StagedDir, "path", blocked)
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "run"), "-o", str(out)])
    assert_refused_and_intact(result, out, before, "outputs cannot be written")


def test_crosscheck_and_batch_cannot_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from changewatch.rs.batch import outputs
    from changewatch.rs.crosscheck import run
    from tests.data import AS_OF, rule_case

    ch, _, _ = rule_case()
    ch.to_file(tmp_path / "changes.gpkg")
    out = tmp_path / "cc"
    assert CliRunner().invoke(cli, ["crosscheck", str(tmp_path / "changes.gpkg"), "-o", str(out),
                                    "--as-of", AS_OF.isoformat()]).exit_code == 0
    before = snapshot(out)

    def full(*args: object, **kw: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(run, "write_summary", full)
    result = CliRunner().invoke(cli, ["crosscheck", str(tmp_path / "changes.gpkg"), "-o", str(out)])
    assert_refused_and_intact(result, out, before, "crosscheck_summary.json", "No space left on device")
    # a batch whose own folder cannot be written: one line, exit 8
    (tmp_path / "jobs.csv").write_text("area_id,before,after\nw1,missing-b.tif,missing-a.tif\n")
    monkeypatch.setattr(outputs, "write_json", full)
    result = CliRunner().invoke(cli, ["batch", str(tmp_path / "jobs.csv"), "-o", str(tmp_path / "b"),
                                      "--scheduler", "serial", "-q"])
    assert result.exit_code == 8 and len(error_lines(result.output)) == 1
    assert "batch_summary.json" in error_lines(result.output)[0] or "outputs cannot be written" in result.output


# --- the README's rows -------------------------------------------------------------------------

def readme_rows() -> dict[str, str]:
    """First cell → exit cell of each row of the README's "Bad inputs" table."""
    text = (ROOT / "README.md").read_text()
    table = text.split("## Bad inputs", 1)[1].split("\n## ", 1)[0]
    rows = [line.split(" | ") for line in table.splitlines()
            if line.startswith("| ") and not line.startswith("| input")]
    return {cells[0].lstrip("| ").strip(): cells[-1].rstrip(" |").strip() for cells in rows}


def _crosscheck_case(tmp_path: Path) -> tuple[list[str], Path]:
    from tests.data import AS_OF, rule_case

    ch, _, _ = rule_case()
    ch.to_file(tmp_path / "changes.gpkg")
    out = tmp_path / "run"
    args = ["crosscheck", str(tmp_path / "changes.gpkg"), "-o", str(out), "--as-of", AS_OF.isoformat()]
    assert CliRunner().invoke(cli, args).exit_code == 0
    return args, out


def _row_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    from changewatch.rs import runfolder

    args, out = _crosscheck_case(tmp_path)

    def full(*a: object, **kw: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(runfolder, "write_gpkg", full)
    return args, ["outputs cannot be written", str(out), "No space left on device"]


def _row_foreign(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    args, out = _crosscheck_case(tmp_path)
    (out / "notes.txt").write_text("mine")
    return args, ["holds files changewatch did not write (notes.txt)"]


def _row_input_inside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    args, out = _crosscheck_case(tmp_path)
    return ["export", str(out), "-o", str(out)], ["is the output folder"]


def _row_mount(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    args, out = _crosscheck_case(tmp_path)
    real = os.path.ismount
    monkeypatch.setattr(staging.os.path, "ismount", lambda p: str(p) == os.path.realpath(out) or real(p))
    return args, ["is a mount point", "write into a folder inside it"]


def _row_review(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    import pandas as pd

    from changewatch.rs.review import Run, save_review
    from changewatch.rs.runfolder import read_run_layers

    args, out = _crosscheck_case(tmp_path)
    save_review(Run(out, {}, read_run_layers(out)), pd.DataFrame({  # type: ignore[arg-type]
        "change_id": [1], "decision": ["dismiss"], "reviewer": ["An"], "reviewed_at": ["2024-05-02T14:03:00+07:00"],
        "note": ["a crane"]}))
    return args, ["review decisions kept: 1 on the new flags (layer review), 0 matching no new flag"]


def _row_unreadable_flagged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    args, out = _crosscheck_case(tmp_path)
    (out / "flagged.gpkg").write_text("not a GeoPackage")
    return args, ["flagged.gpkg cannot be read", "cannot be carried over"]


def _row_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    from tests.data import make_manifest

    manifest = make_manifest(tmp_path, n_good=1, broken=False)
    model = tmp_path / "models" / "tiny.json"
    args = ["batch", str(manifest), "-o", str(tmp_path / "b"), "--model", str(model), "--scheduler", "serial",
            "--threshold", "0.5"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    write_raster(tmp_path / "a0.tif", textured_scene(96, 96, seed=99), UTM48N, utm_transform())
    return [*args, "--resume"], ["[done] ward0", "redone: inputs changed", "a0.tif"]


def _row_model_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    (tmp_path / "models" / "tiny.json").write_text("{'not': json")
    return _detect_with(tmp_path), ["model metadata is not a readable JSON file"]


def _row_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    import pickle

    from tests.models.test_changenet import _Payload

    (tmp_path / "models" / "tiny.safetensors").write_bytes(pickle.dumps(_Payload(tmp_path / "payload-ran")))
    return _detect_with(tmp_path), ["model weights are not a valid safetensors file"]


def _row_train_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    import pickle

    from tests.data import make_site
    from tests.models.test_changenet import _Payload

    for name, seed in (("alpha", 1), ("beta", 2)):
        make_site(tmp_path / "sites", name, seed, squares=((10, 10, 12),))
    (tmp_path / "m.state.pt").write_bytes(pickle.dumps({"config": _Payload(tmp_path / "payload-ran")}))
    return ["train", "--data", str(tmp_path / "sites"), "--out", str(tmp_path / "m.json"), "--resume",
            "--train-sites", "alpha", "--val-sites", "beta", "--encoder", "resnet18", "--crop", "32",
            "--iterations", "2", "-q"], ["--resume:", "holds pickled objects", "refused without running anything"]


def _detect_with(tmp_path: Path) -> list[str]:
    before = textured_scene(96, 96, seed=1)
    write_raster(tmp_path / "before.tif", before, UTM48N, utm_transform())
    write_raster(tmp_path / "after.tif", plant_square(before, 40, 30, 10), UTM48N, utm_transform())
    return ["detect", str(tmp_path / "before.tif"), str(tmp_path / "after.tif"), "-o", str(tmp_path / "d"),
            "--model", str(tmp_path / "models" / "tiny.json"), "-q"]


README_ROWS = {  # the start of the row's first cell → its case
    "OUTDIR (or the batch folder": _row_full_disk,
    "OUTDIR holding files changewatch did not write": _row_foreign,
    "an input inside OUTDIR": _row_input_inside,
    "OUTDIR that is a mount point": _row_mount,
    "OUTDIR whose `flagged.gpkg` holds review decisions": _row_review,
    "OUTDIR whose `flagged.gpkg` cannot be read": _row_unreadable_flagged,
    "`batch --resume` after a job's input files, settings or model changed": _row_resume,
    "a model JSON that is not UTF-8 JSON": _row_model_json,
    "model weights that are not safetensors": _row_weights,
    "a `train --resume` state file holding pickled objects": _row_train_state,
}


@pytest.mark.parametrize("row", list(README_ROWS))
def test_readme_bad_inputs_rows(row: str, tmp_path: Path, tiny_checkpoint: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    [(cell, code)] = [(c, e) for c, e in readme_rows().items() if c.startswith(row)]
    args, words = README_ROWS[row](tmp_path, monkeypatch)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == int(code), result.output
    assert "Traceback" not in result.output
    shown = error_lines(result.output) if result.exit_code else result.output.splitlines()
    assert len(shown) >= 1 and all(any(w in line for line in shown) for w in words), result.output
    if result.exit_code:
        assert len(shown) == 1
    assert not (tmp_path / "payload-ran").exists()

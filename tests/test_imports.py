"""Small commands import no heavy library: ``--help``, ``--version``, ``crosscheck``, ``export``,
every error raised before inference and ``batch --resume`` with nothing to redo load neither torch,
segmentation-models-pytorch, timm, scikit-image nor Dask (issue 13); ``report`` loads only matplotlib, to draw,
and its errors nothing. The commands run in a fresh
interpreter that prints, after them, which of those modules it imported; a ``detect`` that reaches
inference is the control that does load torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from changewatch.cli import cli
from tests.data import AS_OF, make_manifest, rule_case
from tests.test_cli import _bad_inputs

HEAVY = ("torch", "segmentation_models_pytorch", "timm", "skimage", "dask", "distributed", "dask_geopandas",
         "matplotlib")

# Runs each command line of the JSON list in argv[1] in turn, then prints one JSON line: their exit
# codes and the heavy modules now imported.
WRAPPER = f"""
import json, sys
from changewatch.cli import cli
codes = []
for args in json.loads(sys.argv[1]):
    try:
        cli.main(args=args, prog_name="changewatch")
    except SystemExit as exc:
        codes.append(exc.code or 0)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {set(HEAVY)!r})
print(json.dumps({{"exit": codes, "heavy": heavy}}))
"""


def run_fresh(*commands: list[object]) -> tuple[list[int], list[str]]:
    """Exit codes of ``changewatch COMMAND`` for each command, run one after another in a fresh
    interpreter, and the heavy modules imported when they are done."""
    done = subprocess.run([sys.executable, "-c", WRAPPER, json.dumps([[str(a) for a in c] for c in commands])],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return report["exit"], report["heavy"]


@pytest.fixture(scope="module")
def layers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The rule case's changes, permits and zoning as GeoPackages, its zones also as parcels, and a
    cross-check run folder made from them."""
    root = tmp_path_factory.mktemp("layers")
    changes, permits, zoning = rule_case()
    paths = {"changes": root / "changes.gpkg", "permits": root / "permits.gpkg", "zoning": root / "zoning.gpkg",
             "parcels": root / "parcels.gpkg"}
    changes.to_file(paths["changes"])
    permits.to_file(paths["permits"])
    zoning.to_file(paths["zoning"])
    zoning.assign(parcel_id=zoning["zone_id"], ward="w1").to_file(paths["parcels"])
    paths["run"] = root / "run"
    result = CliRunner().invoke(cli, crosscheck_args(paths, paths["run"]))
    assert result.exit_code == 0, result.output
    return paths


def crosscheck_args(paths: dict[str, Path], out: Path) -> list[str]:
    return ["crosscheck", str(paths["changes"]), "-o", str(out), "--permits", str(paths["permits"]), "--zoning",
            str(paths["zoning"]), "--parcels", str(paths["parcels"]), "--as-of", AS_OF.isoformat()]


def test_help_and_version() -> None:
    commands = [["--help"], ["--version"], *([name, "--help"] for name in sorted(cli.commands))]
    assert len(commands) >= 10  # detect, demo, batch, crosscheck, export, train, evaluate, synth
    assert run_fresh(*commands) == ([0] * len(commands), [])


def test_crosscheck_and_export(layers: dict[str, Path], tmp_path: Path) -> None:
    assert run_fresh(crosscheck_args(layers, tmp_path / "cc")) == ([0], [])
    assert (tmp_path / "cc" / "crosscheck_summary.json").is_file()  # it did the work
    assert run_fresh(["export", layers["run"], "-o", tmp_path / "export"]) == ([0], [])
    assert (tmp_path / "export" / "item.json").is_file()


def test_report(tmp_path: Path) -> None:
    """report draws with matplotlib and loads nothing else heavy; its bad inputs load nothing heavy at all."""
    from tests.report_data import make_run

    run = make_run(tmp_path)
    codes, heavy = run_fresh(["report", run, "-o", tmp_path / "report"])
    assert codes == [0] and {m.split(".")[0] for m in heavy} == {"matplotlib"}
    assert (tmp_path / "report" / "report.pdf").is_file()  # it did the work
    bad = (["report", tmp_path / "nowhere", "-o", tmp_path / "r2"], ["report", run, "-o", run])
    assert run_fresh(*bad) == ([3, 8], [])


def test_errors_before_inference(layers: dict[str, Path], pair: tuple[Path, Path], tiny_checkpoint: Path,
                                 tmp_path: Path) -> None:
    """detect's errors found before the network is built (``tests.test_cli``'s cases), a bad --columns
    file, and evaluate of a folder without labelled pairs."""
    cases = _bad_inputs(tmp_path, pair)
    commands, codes = [], []
    for case in ("missing file", "not a raster", "no overlap", "band counts", "model file", "missing band",
                 "band count vs model", "unknown grid CRS", "band order vs model"):
        args, code, _ = cases[case]
        model = [] if "--model" in args else ["--model", tiny_checkpoint]
        commands.append(["detect", *args, "-o", tmp_path / "out", *model, "-q"])
        codes.append(code)
    (tmp_path / "bad.yaml").write_text("permits:\n  permit_no: X\n")
    commands += [["detect", *pair, "-o", tmp_path / "out", "--columns", tmp_path / "bad.yaml"],
                 ["crosscheck", layers["changes"], "-o", tmp_path / "out", "--columns", tmp_path / "bad.yaml"],
                 ["evaluate", "--data", tmp_path / "nowhere", "-q"], ["evaluate", "--data", tmp_path, "-q"]]
    codes += [3, 3, 3, 3]
    assert run_fresh(*commands) == (codes, [])
    assert not (tmp_path / "out").exists()


def test_detect_layer_error_builds_no_network(pair: tuple[Path, Path], tiny_checkpoint: Path, tmp_path: Path) -> None:
    """The layers are read on the grid the pair was prepared on, after AFTER's shift was measured
    (scikit-image), but before the network is built."""
    args, code, _ = _bad_inputs(tmp_path, pair)["permit column"]
    command = ["detect", *args, "-o", tmp_path / "out", "--model", tiny_checkpoint, "-q"]
    exit_codes, heavy = run_fresh(command)
    assert exit_codes == [code] and {m.split(".")[0] for m in heavy} == {"skimage"}
    assert run_fresh([*command, "--no-coregister"]) == ([code], [])


def test_batch_resume_with_nothing_to_redo(tmp_path: Path, tiny_checkpoint: Path) -> None:
    manifest = make_manifest(tmp_path, n_good=1, broken=False)
    args = ["batch", str(manifest), "-o", str(tmp_path / "out"), "--model", str(tiny_checkpoint), "--scheduler",
            "serial", "--resume", "-q"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert run_fresh(args) == ([0], [])


def test_detect_does_load_torch(pair: tuple[Path, Path], tiny_checkpoint: Path, tmp_path: Path) -> None:
    """The control: a detect run that reaches inference imports torch, so the checks above can fail."""
    codes, heavy = run_fresh(["detect", *pair, "-o", tmp_path / "out", "--model", tiny_checkpoint, "-q"])
    assert codes == [0] and {"torch", "segmentation_models_pytorch", "skimage"} <= set(heavy)

"""The wheel: one import package of ours, demo data and weights inside it, runnable from anywhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project built as a wheel and installed (no dependencies: this venv has them) into a folder.
    Built from a copy of the sources, so that what an earlier build left in ``build/`` cannot stand in
    for a package the wheel lacks."""
    build = tmp_path_factory.mktemp("wheel")
    source = build / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                                                "out", "runs", ".pytest_cache", ".bench-venv"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(build),
                    str(source)], check=True, capture_output=True)
    wheel = next(build.glob("changewatch-*.whl"))
    target = build / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    return target


def test_wheel_holds_one_package_with_its_data(installed: Path) -> None:
    ours = {p.name for p in installed.iterdir() if not p.name.endswith(".dist-info") and p.name != "bin"}
    assert ours == {"changewatch"}
    package = installed / "changewatch"
    for part in ("cli.py", "rs/align.py", "models/changenet.py", "models/changewatch-rgbn.safetensors",
                 "models/changewatch-rgb.json", "tiles/hongkong/before.tif", "tiles/hongkong/scenes.csv",
                 "tiles/hongkong_permits_demo.gpkg",
                 "rs/schemas/README.md", "rs/schemas/schemas.stacspec.org/v1.1.0/item-spec/json-schema/item.json",
                 "rs/schemas/stac-extensions.github.io/file/v2.1.0/schema.json"):
        assert (package / part).is_file(), part
    assert (installed / "bin" / "changewatch").is_file()


def test_wheel_holds_every_module(installed: Path) -> None:
    """Every module of the package's folders is installed (a subpackage missing from pyproject's list is not)."""
    modules = [p.relative_to(ROOT) for folder in ("rs", "models", "tiles") for p in (ROOT / folder).rglob("*.py")]
    missing = [str(m) for m in modules if not (installed / "changewatch" / m).is_file()]
    assert modules and not missing


@pytest.mark.slow
def test_installed_demo_runs_outside_the_repository(installed: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(installed)}
    code = "import sys; from changewatch.cli import cli; sys.exit(cli())"
    done = subprocess.run([sys.executable, "-c", code, "demo", "-o", "out", "-q"], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "flagged.gpkg").is_file()
    where = subprocess.run([sys.executable, "-c", "import changewatch; print(changewatch.__file__)"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()).is_relative_to(installed)


def test_wheel_lists_no_repository_only_files(installed: Path) -> None:
    record = next(installed.glob("changewatch-*.dist-info")) / "RECORD"
    names = [line.split(",")[0] for line in record.read_text().splitlines()]
    assert not any(n.startswith(("changewatch/tests", "changewatch/bench", "changewatch/notebooks")) for n in names)

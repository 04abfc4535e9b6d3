"""Start-up of a small command: ``changewatch crosscheck`` on the demo layers against
``python -c "import geopandas"``, side by side (issue 13: at most 2×).

    .venv/bin/python bench/crosscheck_startup.py [--changes CHANGES.gpkg] [--repeats 7]

The change layer is the demo's: ``--changes`` (e.g. a demo run's ``changes.gpkg``), else the demo
is run once into a temporary folder first (not timed). Each repeat runs, in fresh processes and in
turn, ``python -c "import geopandas"``, ``changewatch --version`` (the command line's own start-up)
and ``changewatch crosscheck CHANGES -o OUT --permits --zoning --parcels --as-of 2024-01-01`` with
the demo's permit, zoning and parcel layers, so that all three see the same machine noise. Prints
the wall times (median and each repeat) and the ratio of the medians as Markdown, and which of
torch, segmentation-models-pytorch, timm, scikit-image and Dask the cross-check imported (none is
the point).

Every command is run once untimed first, with bytecode writing on: changewatch's modules are then
byte-compiled as a pip install leaves them (this workplace sets ``PYTHONDONTWRITEBYTECODE``, which
would otherwise have every run compile them again, about 0.1 s, while GeoPandas' are compiled).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from changewatch.tiles import demo_data

ENV = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
HEAVY = ("torch", "segmentation_models_pytorch", "timm", "skimage", "dask", "distributed", "dask_geopandas")


def wall(command: list[str]) -> float:
    """Seconds ``command`` takes to run, start to exit (it must succeed)."""
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=ENV)
    return time.perf_counter() - start


def heavy_imports(crosscheck: list[str]) -> list[str]:
    """The heavy top-level packages the cross-check imports (run once more, in-process in a child)."""
    code = ("import json, sys; from changewatch.cli import cli\n"
            "try:\n    cli.main(args=sys.argv[1:], prog_name='changewatch')\nexcept SystemExit:\n    pass\n"
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})))")
    done = subprocess.run([sys.executable, "-c", code, *crosscheck], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=Path, default=None, help="a change layer (default: run the demo once)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    demo = demo_data()
    with tempfile.TemporaryDirectory(prefix="crosscheck-startup-") as tmp:
        changes = args.changes
        if changes is None:
            subprocess.run([sys.executable, "-m", "changewatch.cli", "demo", "-o", f"{tmp}/demo", "-q"], check=True,
                           capture_output=True)
            changes = Path(tmp) / "demo" / "changes.gpkg"
        crosscheck = ["crosscheck", str(changes), "-o", f"{tmp}/cc", "--permits", str(demo.permits), "--zoning",
                      str(demo.zoning), "--parcels", str(demo.parcels), "--as-of", "2024-01-01"]
        commands = {'python -c "import geopandas"': [sys.executable, "-c", "import geopandas"],
                    "changewatch --version": [sys.executable, "-m", "changewatch.cli", "--version"],
                    "changewatch crosscheck (demo layers)": [sys.executable, "-m", "changewatch.cli", *crosscheck]}
        times: dict[str, list[float]] = {name: [] for name in commands}
        for command in commands.values():
            wall(command)  # warm-up: byte-compiles changewatch, fills the OS file cache
        for _ in range(args.repeats):
            for name, command in commands.items():
                times[name].append(wall(command))
        heavy = heavy_imports(crosscheck)
    print(f"{args.repeats} alternating repeats, fresh processes, wall time\n")
    print("| command | median (s) | each repeat (s) |\n|---|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {statistics.median(seconds):.2f} | {', '.join(f'{s:.2f}' for s in seconds)} |")
    base, cc = (statistics.median(times[name]) for name in (next(iter(times)), list(times)[-1]))
    print(f"\ncrosscheck / import geopandas: **{cc / base:.2f}×** (target ≤ 2×); heavy packages the cross-check "
          f"imported: {', '.join(heavy) or 'none'}")


if __name__ == "__main__":
    main()

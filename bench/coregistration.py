"""Co-registration of the OSCD pairs: the residual shift of AFTER measured on each city, and after correction.

    .venv/bin/python bench/coregistration.py [--data ../shared/data/oscd]

For every city: the correction ``rs.coregister`` measures on the common grid (pixels of 10 m;
rows down, cols right), whether it is applied (windows agree and it is ≥ 0.25 px), the shift
measured again on the corrected pair (should be ~0), and the seconds the measurement took.
Prints a Markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # repository-only helpers: bench/, tests/

from changewatch.rs.config import PairOptions  # noqa: E402
from changewatch.rs.coregister import measure_shift  # noqa: E402
from changewatch.rs.datasets import find_pairs  # noqa: E402
from changewatch.rs.prepare import prepare_pair  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "oscd"))
    args = parser.parse_args()
    print("| city | grid (px) | measured correction (rows, cols) | windows | applied | after correction | s |")
    print("|---|---|---|---|---|---|---|")
    for site in find_pairs(args.data):
        t = time.perf_counter()
        ready = prepare_pair(site.before, site.after, PairOptions())
        found = ready.coregistration
        assert found is not None
        seconds = time.perf_counter() - t
        with ready.open() as pair:
            again = measure_shift(pair) if found.applied else found
        print(f"| {site.name} | {pair.grid.width}×{pair.grid.height} | {found.rows:+.2f}, {found.cols:+.2f} | "
              f"{found.windows} | {'yes' if found.applied else 'no'} | {again.rows:+.2f}, {again.cols:+.2f} | "
              f"{seconds:.2f} |")


if __name__ == "__main__":
    main()

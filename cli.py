"""changewatch command line: detect new construction and flag what has no permit.

Thin by design: each command parses options into the library's configuration (``rs.config``),
calls ``rs``, and prints; the commands live in ``rs.commands``, this file assembles them. Errors a
user can fix are printed as one line ``error: ...`` with the exit code of their kind (see
``rs.errors``).
"""

from __future__ import annotations

import click

import changewatch
from changewatch.rs.commands.batch import batch
from changewatch.rs.commands.group import CommandGroup
from changewatch.rs.commands.labels import labels
from changewatch.rs.commands.models import evaluate, train
from changewatch.rs.commands.monitor import monitor
from changewatch.rs.commands.report import report
from changewatch.rs.commands.run import crosscheck, demo, detect, export
from changewatch.rs.commands.synth import synth


@click.group(cls=CommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(changewatch.__version__, prog_name="changewatch")
def cli() -> None:
    """changewatch: find new construction between two satellite scenes and flag what has no permit.

    \b
    Typical use:
      python cli.py demo                       # the bundled Hong Kong Sentinel-2 pair
      python cli.py detect BEFORE.tif AFTER.tif -o out/ --permits permits.gpkg
      python cli.py batch manifest.csv -o out/batch --resume
      python cli.py monitor scenes.csv -o store/          # many dates: new pairs only, history.gpkg
      python cli.py evaluate --data DIR --sites a,b --json
      python cli.py labels out/ward7 out/ward9 -o labels/city   # reviewed runs → training labels
      python cli.py report out/ward7 -o reports/ward7    # case sheets (HTML, PDF), work orders

    Exit codes: 0 ok, 1 bug, 2 usage, 3 unreadable input file, 4 scenes cannot be compared (or too small),
    5 vector layer problem (no CRS, missing column, not polygons, unreadable dates, several layers),
    6 model problem, 7 batch finished with failed jobs,
    8 outputs cannot be written (permission, read-only or full disk, OUTDIR holds other files).
    """


for command in (detect, demo, batch, monitor, crosscheck, export, labels, report, train, evaluate, synth):
    cli.add_command(command)


if __name__ == "__main__":
    cli()

"""The command that turns reviewed runs into labelled training data: ``labels``."""

from __future__ import annotations

import click

from changewatch.rs.commands.options import defaults, reports_errors, warn
from changewatch.rs.training.config import LabelsConfig

LABELS = defaults(LabelsConfig)


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("-o", "--outdir", required=True, type=click.Path(file_okay=False),
              help="Folder for the labelled data set (<site>/before.tif, after.tif, changes.gpkg and labels.json), "
                   "replaced as a whole when every site is written; it may hold only what labels wrote before.")
@click.option("--margin-px", type=click.IntRange(0), default=LABELS["margin_px"], show_default=True,
              help="Pixels of each run's grid kept around its reviewed flags (default: one training crop).")
@reports_errors
def labels(runs: tuple[str, ...], outdir: str, margin_px: int) -> None:
    """Turn reviewed detect runs (RUNS: run folders) into labelled data that train and evaluate read.

    Each run becomes one site, named as its folder: confirmed flags are change, dismissed flags no
    change, and everything else — flags marked needs_visit, flags nobody reviewed, the ground
    around — unlabelled. The imagery is the run's pair as it was compared, cut to the reviewed
    flags plus --margin-px. Then fine-tune: train --init-from MODEL --data OUTDIR --train-sites all
    --val-sites SITE.
    """
    from changewatch.rs.labels import write_labels

    result = write_labels(LabelsConfig(tuple(runs), outdir, margin_px))
    warn(result.warnings)
    for site in result.sites:
        c = site.counts
        click.echo(f"{site.name}: {c['confirm']} confirmed → change, {c['dismiss']} dismissed → no change; "
                   f"{c['needs_visit']} needs_visit and {c['unreviewed']} unreviewed flags left unlabelled; "
                   f"{int(site.window.width)}×{int(site.window.height)} px"
                   + (f"; {c['unmatched']} decisions matching no current flag left out" if c["unmatched"] else ""))
    click.echo(f"labelled data in {result.outdir}")

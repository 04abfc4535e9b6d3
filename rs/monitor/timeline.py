"""A store's timeline (``STORE/timeline.png``): what was tracked at each AFTER date, at a glance.

Two panels over the store's AFTER dates (table ``dates`` of ``history.gpkg``: every date, those
where nothing changed included), evenly spaced and labelled ``YYYY-MM-DD``:

- top: stacked bars of the footprint area (m², local UTM) of the tracked changes seen by each date
  (``first_seen`` on or before it), each as large as its footprint after its last observation up to
  that date (``observations.footprint_m2``), split by the change's worst reason code (its ``reasons``
  in layer ``changes``: judged at the latest date with its ``first_seen``; severity order and colours
  as the QGIS styles, ``rs.styles.reason_colours``, most severe at the bottom);
- bottom: how many tracked changes were first seen at each date (bars, ``+N`` written on them) and
  how many earlier ones were observed changing again (growing, or gone).

``timeline_figure`` draws it from a store (or a ``History``) for the review notebook;
``write_timeline`` writes the PNG atomically for ``monitor``, and only when what it shows changed: the
PNG keeps a digest of its data (``timeline_data``) in a text chunk, so a re-run that detects nothing
leaves the file as it was and loads no plotting library. Matplotlib is imported inside the functions
that draw (Agg canvas, no pyplot, no global state).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from changewatch.rs.crosscheck.rules import SEVERITY, worst_reason
from changewatch.rs.io.files import atomic_write, writing
from changewatch.rs.monitor.history import HISTORY_GPKG, History, read_history

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

TIMELINE_PNG = "timeline.png"
DIGEST_KEY = "changewatch-timeline-data"  # PNG text chunk holding the digest of the data drawn
LAYOUT_VERSION = "2"  # part of the digest: a new layout redraws every store's timeline
FIGURE_SIZE_IN = (9.0, 6.0)
DPI = 100
FIRST_SEEN = "first seen"
SEEN_AGAIN = "changing again"


@dataclass(frozen=True)
class TimelineData:
    """What the timeline draws, by AFTER date (index: ISO dates in order).

    ``areas``: m² of tracked footprint seen by each date, one column per worst reason present
    (SEVERITY order); ``counts``: columns ``first seen`` and ``changing again`` (tracked changes).
    """

    areas: pd.DataFrame
    counts: pd.DataFrame

    def digest(self) -> str:
        """SHA-256 of the data and the layout version: equal digests draw equal figures."""
        text = f"{LAYOUT_VERSION}\n{self.areas.to_csv()}\n{self.counts.to_csv()}"
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def timeline_data(history: History) -> TimelineData:
    """The areas and counts ``timeline_figure`` draws (see the module) from ``history``."""
    dates = [str(d) for d in history.dates["date"]]
    changes = history.changes
    worst = worst_reason(changes["reasons"].fillna("").astype(str)) if len(changes) else pd.Series(dtype=object)
    reason = pd.Series(worst.to_numpy(), index=changes["change_id"].to_numpy())
    obs = history.observations[["change_id", "date", "footprint_m2"]].sort_values(["change_id", "date"])
    footprint = obs.pivot_table(index="date", columns="change_id", values="footprint_m2", aggfunc="last")
    footprint = footprint.reindex(dates).ffill().fillna(0.0)  # a footprint stays as last observed
    by_reason = footprint.T.groupby(reason.reindex(footprint.columns).to_numpy()).sum().T
    areas = by_reason[[r for r in SEVERITY if r in by_reason.columns]].astype("float64")
    first = changes.groupby("first_seen").size().reindex(dates, fill_value=0)
    seen = obs.groupby("date").size().reindex(dates, fill_value=0)
    counts = pd.DataFrame({FIRST_SEEN: first.to_numpy(), SEEN_AGAIN: (seen - first).to_numpy()}, index=dates)
    areas.index = pd.Index(dates, name="date")
    counts.index.name = "date"
    return TimelineData(areas, counts.astype("int64"))


def _history(store: str | Path | History) -> History:
    """``store`` as a History: read from ``STORE/history.gpkg`` unless it is one already."""
    return store if isinstance(store, History) else read_history(Path(store) / HISTORY_GPKG)


def timeline_figure(store: str | Path | History) -> Figure:
    """The timeline of a monitor store (its folder, or its ``History``) as a matplotlib Figure (see the module).

    Size ``FIGURE_SIZE_IN`` inches at ``DPI``; an Agg canvas, so ``fig.savefig`` works without pyplot.
    Raises InputFileError when ``STORE/history.gpkg`` cannot be read.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import StrMethodFormatter

    from changewatch.rs.styles import reason_colours

    data = timeline_data(_history(store))
    fig = Figure(figsize=FIGURE_SIZE_IN, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    x = list(range(len(data.areas)))
    base = [0.0] * len(x)
    colours = reason_colours()
    for code in data.areas.columns:
        values = data.areas[code].tolist()
        top.bar(x, values, bottom=base, color=colours[code], edgecolor="black", linewidth=0.4, label=code)
        base = [b + v for b, v in zip(base, values, strict=True)]
    top.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))  # m², not an offset such as 1e6
    top.set_ylabel("tracked change area (m²)")
    top.set_title("Tracked changes seen by each date, by worst reason")
    if len(data.areas.columns):
        top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)  # beside the bars
    _counts(bottom, x, data.counts)
    bottom.set_xticks(x, list(data.areas.index), rotation=30, ha="right")
    bottom.set_xlabel("AFTER date")
    if data.areas.empty or not len(data.areas.columns):
        top.text(0.5, 0.5, "no change tracked yet", ha="center", va="center", transform=top.transAxes)
    return fig


def _counts(ax: Axes, x: list[int], counts: pd.DataFrame) -> None:
    """The bottom panel: changes first seen at each date (``+N``) and changes observed changing again, as bars."""
    first, again = counts[FIRST_SEEN].tolist(), counts[SEEN_AGAIN].tolist()
    for offset, values, colour, label in ((-0.2, first, "#a50026", FIRST_SEEN), (0.2, again, "#bbbbbb", SEEN_AGAIN)):
        bars = ax.bar([i + offset for i in x], values, width=0.4, color=colour, label=label)
        ax.bar_label(bars, labels=[f"+{n}" if n and label == FIRST_SEEN else (str(n) if n else "") for n in values],
                     padding=2, fontsize="small")
    ax.set_ylabel("tracked changes")
    ax.set_ylim(0, max([*first, *again, 1]) * 1.6)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)


def drawn_digest(path: Path) -> str | None:
    """The data digest kept in the timeline PNG at ``path``; None when there is no readable one."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return str(image.info.get(DIGEST_KEY)) if DIGEST_KEY in image.info else None
    except (OSError, UnidentifiedImageError):
        return None


def write_timeline(history: History, path: Path) -> bool:
    """Write the timeline of ``history`` to ``path`` (PNG, atomically) unless it already shows the same data.

    Returns whether it was drawn. Raises OutputError when ``path`` cannot be written.
    """
    digest = timeline_data(history).digest()
    if path.is_file() and drawn_digest(path) == digest:
        return False
    fig = timeline_figure(history)
    with writing(path), atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", metadata={DIGEST_KEY: digest})
    return True

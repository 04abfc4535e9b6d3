"""Static figures of a detect run, drawn with matplotlib: no network, no display, no global pyplot state.

``overview_map``: the AFTER scene (true colour, EPSG:4326) with the flagged changes filled in the colour of their
most severe reason code (``rs.styles.reason_colours``, the colours of the QGIS styles), the parcels with flags
outlined, a legend of the reason colours and axes in degrees of longitude and latitude. ``chip_figure``: BEFORE,
AFTER and the change probability around one flag, with the flag's polygon outlined on each. ``png`` turns a figure
into PNG bytes (what the HTML and PDF reports embed). Each function returns a ``matplotlib.figure.Figure`` that
notebooks display as they would any other.
"""

from __future__ import annotations

import io
import math

import geopandas as gpd
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from shapely.geometry.base import BaseGeometry

from changewatch.rs.config import CHIP_PAD_PX, OVERVIEW_PX
from changewatch.rs.crosscheck.rules import worst_reason
from changewatch.rs.review import Run, flag_chip, overview
from changewatch.rs.runfolder import LAYER_FLAGGED, LAYER_PARCELS
from changewatch.rs.styles import reason_colours

PARCEL_COLOUR = "#000000"  # the outline of parcels with flags on the overview map
OUTLINE_COLOUR = "#00e5ff"  # a flag's outline on its chips: cyan, apart from every reason colour and the imagery
FILL_ALPHA = 0.6  # flags are filled see-through on the map: the imagery below stays visible
MAP_INCHES = (8.0, 7.0)
DPI = 110


def legend_handles(reasons: list[str], parcels: bool) -> list[Patch | Line2D]:
    """Legend entries of what is on the map: one filled patch per reason code drawn, the parcel outline if drawn.

    Args:
        reasons: the reason codes whose flags are drawn (their colours, ``rs.styles.reason_colours``).
        parcels: whether parcels with flags are outlined on the map.

    Returns:
        The entries, none for a map with neither.
    """
    colours = reason_colours()
    handles: list[Patch | Line2D] = [Patch(facecolor=colours[r], edgecolor="#333333", label=r) for r in reasons]
    if parcels:
        handles.append(Line2D([], [], color=PARCEL_COLOUR, linewidth=1.2, label="parcel with flags"))
    return handles


def _draw_flags(ax: Axes, flagged: gpd.GeoDataFrame) -> list[str]:
    """Fill each flag (EPSG:4326) in its worst reason's colour; returns the reasons drawn, most severe first."""
    colours = reason_colours()
    worst = worst_reason(flagged["reasons"].astype(str))
    drawn = [code for code in colours if code in set(worst)]
    for code in drawn:
        subset = flagged[worst == code]
        subset.plot(ax=ax, facecolor=to_rgba(colours[code], FILL_ALPHA), edgecolor=colours[code], linewidth=1.8)
    return drawn


def overview_map(run: Run, map_px: int = OVERVIEW_PX) -> Figure:
    """The run's overview map: AFTER scene, flags by worst reason, parcels with flags outlined, legend.

    The scene is warped to EPSG:4326 and decimated to ≤ ``map_px`` pixels on its longer side
    (``rs.review.overview``); axes are longitude and latitude in degrees, with an aspect that keeps
    ground distances true at the scene's centre. Raises InputFileError when the AFTER scene cannot be read.
    """
    image, ((south, west), (north, east)) = overview(run.after, max_size=map_px)
    fig = Figure(figsize=MAP_INCHES, dpi=DPI)
    ax = fig.add_subplot()
    ax.imshow(image, extent=(west, east, south, north), interpolation="nearest")
    flagged = run.layers[LAYER_FLAGGED].to_crs("EPSG:4326")
    drawn = _draw_flags(ax, flagged) if len(flagged) else []
    parcels = run.layers.get(LAYER_PARCELS)
    outlined = parcels is not None and len(parcels) > 0
    if parcels is not None and outlined:
        parcels.to_crs("EPSG:4326").boundary.plot(ax=ax, color=PARCEL_COLOUR, linewidth=1.2)
    ax.set_xlim(west, east)
    ax.set_ylim(south, north)
    ax.set_aspect(1 / max(math.cos(math.radians((south + north) / 2)), 1e-6))
    ax.set_xlabel("longitude (°E)")
    ax.set_ylabel("latitude (°N)")
    ax.ticklabel_format(useOffset=False)
    ax.set_title(f"{len(flagged)} flagged changes over the AFTER scene")
    handles = legend_handles(drawn, outlined)
    if handles:  # a legend of only what the map shows: none for a run without flags
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
                  title="most severe reason", title_fontsize=8)
    fig.tight_layout()
    return fig


def _outline(ax: Axes, outline: BaseGeometry) -> None:
    """Draw ``outline`` (chip pixel coordinates, pixel (0, 0) spanning 0–1) over an image drawn by ``imshow``."""
    polygons = getattr(outline, "geoms", [outline])
    for polygon in polygons:
        for ring in (polygon.exterior, *polygon.interiors):
            x, y = np.asarray(ring.xy)
            ax.plot(x - 0.5, y - 0.5, color=OUTLINE_COLOUR, linewidth=1.6)  # imshow centres pixel i on i


def chip_figure(run: Run, change_id: int, pad_px: int = CHIP_PAD_PX) -> Figure:
    """BEFORE, AFTER and change probability around flag ``change_id``, its polygon outlined on each.

    On the run's common grid, the flag's bounding box plus ``pad_px`` pixels (``rs.review.flag_chip``).
    Raises KeyError for a change the run does not have; InputFileError when a scene cannot be read.
    """
    chip = flag_chip(run, change_id, pad_px)
    fig = Figure(figsize=(9.0, 3.2), dpi=DPI)
    axes = fig.subplots(1, 3)
    for ax, image, title in zip(axes, (chip.before, chip.after, chip.prob), ("before", "after", "change probability"),
                                strict=True):
        if image.ndim == 2:
            ax.imshow(image, vmin=0, vmax=1, cmap="YlOrRd", interpolation="nearest")
        else:
            ax.imshow(image, interpolation="nearest")
        _outline(ax, chip.outline)
        ax.set_title(title, fontsize=10)
        ax.set_xlim(-0.5, image.shape[1] - 0.5)
        ax.set_ylim(image.shape[0] - 0.5, -0.5)
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def png(fig: Figure, dpi: int = DPI) -> bytes:
    """``fig`` as PNG bytes (``dpi`` dots per inch)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()

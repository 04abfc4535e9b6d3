"""QGIS styles for a run's layers: QML and SLD in each GeoPackage's ``layer_styles`` table, a QML beside the raster.

QGIS opens a GeoPackage layer with the style its ``layer_styles`` table marks as default (the table QGIS itself
writes, ``QgsOgrProviderMetadata::saveStyle``: one row per style, keyed by ``f_table_name`` and
``f_geometry_column``, with the style as QML and as SLD), and a raster with the ``.qml`` of the same name beside it.
Each styled layer is described once (``LayerStyle``); its QML (a rule-based renderer) and its SLD 1.1 (one rule per
class) are generated from that description, so they draw the same classes:

- ``flagged_changes``: one colour per reason code of ``rs.crosscheck.rules.SEVERITY``; a change with several codes
  takes the colour of its most severe one;
- ``flagged_parcels``: by ``worst_reason``, in the same colours;
- ``changes``: by ``flagged`` (the most severe code's colour, or PERMITTED's);
- a monitor store's export (``rs.monitor.exported``): ``tracked_changes`` by ``reasons`` (most severe code, PERMITTED
  included), ``parcel_history`` by ``worst_reason``, in the same colours;
- ``change_prob.tif``: a pseudocolour ramp over probability 0–1, transparent at 0 (``write_raster_style``).

The colours are ColorBrewer schemes (Cynthia A. Brewer, colorbrewer2.org, Apache-2.0): reason codes in order of
severity take the diverging ``RdYlBu`` scheme from dark red (most severe) to blue (PERMITTED), the probability ramp
the sequential ``YlOrRd`` (``reason_colours``, ``PROBABILITY_RAMP``); they are constants rather than sampled from a
plotting library so that writing a style (every ``detect`` and ``crosscheck``) imports none. Written with sqlite3
into a finished GeoPackage (``write_styles``).
"""

from __future__ import annotations

import sqlite3
import uuid
import xml.etree.ElementTree as ET
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from changewatch.rs.crosscheck.rules import PERMITTED, SEVERITY
from changewatch.rs.runfolder import (
    LAYER_CHANGES,
    LAYER_FLAGGED,
    LAYER_PARCEL_HISTORY,
    LAYER_PARCELS,
    LAYER_TRACKED_CHANGES,
)

QGIS_VERSION = "3.28.0-Firenze"  # the LTR the QML is written for (QGIS reads it from 3.4 on)
QML_DOCTYPE = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>"
FILL_ALPHA = 160  # of 255: the imagery below stays visible
# ColorBrewer RdYlBu, 8 and 11 classes (colorbrewer2.org): one colour per reason code, most severe first
RD_YL_BU = {8: ("#d73027", "#f46d43", "#fdae61", "#fee090", "#e0f3f8", "#abd9e9", "#74add1", "#4575b4"),
            11: ("#a50026", "#d73027", "#f46d43", "#fdae61", "#fee090", "#ffffbf", "#e0f3f8", "#abd9e9", "#74add1",
                 "#4575b4", "#313695")}
# ColorBrewer YlOrRd, 5 classes: the probability ramp's colours, evenly spaced over 0–1
PROBABILITY_RAMP = ("#ffffb2", "#fecc5c", "#fd8d3c", "#f03b20", "#bd0026")
SLD = "http://www.opengis.net/sld"
SE = "http://www.opengis.net/se"
OGC = "http://www.opengis.net/ogc"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
SLD_PREFIXES = {"sld": SLD, "se": SE, "ogc": OGC, "xsi": XSI}  # as QGIS writes them

# The table QGIS creates for styles in a GeoPackage (GDAL's DDL for its fields, FID "id").
LAYER_STYLES = "layer_styles"
LAYER_STYLES_DDL = """CREATE TABLE IF NOT EXISTS "layer_styles" (
  "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, "f_table_catalog" TEXT(256), "f_table_schema" TEXT(256),
  "f_table_name" TEXT(256), "f_geometry_column" TEXT(256), "styleName" TEXT(30), "styleQML" TEXT, "styleSLD" TEXT,
  "useAsDefault" BOOLEAN, "description" TEXT, "owner" TEXT(30), "ui" TEXT(30),
  "update_time" DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))"""

Match = Literal["equals", "most_severe", "boolean"]


@dataclass(frozen=True)
class StyleClass:
    """One class of a layer's style: the value it draws, its legend label and its colour (``#rrggbb``)."""

    value: str
    label: str
    colour: str


@dataclass(frozen=True)
class LayerStyle:
    """How one layer is drawn: its features in ``classes`` by ``column``.

    ``match``: ``equals`` (the column holds the value), ``most_severe`` (the column is a comma-separated list of
    codes; a feature belongs to the first class whose code it holds, classes listed most severe first) or
    ``boolean`` (values ``true``/``false``).
    """

    layer: str
    column: str
    match: Match
    classes: tuple[StyleClass, ...]
    title: str


def reason_colours() -> dict[str, str]:
    """One colour (``#rrggbb``) per reason code of SEVERITY, from dark red (most severe) to blue (PERMITTED).

    The smallest RD_YL_BU scheme with enough classes, its ends kept (most severe and PERMITTED).

    Raises:
        ValueError: SEVERITY has more codes than the largest scheme has classes (add one).
    """
    n = len(SEVERITY)
    fits = [k for k in sorted(RD_YL_BU) if k >= n]
    if not fits:
        raise ValueError(f"{n} reason codes but at most {max(RD_YL_BU)} colours: add a larger RdYlBu scheme")
    scheme = RD_YL_BU[fits[0]]
    picks = [round(i * (len(scheme) - 1) / (n - 1)) for i in range(n)]
    return {code: scheme[k] for code, k in zip(SEVERITY, picks, strict=True)}


def layer_styles() -> tuple[LayerStyle, ...]:
    """The style of each layer a run writes with geometry (``rs.runfolder.LAYERS``), and of a store's export."""
    colours = reason_colours()
    codes = tuple(StyleClass(code, code, colours[code]) for code in SEVERITY if code != PERMITTED)
    return (
        LayerStyle(LAYER_FLAGGED, "reasons", "most_severe", codes,
                   "flagged changes by reason code (the most severe where several apply)"),
        LayerStyle(LAYER_PARCELS, "worst_reason", "equals", codes, "parcels with flags by their worst reason"),
        LayerStyle(LAYER_CHANGES, "flagged", "boolean",
                   (StyleClass("true", "flagged", colours[SEVERITY[0]]),
                    StyleClass("false", "not flagged", colours[PERMITTED])), "changes by whether they are flagged"),
        LayerStyle(LAYER_TRACKED_CHANGES, "reasons", "most_severe",
                   (*codes, StyleClass(PERMITTED, PERMITTED, colours[PERMITTED])),
                   "tracked changes by reason code (the most severe where several apply)"),
        LayerStyle(LAYER_PARCEL_HISTORY, "worst_reason", "equals", codes,
                   "parcel history by the worst reason flagged at each date"),
    )


def _holds(column: str, code: str) -> str:
    """QGIS expression: the comma-separated list in ``column`` holds ``code``."""
    return f"array_contains(string_to_array(\"{column}\", ','), '{code}')"


def qgis_filter(style: LayerStyle, index: int) -> str:
    """The QGIS expression selecting the features of class ``index`` of ``style``."""
    value = style.classes[index].value
    if style.match == "boolean":
        return f'"{style.column}"' if value == "true" else f'NOT "{style.column}"'
    if style.match == "equals":
        return f"\"{style.column}\" = '{value}'"
    worse = [f"NOT {_holds(style.column, c.value)}" for c in style.classes[:index]]
    return " AND ".join([_holds(style.column, value), *worse])


def _ogc(tag: str, parent: ET.Element | None = None, text: str | None = None, **attrs: str) -> ET.Element:
    name = f"{{{OGC}}}{tag}"
    element = ET.Element(name, attrs) if parent is None else ET.SubElement(parent, name, attrs)
    element.text = text
    return element


def _ogc_holds(column: str, code: str) -> ET.Element:
    """OGC filter: the comma-separated list in ``column`` holds ``code`` (alone, first, last or between)."""
    anyof = _ogc("Or")
    for pattern in (code, f"{code},*", f"*,{code}", f"*,{code},*"):
        like = _ogc("PropertyIsLike", anyof, wildCard="*", singleChar="?", escapeChar="!")
        _ogc("PropertyName", like, column)
        _ogc("Literal", like, pattern)
    return anyof


def ogc_filter(style: LayerStyle, index: int) -> ET.Element:
    """The OGC filter (``ogc:Filter``) selecting the features of class ``index`` of ``style``."""
    result = _ogc("Filter")
    value = style.classes[index].value
    if style.match != "most_severe":
        equal = _ogc("PropertyIsEqualTo", result)
        _ogc("PropertyName", equal, style.column)
        _ogc("Literal", equal, value)
        return result
    both = _ogc("And", result) if index else result
    both.append(_ogc_holds(style.column, value))
    for worse in style.classes[:index]:
        _ogc("Not", both).append(_ogc_holds(style.column, worse.value))
    return result


def _rgba(colour: str, alpha: int = 255) -> str:
    """QGIS's colour notation ``r,g,b,a`` for ``#rrggbb``."""
    return ",".join(str(int(colour[i:i + 2], 16)) for i in (1, 3, 5)) + f",{alpha}"


def _key(*parts: str) -> str:
    """A stable rule key (QGIS keys rules by a braced UUID)."""
    return "{" + str(uuid.uuid5(uuid.NAMESPACE_URL, "changewatch:" + "/".join(parts))) + "}"


def _fill_symbol(name: str, colour: str) -> ET.Element:
    symbol = ET.Element("symbol", type="fill", name=name, alpha="1", clip_to_extent="1", force_rhr="0")
    layer = ET.SubElement(symbol, "layer", {"class": "SimpleFill", "enabled": "1", "locked": "0", "pass": "0"})
    props = {"color": _rgba(colour, FILL_ALPHA), "outline_color": _rgba(colour), "outline_style": "solid",
             "outline_width": "0.5", "outline_width_unit": "MM", "style": "solid", "joinstyle": "bevel"}
    for k, v in props.items():
        ET.SubElement(layer, "prop", k=k, v=v)
    return symbol


def qml(style: LayerStyle) -> str:
    """The QGIS style (QML) of a polygon layer: a rule-based renderer, one rule per class."""
    root = ET.Element("qgis", version=QGIS_VERSION, styleCategories="Symbology")
    renderer = ET.SubElement(root, "renderer-v2", type="RuleRenderer", symbollevels="0", enableorderby="0",
                             forceraster="0")
    rules = ET.SubElement(renderer, "rules", key=_key(style.layer))
    symbols = ET.SubElement(renderer, "symbols")
    for i, c in enumerate(style.classes):
        ET.SubElement(rules, "rule", key=_key(style.layer, c.value), filter=qgis_filter(style, i), label=c.label,
                      symbol=str(i))
        symbols.append(_fill_symbol(str(i), c.colour))
    ET.SubElement(root, "layerGeometryType").text = "2"  # polygons
    ET.indent(root)
    return f"{QML_DOCTYPE}\n{ET.tostring(root, encoding='unicode')}\n"


def _se(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, f"{{{SE}}}{tag}", attrs)
    element.text = text
    return element


def sld(style: LayerStyle) -> str:
    """The same style as SLD 1.1 (Symbology Encoding): one rule per class, with its OGC filter."""
    for prefix, uri in SLD_PREFIXES.items():  # ElementTree's prefix table: names the namespaces in the output
        ET.register_namespace(prefix, uri)
    root = ET.Element(f"{{{SLD}}}StyledLayerDescriptor", {
        "version": "1.1.0", f"{{{XSI}}}schemaLocation":
            "http://www.opengis.net/sld http://schemas.opengis.net/sld/1.1.0/StyledLayerDescriptor.xsd"})
    layer = ET.SubElement(root, f"{{{SLD}}}NamedLayer")
    _se(layer, "Name", style.layer)
    user = ET.SubElement(layer, f"{{{SLD}}}UserStyle")
    _se(user, "Name", style.layer)
    _se(_se(user, "Description"), "Title", style.title)
    features = _se(user, "FeatureTypeStyle")
    for i, c in enumerate(style.classes):
        rule = _se(features, "Rule")
        _se(rule, "Name", c.label)
        _se(_se(rule, "Description"), "Title", c.label)
        rule.append(ogc_filter(style, i))
        polygon = _se(rule, "PolygonSymbolizer")
        fill, stroke = _se(polygon, "Fill"), _se(polygon, "Stroke")
        _se(fill, "SvgParameter", c.colour, name="fill")
        _se(fill, "SvgParameter", f"{FILL_ALPHA / 255:.2f}", name="fill-opacity")
        _se(stroke, "SvgParameter", c.colour, name="stroke")
        _se(stroke, "SvgParameter", "1", name="stroke-width")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write_styles(gpkg: Path) -> list[str]:
    """Store the style of each layer of ``gpkg`` that has one in the GeoPackage's ``layer_styles`` table.

    As QGIS does: QML and SLD, the layer's default style. Creates the table (registered in ``gpkg_contents`` as
    an attribute table) when absent, and replaces a style of the same name. Returns the layers styled.

    Raises sqlite3.Error when the file cannot be written (``rs.io.files.writing`` reports it as OutputError).
    """
    by_layer = {s.layer: s for s in layer_styles()}
    with closing(sqlite3.connect(gpkg)) as db, db:
        columns = dict(db.execute("SELECT table_name, column_name FROM gpkg_geometry_columns").fetchall())
        styled = [by_layer[name] for name in columns if name in by_layer]
        if not styled:
            return []
        db.execute(LAYER_STYLES_DDL)
        db.execute("INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier, description, last_change, "
                   "srs_id) VALUES (?, 'attributes', ?, 'QGIS layer styles', strftime('%Y-%m-%dT%H:%M:%fZ','now'), 0)",
                   (LAYER_STYLES, LAYER_STYLES))
        for style in styled:
            db.execute('DELETE FROM "layer_styles" WHERE f_table_name = ? AND "styleName" = ?',
                       (style.layer, style.layer))
            db.execute('INSERT INTO "layer_styles" (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, '
                       '"styleName", "styleQML", "styleSLD", "useAsDefault", description, owner, ui) '
                       "VALUES ('', '', ?, ?, ?, ?, ?, 1, ?, '', NULL)",
                       (style.layer, columns[style.layer], style.layer, qml(style), sld(style), style.title))
    return [s.layer for s in styled]


def raster_qml() -> str:
    """The QGIS style (QML) of the change probability raster.

    Band 1 as a pseudocolour ramp over 0–1 (PROBABILITY_RAMP, ColorBrewer ``YlOrRd``), interpolated,
    transparent at 0.
    """
    root = ET.Element("qgis", version=QGIS_VERSION, styleCategories="Symbology")
    pipe = ET.SubElement(root, "pipe")
    renderer = ET.SubElement(pipe, "rasterrenderer", type="singlebandpseudocolor", band="1", opacity="1",
                             alphaBand="-1", classificationMin="0", classificationMax="1")
    ET.SubElement(renderer, "rasterTransparency")
    origin = ET.SubElement(renderer, "minMaxOrigin")
    for tag, text in (("limits", "None"), ("extent", "WholeRaster"), ("statAccuracy", "Estimated")):
        ET.SubElement(origin, tag).text = text
    shader = ET.SubElement(ET.SubElement(renderer, "rastershader"), "colorrampshader", colorRampType="INTERPOLATED",
                           classificationMode="1", clip="0", minimumValue="0", maximumValue="1", labelPrecision="2")
    for i, colour in enumerate(PROBABILITY_RAMP):
        value = i / (len(PROBABILITY_RAMP) - 1)
        ET.SubElement(shader, "item", value=f"{value:g}", label=f"{value:g}", alpha="0" if i == 0 else "255",
                      color=colour)
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(pipe, "huesaturation", saturation="0", grayscaleMode="0", colorizeOn="0")
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    ET.SubElement(root, "blendMode").text = "0"
    ET.indent(root)
    return f"{QML_DOCTYPE}\n{ET.tostring(root, encoding='unicode')}\n"


def write_raster_style(path: Path) -> Path:
    """Write the probability raster's QGIS style (``raster_qml``) to ``path``; returns it.

    QGIS loads a ``.qml`` with the raster of the same name beside it (``change_prob.qml``).
    """
    path.write_text(raster_qml(), encoding="utf-8")
    return path

"""Review decisions: what a person decided about a flag, checked, and read back from any version's layer.

A decision is one row of layer ``review`` of a run's ``flagged.gpkg`` (``rs.runfolder.LAYER_REVIEW``),
with the flag's ``change_id``, ``reasons`` and outline and:

- ``decision``: ``confirm`` (the flag is new construction), ``dismiss`` (it is not: no change,
  or change that is not construction) or ``needs_visit`` (the imagery cannot tell);
- ``reviewer``: who decided (text);
- ``reviewed_at``: when, ISO 8601 with its UTC offset (``2024-05-02T14:03:00+07:00``), as text;
- ``note``: free text ('' for none).

Only decisions a person made are stored: a flag nobody decided on has no row (it is *unreviewed*).

**Layers of earlier versions.** Up to changewatch 0.2.0 the layer had a column ``review`` instead,
with 'confirm', 'dismiss' or 'needs visit' on *every* flag ('needs visit' was written for each flag
nobody decided on), and its notebook, run top to bottom, saved an example decision nobody made. Such
a layer is read by this rule (``upgrade``):

- 'confirm' → ``confirm``, 'dismiss' → ``dismiss``;
- 'needs visit' → ``needs_visit`` when the row has a note, else no decision (it cannot be told
  from the default);
- 'confirm' with the note 'checked against the AFTER chip' (the earlier notebook's example) → no decision;
- ``reviewer`` and ``reviewed_at`` are empty (unknown): the only decisions allowed without them.

Carried over a re-run (``previous_decisions``, ``match_decisions``, ``carry``): each earlier decision
follows the new flag whose outline matches its own (IoU ≥ MATCH_IOU); the others are kept in layer
``review_unmatched``.

Light: pandas, GeoPandas and shapely only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, TypeVar, get_args

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from changewatch.rs.errors import DecisionError, OutputError
from changewatch.rs.io.vector import layer_names, write_gpkg
from changewatch.rs.runfolder import LAYER_REVIEW, LAYER_UNMATCHED
from changewatch.rs.summary import ReviewRecord

DecisionWord = Literal["confirm", "dismiss", "needs_visit"]
DECISIONS: tuple[str, ...] = get_args(DecisionWord)
COLUMNS = ("decision", "reviewer", "reviewed_at", "note")  # what a decision carries besides its flag
LEGACY_COLUMN = "review"  # the column of layers written by changewatch 0.2.0 and earlier
LEGACY_WORDS = {"confirm": "confirm", "dismiss": "dismiss", "needs visit": "needs_visit"}
MATCH_IOU = 0.5  # an earlier decision follows a new flag whose outline overlaps its own by at least this IoU
MATCH_COLUMNS = ("previous_change_id", "match_iou")  # added to carried decisions: where they came from
LEGACY_EXAMPLE = ("confirm", "checked against the AFTER chip")  # the earlier notebook's invented decision

Table = TypeVar("Table", pd.DataFrame, gpd.GeoDataFrame)


def now() -> str:
    """The current local time, ISO 8601 to the second with its UTC offset (a decision's ``reviewed_at``)."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


def timestamp(value: object, change_id: object = None) -> str:
    """``value`` (an aware datetime or ISO 8601 text) as ISO 8601 text with its UTC offset.

    Raises DecisionError when it cannot be read or has no offset (a local time without it is ambiguous).
    """
    where = f" (change_id {change_id})" if change_id is not None else ""
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(str(value).strip())
        except ValueError as exc:
            raise DecisionError(f"reviewed_at {value!r}{where} is not an ISO 8601 time, e.g. "
                                "2024-05-02T14:03:00+07:00") from exc
    if parsed.tzinfo is None:
        raise DecisionError(f"reviewed_at {value!r}{where} has no UTC offset: write it as e.g. "
                            "2024-05-02T14:03:00+07:00")
    return parsed.isoformat()


def _blank(series: pd.Series) -> pd.Series:
    """True where a text cell holds nothing (null, NaN or only spaces)."""
    return series.isna() | (series.astype(str).str.strip() == "")


def decided(table: Table) -> Table:
    """The rows of ``table`` that hold a decision (the others are unreviewed flags)."""
    return table[~_blank(table["decision"])] if "decision" in table else table.iloc[0:0]


def check(table: pd.DataFrame, source: str) -> None:
    """Check the decisions of ``table``.

    Raises DecisionError unless every decision is one of DECISIONS and every ``reviewed_at`` given
    reads as ISO 8601 with an offset; ``source`` says where they come from in the message.
    """
    rows = decided(table)
    bad = rows[~rows["decision"].isin(DECISIONS)]
    if len(bad):
        words = ", ".join(repr(w) for w in dict.fromkeys(bad["decision"]))
        ids = ", ".join(str(i) for i in bad.get("change_id", pd.Series(dtype=object)).head(5))
        raise DecisionError(f"unknown decision {words} (change_id {ids}) in {source}: use "
                            f"{', '.join(DECISIONS[:-1])} or {DECISIONS[-1]}")
    if "reviewed_at" in rows:
        for change_id, value in zip(rows.get("change_id", [None] * len(rows)), rows["reviewed_at"], strict=True):
            if not pd.isna(value) and str(value).strip():
                timestamp(value, change_id)


def check_new(table: pd.DataFrame, stored: pd.DataFrame | None) -> None:
    """Check that the new decisions of ``table`` say who made them and when.

    Raises DecisionError unless every decision of ``table`` that is not one of ``stored`` as it was
    (a decision saved earlier, perhaps upgraded from an earlier version's layer) names its reviewer
    and its time.
    """
    rows = decided(table)
    known: set[tuple[str, ...]] = set()
    if stored is not None:
        known = set(_keys(stored))
    for key, (change_id, reviewer, at) in zip(_keys(rows), rows[["change_id", "reviewer", "reviewed_at"]].itertuples(
            index=False), strict=True):
        if key in known:
            continue
        if pd.isna(reviewer) or not str(reviewer).strip():
            raise DecisionError(f"the decision on change_id {change_id} names no reviewer: every decision records "
                                "who made it")
        if pd.isna(at) or not str(at).strip():
            raise DecisionError(f"the decision on change_id {change_id} has no reviewed_at time")


def _keys(table: pd.DataFrame) -> list[tuple[str, ...]]:
    """Each row's change_id and decision columns as text (null → ''), to compare decisions."""
    cells = table[["change_id", *COLUMNS]].astype(object).where(table[["change_id", *COLUMNS]].notna(), "")
    return [tuple(str(v) for v in row) for row in cells.itertuples(index=False)]


def upgrade(layer: Table) -> Table:
    """A decision layer in this version's columns.

    A layer of changewatch 0.2.0 or earlier (a ``review`` column, no ``decision``) is mapped by the
    rule of the module docstring and its rows without a decision dropped; any layer gains the
    decision columns it lacks (empty). Raises DecisionError for an unknown word in a ``review`` column.
    """
    out = layer.copy()
    if LEGACY_COLUMN in out and "decision" not in out:
        words = out[LEGACY_COLUMN].astype(object)
        notes = out["note"].fillna("").astype(str).str.strip() if "note" in out else pd.Series("", index=out.index)
        unknown = sorted({str(w) for w in words.dropna()} - set(LEGACY_WORDS))
        if unknown:
            raise DecisionError(f"unknown review {', '.join(map(repr, unknown))} in a review layer of an earlier "
                                f"version: expected {', '.join(map(repr, LEGACY_WORDS))}")
        mapped = words.map(LEGACY_WORDS)
        example = (words == LEGACY_EXAMPLE[0]) & (notes == LEGACY_EXAMPLE[1])
        default = (words == "needs visit") & (notes == "")
        out["decision"] = mapped.where(~(example | default), None)
        out = out.drop(columns=[LEGACY_COLUMN])
        out = out[out["decision"].notna()]
    for column in COLUMNS:
        if column not in out:
            out[column] = "" if column == "note" else None
    out["note"] = out["note"].fillna("").astype(str)
    return out


def read_decisions(gpkg: str | Path) -> gpd.GeoDataFrame | None:
    """The decisions in layer ``review`` of a run's ``flagged.gpkg``, one row per decided flag.

    Layers of earlier versions are upgraded (``upgrade``); every decision is checked (``check``:
    DecisionError). Returns None when the file or the layer is absent.
    """
    path = Path(gpkg)
    if not path.is_file() or LAYER_REVIEW not in layer_names(path):
        return None
    layer = decided(upgrade(gpd.read_file(path, layer=LAYER_REVIEW)))
    check(layer, f"layer {LAYER_REVIEW} of {path}")
    return layer


def counts(table: pd.DataFrame | None) -> dict[str, int]:
    """Decisions per word (every word of DECISIONS listed), 0 each for None."""
    found = decided(table)["decision"].value_counts() if table is not None else pd.Series(dtype=int)
    return {word: int(found.get(word, 0)) for word in DECISIONS}


# --- carrying decisions over a re-run ---------------------------------------------------------

@dataclass(frozen=True)
class CarriedReview:
    """Earlier decisions sorted onto a re-run's flags.

    ``review``: one row per new flag that an earlier decision matched (its new ``change_id``,
    ``reasons`` and outline, the decision's other columns — COLUMNS, any a planner
    added — and MATCH_COLUMNS: the earlier ``change_id`` and the IoU of the two outlines);
    ``unmatched``: the earlier decisions no new flag matched, as they were (in the new CRS).
    """

    review: gpd.GeoDataFrame
    unmatched: gpd.GeoDataFrame
    source: Path

    def record(self) -> ReviewRecord:
        """What ``summary.json`` records under ``review``."""
        return ReviewRecord(str(self.source.resolve()), len(self.review), len(self.unmatched), MATCH_IOU)

    def write(self, gpkg: Path) -> None:
        """Add layers ``review`` and ``review_unmatched`` (each only when it has rows) to ``gpkg``."""
        if len(self.review):
            write_gpkg(self.review, gpkg, LAYER_REVIEW)
        if len(self.unmatched):
            write_gpkg(self.unmatched, gpkg, LAYER_UNMATCHED)


def previous_decisions(flagged_gpkg: str | os.PathLike[str]) -> gpd.GeoDataFrame | None:
    """The decisions an earlier run's ``flagged.gpkg`` holds, to carry over a re-run.

    Its ``review`` layer, then its ``review_unmatched`` layer (in the first one's CRS; layers of
    earlier versions in this version's columns, ``upgrade``); None when the file or both layers are
    absent or hold no decision. Raises OutputError when the file exists but cannot
    be read: the decisions it may hold would otherwise be lost when the folder is replaced.
    """
    import pyogrio.errors

    path = Path(flagged_gpkg)
    if not path.exists():
        return None
    try:
        names = layer_names(path)
        parts = [gpd.read_file(path, layer=n) for n in (LAYER_REVIEW, LAYER_UNMATCHED) if n in names]
    except (OSError, pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise OutputError(f"{path} cannot be read ({' '.join(str(exc).split())}), so the review decisions it may "
                          "hold cannot be carried over: move it away and run again") from exc
    if not all(isinstance(p, gpd.GeoDataFrame) for p in parts):
        raise OutputError(f"a review layer of {path} has no geometry, so its decisions cannot be matched to the new "
                          "flags: move the file away and run again")
    parts = [decided(upgrade(p)) for p in parts]  # layers of earlier versions in this version's columns
    parts = [p for p in parts if len(p)]
    if not parts:
        return None
    crs = parts[0].crs
    return gpd.GeoDataFrame(pd.concat([p.to_crs(crs) if p.crs and crs else p for p in parts], ignore_index=True),
                            geometry="geometry", crs=crs)


def match_decisions(previous: gpd.GeoDataFrame, flagged: gpd.GeoDataFrame, source: Path,
                    min_iou: float = MATCH_IOU) -> CarriedReview:
    """Match earlier decisions to new flags one to one, by outline.

    Pairs are taken by decreasing IoU (intersection over union of the areas, in ``flagged``'s
    CRS), earlier rows first on ties, down to ``min_iou``. See ``CarriedReview`` for what comes
    back.
    """
    previous = previous.to_crs(flagged.crs) if previous.crs and flagged.crs else previous
    old = shapely.make_valid(previous.geometry.values)
    new = flagged.geometry.values
    pairs = flagged.sindex.query(old, predicate="intersects") if len(flagged) and len(old) else np.zeros((2, 0), int)
    old_at, new_at = pairs[0], pairs[1]  # (index into the queried geometries, index into the tree)
    union = shapely.area(shapely.union(old[old_at], new[new_at]))
    iou = np.divide(shapely.area(shapely.intersection(old[old_at], new[new_at])), union,
                    out=np.zeros(len(union)), where=union > 0)
    matched: dict[int, tuple[int, float]] = {}  # new row -> (earlier row, IoU)
    used: set[int] = set()
    for k in np.lexsort((old_at, -iou)):
        if iou[k] < min_iou:
            break
        if old_at[k] in used or new_at[k] in matched:
            continue
        used.add(int(old_at[k]))
        matched[int(new_at[k])] = (int(old_at[k]), float(iou[k]))
    carried_columns = [c for c in previous.columns
                       if c not in ("change_id", "reasons", previous.geometry.name, *MATCH_COLUMNS)]
    rows = sorted(matched)
    earlier = previous.iloc[[matched[n][0] for n in rows]].reset_index(drop=True)
    review = gpd.GeoDataFrame({
        "change_id": flagged["change_id"].iloc[rows].to_numpy(),
        "reasons": flagged["reasons"].iloc[rows].to_numpy(),
        **{c: earlier[c].to_numpy() for c in carried_columns},
        "previous_change_id": (earlier["change_id"] if "change_id" in earlier else pd.Series([None] * len(rows))
                               ).to_numpy(),
        "match_iou": np.round([matched[n][1] for n in rows], 4),
    }, geometry=flagged.geometry.iloc[rows].array.to_numpy(), crs=flagged.crs)
    unmatched = previous.iloc[[i for i in range(len(previous)) if i not in used]].reset_index(drop=True)
    return CarriedReview(review, gpd.GeoDataFrame(unmatched, geometry=previous.geometry.name, crs=previous.crs), source)




def carry(previous: gpd.GeoDataFrame | None, flagged: gpd.GeoDataFrame, source: Path) -> CarriedReview | None:
    """The earlier decisions ``previous`` (``previous_decisions``) matched to a re-run's flags; None without any."""
    return match_decisions(previous, flagged, source) if previous is not None else None

"""CSV cells a spreadsheet will not run: text that Excel, LibreOffice or Sheets would read as a formula is defused.

A cell such as ``=HYPERLINK("http://evil.example/x","Ward 1")`` in a parcel layer's ``ward`` column, written as is
into a CSV meant for Excel, becomes a live formula when the file is opened (CSV or "formula" injection). Following
OWASP's guidance (https://owasp.org/www-community/attacks/CSV_Injection), every *text* cell that starts with one of
``FORMULA_STARTS`` (``=``, ``+``, ``-``, ``@``, tab, carriage return) is written with a single quote ``'`` before
it, so a spreadsheet shows it as text; numbers (coordinates, areas, probabilities, ids), also when written as text
(``-46.6333333``), are never changed, and the
CSV's own quoting (of commas, quotes and line breaks) is pandas'. Used by every CSV changewatch writes for people:
``export``'s CSVs (``rs.export``) and ``report``'s ``work_orders.csv`` (``rs.report.write``).
"""

from __future__ import annotations

import re

import pandas as pd

NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)  # a plain number: nothing to run
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # OWASP: characters that make a spreadsheet read a formula
TEXT_PREFIX = "'"  # what a defused cell starts with: a spreadsheet shows the rest as text


def defuse_cell(value: object) -> object:
    """``value`` with TEXT_PREFIX before it when it is text starting with one of FORMULA_STARTS; else unchanged.

    Text that is a plain number (``-46.6333333``, a coordinate written with its decimals) is a number to a
    spreadsheet, not a formula, and is kept as it is.
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not NUMBER.fullmatch(value):
        return TEXT_PREFIX + value
    return value


def defuse_formulas(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``table`` whose text cells cannot run as spreadsheet formulas (see the module).

    Only text columns (object and string dtypes) are looked at, and in them only ``str`` cells; numeric, boolean
    and date columns, missing values and the column names are kept as they are. Shape and column order unchanged.
    """
    out = table.copy()
    for column in out.columns[[pd.api.types.is_object_dtype(t) or pd.api.types.is_string_dtype(t)
                               for t in out.dtypes]]:
        out[column] = out[column].map(defuse_cell, na_action="ignore")
    return out

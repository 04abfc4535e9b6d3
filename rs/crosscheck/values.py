"""The values of the cross-check's layers: permit dates and zoning's construction_allowed.

Permit dates are read by a declared rule, never guessed; zoning's construction_allowed as yes/no.
"""

from __future__ import annotations

import re
from datetime import date, datetime

import numpy as np
import pandas as pd
from dateutil import parser as dateparser

from changewatch.rs.crosscheck.settings import DateFormat
from changewatch.rs.errors import LayerError

EXAMPLES = 5  # values named in an error message
DATE_EXAMPLES = 3  # values (with their rows) quoted in a date error
DAY_FIRST = re.compile(r"\d{1,2}\D")


def _calendar_date(value: object, how: DateFormat) -> date | None:
    """The date ``value`` stands for by the rule ``how``, or None when it cannot be read by that rule.

    Its wall-clock date: time and UTC offset are ignored.
    """
    if isinstance(value, datetime):  # also pandas.Timestamp
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value).strip()
    if how.formats:
        for fmt in how.formats:
            try:
                return datetime.strptime(text, fmt).date()
            except ValueError:
                continue
        return None
    try:
        return datetime.fromisoformat(text).date()
    except ValueError:
        pass
    if how.dayfirst and DAY_FIRST.match(text):  # not a year first: dateutil would read 2023/03/05 as 3 May
        try:  # parsed against two defaults: a date missing its day, month or year differs between them
            a = dateparser.parse(text, dayfirst=True, default=datetime(2000, 1, 1))
            b = dateparser.parse(text, dayfirst=True, default=datetime(2001, 2, 2))
        except (ValueError, OverflowError):
            return None
        return a.date() if a.date() == b.date() else None
    return None


def parse_dates(values: pd.Series, how: DateFormat = DateFormat(), column: str = "date", role: str = "permits",
                ids: pd.Series | None = None) -> pd.Series:
    """Calendar dates (datetime64[s] at midnight, same index; NaT where blank) of a date column.

    Columns already typed as dates are used as they are (their wall-clock date). Text is read by
    ``how`` (see ``settings.DateFormat``); each value's own date as written counts — its time and
    UTC offset are ignored, so ``2023-03-05T00:00:00+07:00`` is 5 March. Raises LayerError naming
    the rows (by ``ids``) of every value that is not blank and cannot be read: never a guess, and
    never an empty date (which the rules would read as open-ended).
    """
    if pd.api.types.is_datetime64_any_dtype(values):
        plain = values.dt.tz_localize(None) if getattr(values.dt, "tz", None) is not None else values
        dates: pd.Series = plain.dt.normalize().astype("datetime64[s]")
        return dates
    blank = values.isna().to_numpy() | (values.astype(str).str.strip() == "").to_numpy()
    unique = pd.unique(values[~blank].to_numpy(dtype=object))
    lookup = {v: _calendar_date(v, how) for v in unique}
    parsed = values[~blank].map(lookup)
    bad = np.flatnonzero(~blank)[parsed.isna().to_numpy()]
    if len(bad):
        label = str(ids.name) if ids is not None else "row"
        names = (ids.to_numpy() if ids is not None else values.index.to_numpy())[bad[:DATE_EXAMPLES]]
        # strict=False: ``names`` holds the first DATE_EXAMPLES only
        shown = ", ".join(f"{values.iloc[i]!r} ({label} {n})" for i, n in zip(bad, names, strict=False))
        if how.formats or how.dayfirst:
            raise LayerError(f"{role} column {column}: {len(bad)} date(s) cannot be read as {how.describe()}: "
                             f"{shown}")
        raise LayerError(f"{role} column {column}: {len(bad)} date(s) are not ISO 8601 (YYYY-MM-DD), e.g. {shown}; "
                         f"a date like 03/04/2023 can be 3 April or 4 March, so declare how to read them in the "
                         f"--columns file: {role}: {{date_format: '%d/%m/%Y'}} (or {{dayfirst: true}})")
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[s]")
    out[~blank] = np.array(parsed.tolist(), dtype="datetime64[s]")
    return out


ALLOWED = {"true": True, "yes": True, "y": True, "1": True, "false": False, "no": False, "n": False, "0": False}


def parse_allowed(values: pd.Series, column: str) -> pd.Series:
    """construction_allowed as booleans; LayerError for values that are not yes/no (true/false, 1/0)."""
    if values.dtype == bool:
        return values
    parsed = values.astype(str).str.strip().str.lower().map(ALLOWED)
    if parsed.isna().any():
        bad = sorted(set(values[parsed.isna()].astype(str)))[:EXAMPLES]
        raise LayerError(f"zoning column {column} must be yes/no (true/false, 1/0); found {', '.join(bad)}")
    return parsed.astype(bool)

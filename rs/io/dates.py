"""Dates as users type them in manifests, SCENES files and options: ISO 8601 calendar dates, ``YYYY-MM-DD`` only.

``date.fromisoformat`` alone also takes ``20240501`` and week dates such as ``2024-W18-3`` (Python ≥ 3.11),
which nobody means in a manifest; a day-first ``01/05/2024`` is ambiguous. Both are refused here, never guessed.
"""

from __future__ import annotations

import re
from datetime import date

ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)


def iso_date(text: str) -> date:
    """The calendar date ``text`` (surrounding blanks ignored) names as ``YYYY-MM-DD``.

    Raises ValueError for anything else, including impossible dates (``2024-02-30``).
    """
    value = text.strip()
    if not ISO_DATE.fullmatch(value):
        raise ValueError(f"{text!r} is not a YYYY-MM-DD date")
    return date.fromisoformat(value)

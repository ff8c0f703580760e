"""Spreadsheet-safe cell values."""

from __future__ import annotations

from typing import Any

# A spreadsheet treats a cell starting with one of these as a formula (tab and CR
# too: some programs strip them and then see the "=" behind).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def neutralize(value: Any) -> Any:
    """Return ``value`` with a leading apostrophe if a spreadsheet would run it as a formula.

    django-import-export's IMPORT_EXPORT_ESCAPE_FORMULAE_ON_EXPORT only drops a
    leading "=" (and alters the data); "+1+1" and "@SUM(1)" would still run.
    """
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value

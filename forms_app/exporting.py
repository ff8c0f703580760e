"""CSV export of submissions, safe to open in spreadsheet programs."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from typing import Any

from contacts.exporting import neutralize_cell


def neutralize(value: Any) -> str:
    """Return the cell as text, with a leading apostrophe when a spreadsheet would run it as a formula."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    elif isinstance(value, dict):
        value = value.get("name", "")
    return neutralize_cell(str(value))


class _Echo:
    def write(self, value: str) -> str:
        return value


def csv_lines(header: list[str], rows: Iterable[list[Any]]) -> Iterator[str]:
    """Yield the CSV text line by line (for a streaming response), every cell neutralized."""
    writer = csv.writer(_Echo())
    yield "\ufeff"  # BOM: Excel then reads the file as UTF-8
    yield writer.writerow([neutralize(h) for h in header])
    for row in rows:
        yield writer.writerow([neutralize(cell) for cell in row])

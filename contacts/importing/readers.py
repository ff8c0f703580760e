"""Stream rows out of CSV and XLSX files without loading the file into memory."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

FORMATS = ("csv", "xlsx")


class UnreadableFile(ValueError):
    pass


def detect_format(name: str) -> str:
    """Return "csv" or "xlsx" from a file name, or raise UnreadableFile."""
    suffix = Path(name).suffix.lower().lstrip(".")
    if suffix in ("csv", "txt", "tsv"):
        return "csv"
    if suffix == "xlsx":
        return "xlsx"
    raise UnreadableFile(f"Unsupported file type {suffix!r}: upload a .csv or .xlsx file.")


def _cell_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


@contextmanager
def open_rows(binary: IO[bytes], fmt: str) -> Iterator[tuple[list[str], Iterator[list[str]]]]:
    """Yield (headers, row iterator); rows are lists of strings aligned with headers."""
    if fmt == "csv":
        text = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="replace", newline="")
        sample = text.read(16384)
        text.seek(0)
        try:
            dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
        except csv.Error:
            dialect = csv.excel
        reader = csv.reader(text, dialect)
        headers = next(reader, None)
        if headers is None:
            raise UnreadableFile("The file is empty.")
        try:
            yield [h.strip() for h in headers], reader
        finally:
            text.detach()
        return
    if fmt == "xlsx":
        import openpyxl

        try:
            # read_only streams the sheet XML instead of building every cell.
            workbook = openpyxl.load_workbook(binary, read_only=True, data_only=True)
        except Exception as exc:  # openpyxl raises many types for a broken file
            raise UnreadableFile("This is not a readable .xlsx file.") from exc
        try:
            rows = workbook.worksheets[0].iter_rows(values_only=True)
            first = next(rows, None)
            if first is None:
                raise UnreadableFile("The sheet is empty.")
            headers = [_cell_text(c).strip() for c in first]
            width = len(headers)

            def cells() -> Iterator[list[str]]:
                for row in rows:
                    values = [_cell_text(c) for c in row[:width]]
                    if any(values):
                        yield values

            yield headers, cells()
        finally:
            workbook.close()
        return
    raise UnreadableFile(f"Unsupported format {fmt!r}.")


def count_rows(binary: IO[bytes], fmt: str) -> int:
    """Return the number of data rows (CSV: line count, fast and streaming; quoted newlines overcount)."""
    if fmt == "csv":
        lines = 0
        last = b"\n"
        while chunk := binary.read(1 << 20):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
        if last != b"\n":
            lines += 1
        return max(lines - 1, 0)
    import openpyxl

    workbook = openpyxl.load_workbook(binary, read_only=True)
    try:
        sheet = workbook.worksheets[0]
        return max((sheet.max_row or 1) - 1, 0)
    finally:
        workbook.close()

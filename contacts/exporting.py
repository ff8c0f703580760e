"""CSV and XLSX export of the contact list: streamed, and safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import datetime as dt
import re
import tempfile
from collections.abc import Iterable, Iterator
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db.models import F, QuerySet
from django.http import FileResponse, StreamingHttpResponse
from django.utils import timezone

from contacts.filters import Column
from contacts.models import Contact, CustomField
from contacts.selectors import with_list_relations

EXPORT_CHUNK = 2_000
# A spreadsheet runs a cell that starts with one of these as a formula (CSV/formula injection).
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


# Characters XML 1.0 (so an .xlsx cell) cannot hold: C0 controls but tab, newline and carriage
# return; surrogates; U+FFFE and U+FFFF. openpyxl refuses a cell holding one (IllegalCharacterError).
XML_ILLEGAL_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xlsx_safe_cell(value: Any) -> Any:
    """Return an (already neutralized) cell with the characters an .xlsx cannot hold removed.

    Removing them can uncover a formula trigger (a vertical tab before "=HYPERLINK(...)"), so the result is
    neutralized again.
    """
    if isinstance(value, str) and XML_ILLEGAL_RE.search(value):
        return neutralize_cell(XML_ILLEGAL_RE.sub("", value))
    return value


def neutralize_cell(value: Any) -> Any:
    """Return ``value`` with a leading apostrophe when a spreadsheet would read it as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        return "'" + value
    return value


def custom_cell(definition: CustomField, value: Any) -> Any:
    """Return a custom value as a cell: lists joined, decimals as numbers, dates as dates.

    Decimals are stored as text to keep their digits; written as text, a negative
    one ("-12.50") would be taken for a formula and neutralized into "'-12.50",
    which is no longer a number when the file comes back in.
    """
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if definition.type == CustomField.Type.DECIMAL and isinstance(value, str):
        try:
            return Decimal(value)
        except InvalidOperation:  # stored before the type changed: shown as it is
            return value
    if definition.type == CustomField.Type.DATE and isinstance(value, str):
        # A date cell in XLSX (sortable, filterable), and the same YYYY-MM-DD in CSV.
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            return value
    return "" if value is None else value


def cell_value(contact: Contact, column: Column) -> Any:
    """Return what a column shows for a contact, as plain data (text, number, date)."""
    key = column.key
    if column.custom is not None:
        value = (contact.custom or {}).get(column.custom.key)
        if isinstance(value, bool):
            return "Yes" if value else "No"
        return custom_cell(column.custom, value)
    if key == "phone":
        return contact.phone_display
    if key == "tags":
        return ", ".join(t.name for t in contact.tags.all())
    if key == "stage":
        return "; ".join(f"{m.pipeline.name}: {m.stage.name}" for m in contact.stage_memberships.all())
    if key == "owner":
        return contact.owner.get_username() if contact.owner else ""
    if key == "source":
        return contact.get_source_display()
    if key in ("created", "updated", "last_activity"):
        value = getattr(contact, {"created": "created_at", "updated": "updated_at"}.get(key, "last_activity_at"))
        return timezone.localtime(value).replace(tzinfo=None) if value else ""
    return getattr(contact, key, "") or ""


def export_rows(
    queryset: QuerySet[Contact],
    columns: list[Column],
    *,
    sort_expr: Any = None,
    descending: bool = True,
    nullable: bool = False,
) -> Iterator[list[Any]]:
    """Yield a header and one neutralized row per contact, loading EXPORT_CHUNK contacts at a time.

    Rows come in the list's order: ``sort_expr`` (as contacts.filters.sort_expression gives it)
    then id, empty values last in both directions; newest first when no sort is given.
    """
    yield [neutralize_cell(c.label) for c in columns]
    if sort_expr is None:
        ordered = queryset.order_by("-created_at", "-id")
    else:
        key = F("_export_sort")
        # NULLS LAST only where the key can be null, as on the list page: on a NOT NULL key it
        # would stop PostgreSQL from reading the rows in index order and make it sort them all.
        if nullable:
            key = key.desc(nulls_last=True) if descending else key.asc(nulls_last=True)
        else:
            key = key.desc() if descending else key.asc()
        ordered = queryset.annotate(_export_sort=sort_expr).order_by(key, "-id" if descending else "id")
    rows = with_list_relations(ordered).iterator(chunk_size=EXPORT_CHUNK)
    for contact in rows:
        yield [neutralize_cell(cell_value(contact, c)) for c in columns]


class _Echo:
    def write(self, value: str) -> str:
        return value


def _text(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return value


def csv_response(rows: Iterable[list[Any]], *, filename: str) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())
    # A BOM lets Excel read UTF-8 names correctly.
    body = (writer.writerow([_text(v) for v in row]) for row in rows)
    response = StreamingHttpResponse(_prefixed("\ufeff", body), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _prefixed(first: str, rest: Iterable[str]) -> Iterator[str]:
    yield first
    yield from rest


def xlsx_response(rows: Iterable[list[Any]], *, filename: str) -> FileResponse:
    """Write rows with openpyxl's write-only mode (flat memory) to a temporary file and stream it."""
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("Contacts")
    for row in rows:
        sheet.append([xlsx_safe_cell(value) for value in row])
    handle = tempfile.TemporaryFile()
    workbook.save(handle)
    handle.seek(0)
    return FileResponse(
        handle,
        as_attachment=True,
        filename=filename,
        content_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    )

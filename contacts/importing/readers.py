"""Stream rows out of CSV and XLSX files without loading the file into memory."""

from __future__ import annotations

import codecs
import contextlib
import csv
import datetime as dt
import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from django.conf import settings

from contacts.exporting import FORMULA_TRIGGERS  # what neutralize_cell prefixes with "'"

FORMATS = ("csv", "xlsx")

ZIP_SIGNATURE = b"PK\x03\x04"  # an .xlsx is a zip archive
OLE2_SIGNATURE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # the old binary .xls
CSV_DEFAULT_FIELD_LIMIT = 131072  # the csv module's own limit, kept as the floor
SCAN_CHUNK = 1 << 20
WINDOWS_1252 = "cp1252"
# Five bytes are undefined in Python's cp1252; Excel and browsers read them as
# the C1 control of the same number, so a legacy file always decodes (never to U+FFFD).
CP1252_FALLBACK_ERRORS = "crm_cp1252_c1"
DELIMITERS = (",", ";", "\t", "|")  # in the order a tie is settled
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "vertical bar"}
SNIFF_CHARS = 16384
SNIFF_ROWS = 50
_SURROGATE = re.compile("[\ud800-\udfff]")
UTF16_DAMAGED = (
    "The file starts as UTF-16 text (Excel's \"Unicode text\") but is not valid UTF-16 text ({reason}); "
    "save it again as CSV UTF-8 and upload that."
)


def _c1_for_undefined_byte(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return "".join(chr(b) for b in exc.object[exc.start : exc.end]), exc.end


codecs.register_error(CP1252_FALLBACK_ERRORS, _c1_for_undefined_byte)


class UnreadableFile(ValueError):
    pass


class Rows:
    """The data rows of an open file, and what to suggest when a row has more cells than the header.

    Iterating it hands out the underlying generator: reading rows costs no extra call per row.
    """

    __slots__ = ("_rows", "overflow_hint")

    def __init__(self, rows: Iterator[list[str]], overflow_hint: str):
        self._rows = rows
        self.overflow_hint = overflow_hint

    def __iter__(self) -> Iterator[list[str]]:
        return self._rows

    def __next__(self) -> list[str]:
        return next(self._rows)


def detect_format(name: str) -> str:
    """Return "csv" or "xlsx" from a file name, or raise UnreadableFile."""
    suffix = Path(name).suffix.lower().lstrip(".")
    if suffix in ("csv", "txt", "tsv"):
        return "csv"
    if suffix == "xlsx":
        return "xlsx"
    raise UnreadableFile(f"Unsupported file type {suffix!r}: upload a .csv or .xlsx file.")


def _content_format(binary: IO[bytes], fmt: str) -> str:
    """Return the format the bytes really are: a workbook renamed to .csv is still a workbook."""
    head = binary.read(len(OLE2_SIGNATURE))
    binary.seek(0)
    if fmt == "csv" and head.startswith(ZIP_SIGNATURE):
        return "xlsx"
    if head.startswith(OLE2_SIGNATURE):
        raise UnreadableFile(
            "This is an old Excel .xls workbook: save it as .xlsx or as CSV UTF-8 and upload that."
        )
    return fmt


def _has_utf16_bom(binary: IO[bytes]) -> bool:
    head = binary.read(2)
    binary.seek(0)
    return head in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def _text_encoding(binary: IO[bytes]) -> tuple[str, str]:
    """Return (encoding, errors) for CSV bytes: UTF-8 when the whole file decodes as UTF-8, else Windows-1252.

    Excel on Windows saves "CSV" in the ANSI code page (cp1252 in the Americas
    and Western Europe) and "Unicode text" as UTF-16 with a BOM. Decoding with
    errors="replace" turned every accented letter of such a file into U+FFFD.
    """
    if _has_utf16_bom(binary):
        return "utf-16", "strict"
    decoder = codecs.getincrementaldecoder("utf-8")()
    seen_utf8 = False  # a letter beyond ASCII written as UTF-8 before the first bad byte
    offset = 0
    try:
        while chunk := binary.read(SCAN_CHUNK):
            try:
                seen_utf8 = not decoder.decode(chunk).isascii() or seen_utf8
            except UnicodeDecodeError as exc:
                seen_utf8 = seen_utf8 or not chunk[: exc.start].decode("utf-8", "ignore").isascii()
                if seen_utf8:
                    # UTF-8 with a damaged byte: read as Windows-1252, every accented name
                    # in it would turn to mojibake. Better to say so than to guess.
                    raise UnreadableFile(
                        f"The file is UTF-8 but byte {offset + exc.start + 1:,} is not valid UTF-8; "
                        "save it again as CSV UTF-8 and upload that."
                    ) from None
                return WINDOWS_1252, CP1252_FALLBACK_ERRORS
            offset += len(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return WINDOWS_1252, CP1252_FALLBACK_ERRORS
    finally:
        binary.seek(0)
    return "utf-8-sig", "strict"  # -sig drops a BOM when there is one


def _raise_csv_field_limit() -> None:
    # A long note or address exceeds csv's 128 KiB default; the engine's length
    # checks then refuse that one row. Bounded by the upload limit, so a stray
    # quote cannot make one "cell" of the rest of a huge file in memory.
    limit = max(
        CSV_DEFAULT_FIELD_LIMIT, getattr(settings, "CRM_MAX_UPLOAD_BYTES", 10 * 1024 * 1024)
    )
    csv.field_size_limit(limit)


def unique_headers(raw: list[str]) -> list[str]:
    """Return stripped headers made unique ("Phone", "Phone (2)"; a blank one becomes "Column 3").

    The mapping is keyed by header, so two "Phone" columns could not be mapped
    one by one, and the error file could not keep them apart.
    """
    headers: list[str] = []
    taken: set[str] = set()
    for index, header in enumerate(raw, start=1):
        base = _header_text(header) or f"Column {index}"
        name, copy = base, 1
        while name in taken:
            copy += 1
            name = f"{base} ({copy})"
        taken.add(name)
        headers.append(name)
    return headers


def _header_text(header: str) -> str:
    # Headers are stored in the job's mapping (JSON), where PostgreSQL holds neither NUL nor a
    # lone surrogate; a header is only a name, so NUL is dropped and a surrogate shown as U+FFFD.
    text = header.replace("\x00", "").strip()
    if not text.isascii():
        text = _SURROGATE.sub("\ufffd", text)
    if text[:1] == "'" and text[1:2] in FORMULA_TRIGGERS:
        text = text[1:]  # the apostrophe our failed-rows file puts before a formula-like header
    return text


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


def _csv_rows(reader, delimiter: str) -> Iterator[list[str]]:
    last_line = 0
    min_delimiters = 1
    try:
        for row in reader:
            line = reader.line_num
            if line - last_line > 1:
                _refuse_swallowed_rows(row, delimiter, min_delimiters, first_line=last_line + 1, last_line=line)
            elif last_line == 0:
                min_delimiters = max(1, len(row) - 1)  # a swallowed row has the header's delimiters
            last_line = line
            yield row
    except csv.Error as exc:
        raise UnreadableFile(
            f"Line {reader.line_num}: {exc} (check for an unclosed quote)."
        ) from exc
    except UnicodeDecodeError as exc:
        # Only UTF-16 can fail here: UTF-8 was checked whole before reading, cp1252 always decodes.
        # No line number: the text is decoded a block at a time, ahead of the rows read.
        raise UnreadableFile(UTF16_DAMAGED.format(reason=exc.reason)) from None


def _refuse_swallowed_rows(row: list[str], delimiter: str, min_delimiters: int, *, first_line: int, last_line: int) -> None:
    """Refuse a record whose quoted cell holds whole rows of the file: a quote that was opened and never
    closed where it should have been. Read on, those rows were one cell of this row, lost without a word.

    A cell that only spans lines (an address, a note) may hold a line with commas ("Springfield, IL,
    62704, USA"), so one such line is not enough: it takes three, or one in a cell that runs on to the
    end of the file (its last line break read into the cell: nothing closed the quote).
    """
    for cell in row:
        if "\n" not in cell and "\r" not in cell:
            continue
        swallowed = [text for text in cell.splitlines()[1:] if text.count(delimiter) >= min_delimiters]
        if len(swallowed) >= 3 or (swallowed and cell.endswith(("\n", "\r"))):
            raise UnreadableFile(
                f"Line {first_line}: a quote opened in this row is not closed until line {last_line}, so "
                f"{len(swallowed):,} row{'s' if len(swallowed) != 1 else ''} after it {'were' if len(swallowed) != 1 else 'was'} read as one cell (check for an unclosed quote, as in "
                f"\"{_preview(cell)}). Fix it and import the file again; rows already imported are skipped as unchanged."
            )


def _preview(cell: str) -> str:
    first = cell.splitlines()[0] if cell else ""
    return first[:40] + ("…" if len(first) > 40 else "")


def _guess_delimiter(sample: str, complete: bool) -> str:
    """Return the delimiter (one of DELIMITERS) that splits the sample's rows most consistently.

    Only the delimiter is guessed: csv.Sniffer also guessed the quote character and
    doublequote, and took the apostrophes in our own failed-rows file's messages
    ('alice@@example.com') for quotes, splitting "lead, vip" and "Acme ""Best"" Co".
    Quoting is always RFC 4180's, as Excel and every CRM export write it.
    """
    best, best_score = DELIMITERS[0], (0, 0)
    for delimiter in DELIMITERS:
        rows: list[list[str]] = []
        # An unclosed quote in the sample stops the reading: the rows before it are judged.
        with contextlib.suppress(csv.Error):
            for row in csv.reader(io.StringIO(sample), delimiter=delimiter):
                rows.append(row)
                if len(rows) > SNIFF_ROWS:
                    break
        if not complete:
            rows = rows[:-1]  # the sample may end mid-row
        if not rows or len(rows[0]) < 2:
            continue  # the header would be one column
        width = len(rows[0])
        agreeing = sum(1 for row in rows[1:] if len(row) == width)
        score = (agreeing, width)
        if score > best_score:
            best, best_score = delimiter, score
    return best


def _sheet_rows(rows, width: int) -> Iterator[list[str]]:
    """Yield the data rows after the header, blank rows inside the data included.

    The engine numbers rows by position, so a blank row dropped here shifted
    every later error to the wrong line; trailing blank rows (formatting only)
    are still dropped.
    """
    blanks = 0
    for row in rows:
        values = [_cell_text(c) for c in row]
        # Cells past the header are kept for the engine to refuse (nothing is dropped unseen);
        # empty ones there are only formatting.
        while len(values) > width and not values[-1].strip():
            values.pop()
        if not any(values):
            blanks += 1
            continue
        for _ in range(blanks):
            yield []
        blanks = 0
        yield values


@contextmanager
def open_rows(binary: IO[bytes], fmt: str) -> Iterator[tuple[list[str], Iterator[list[str]]]]:
    """Yield (headers, Rows); rows are lists of strings aligned with headers.

    A row may have more cells than the header: they are kept for the engine to refuse.
    """
    fmt = _content_format(binary, fmt)
    if fmt == "csv":
        encoding, errors = _text_encoding(binary)
        _raise_csv_field_limit()
        text = io.TextIOWrapper(binary, encoding=encoding, errors=errors, newline="")
        try:
            try:
                sample = text.read(SNIFF_CHARS)
            except UnicodeDecodeError as exc:
                raise UnreadableFile(UTF16_DAMAGED.format(reason=exc.reason)) from None
            text.seek(0)
            delimiter = _guess_delimiter(sample, complete=len(sample) < SNIFF_CHARS)
            reader = csv.reader(text, delimiter=delimiter, quotechar='"', doublequote=True)
            rows = _csv_rows(reader, delimiter)
            headers = next(rows, None)
            if headers is None:
                raise UnreadableFile("The file is empty.")
            if not any(h.strip() for h in headers):
                raise UnreadableFile("Line 1 is empty: the first line must hold the column headers.")
            hint = f"check for an unquoted {DELIMITER_NAMES[delimiter]} in a value"
            yield unique_headers(headers), Rows(rows, hint)
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
            sheet = _data_sheet(workbook)
            # The <dimension> element is optional (write-only openpyxl leaves it out)
            # and sometimes wrong; read_only stops at it, so read the real rows.
            sheet.reset_dimensions()
            rows = sheet.iter_rows(values_only=True)
            first = next(rows, None)
            if first is None:
                raise UnreadableFile("The sheet is empty.")
            raw = [_cell_text(c) for c in first]
            while raw and not raw[-1].strip():
                raw.pop()  # styled but empty cells after the last header
            if not raw:
                raise UnreadableFile("Row 1 is empty: the first row must hold the column headers.")
            headers = unique_headers(raw)
            yield headers, Rows(_sheet_rows(rows, len(headers)), "check for values to the right of the last header")
        finally:
            workbook.close()
        return
    raise UnreadableFile(f"Unsupported format {fmt!r}.")


# A <row> start tag with content (a self-closing one is an empty, formatted row)
# and its optional r="<row number>" attribute.
_SHEET_ROW = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?row(?=[\s>])([^>]*)>")
_ROW_NUMBER = re.compile(rb'\sr="(\d+)"')


def _sheet_last_row(source: IO[bytes]) -> int:
    """Return the number of the last row with cells, scanning the sheet XML (fast, streaming)."""
    last = 0
    tail = b""
    while chunk := source.read(SCAN_CHUNK):
        data = tail + chunk
        end = 0
        for match in _SHEET_ROW.finditer(data):
            end = match.end()
            attributes = match.group(1)
            if attributes.endswith(b"/"):
                continue
            number = _ROW_NUMBER.search(attributes)
            last = int(number.group(1)) if number else last + 1
        # Keep an unfinished tag for the next chunk; at most a tag's length is carried over.
        cut = data.rfind(b"<", end)
        tail = data[cut:] if cut != -1 and len(data) - cut < 4096 else b""
    return last


def _data_sheet(workbook):
    """The sheet that was selected when the workbook was saved (an instructions sheet often comes first)."""
    active = workbook.active
    return active if active in workbook.worksheets else workbook.worksheets[0]


def _count_data_lines(chunks, newline):
    # Every line end counts, \n, \r\n and the old Mac \r alike: counting \n alone made a
    # \r-only file "0 rows", and a big one then ran inside the web request.
    cr, lf = ("\r", "\n") if isinstance(newline, str) else (b"\r", b"\n")
    lines = 0
    last = lf
    after_cr = False
    for chunk in chunks:
        if not chunk:
            continue
        lines += chunk.count(lf) + chunk.count(cr) - chunk.count(cr + lf)
        if after_cr and chunk[:1] == lf:
            lines -= 1  # a \r\n split between two chunks
        after_cr = chunk[-1:] == cr
        last = chunk[-1:]
    if last not in (lf, cr):
        lines += 1
    return max(lines - 1, 0)  # the header line


def count_rows(binary: IO[bytes], fmt: str) -> int:
    """Return the number of data rows (CSV: line count, fast and streaming; quoted newlines overcount)."""
    fmt = _content_format(binary, fmt)
    if fmt == "csv":
        if _has_utf16_bom(binary):
            # Two bytes a character: a b"\n" byte may be half of another character.
            text = io.TextIOWrapper(binary, encoding="utf-16", newline="")
            try:
                return _count_data_lines(iter(lambda: text.read(SCAN_CHUNK), ""), "\n")
            except UnicodeDecodeError as exc:
                raise UnreadableFile(UTF16_DAMAGED.format(reason=exc.reason)) from None
            finally:
                text.detach()
        return _count_data_lines(iter(lambda: binary.read(SCAN_CHUNK), b""), b"\n")
    import openpyxl

    try:
        workbook = openpyxl.load_workbook(binary, read_only=True)
    except Exception as exc:  # openpyxl raises many types for a broken file
        raise UnreadableFile("This is not a readable .xlsx file.") from exc
    try:
        sheet = _data_sheet(workbook)
        # The <dimension> element may be missing (write-only openpyxl, our own web
        # export) or wrong, and a missing one counted as 0 rows: a big file then ran
        # inside the web request. Scanning the raw XML costs ~3 s per million rows,
        # less than openpyxl spends opening a sheet that has no dimension.
        with sheet._get_source() as source:
            return max(_sheet_last_row(source) - 1, 0)
    finally:
        workbook.close()

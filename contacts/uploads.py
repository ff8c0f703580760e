"""What an uploaded file really is, read from its name and its first bytes, never from the sender's word.

The Content-Type of a multipart part is whatever the sender typed: ``evil.exe`` sent as
``application/pdf`` must not be stored, nor offered to staff, as a PDF. A file passes only when
its extension names a type listed here and its leading bytes carry that type's signature (text
must decode as text and must not look like HTML or a script). A type without a signature here
cannot be checked and is refused, even when CRM_ALLOWED_UPLOAD_TYPES lists it.
"""

from __future__ import annotations

import codecs
import mimetypes
import re
import zipfile
from collections.abc import Callable

PDF = "application/pdf"
PNG = "image/png"
JPEG = "image/jpeg"
GIF = "image/gif"
WEBP = "image/webp"
TEXT = "text/plain"
CSV = "text/csv"
DOC = "application/msword"
XLS = "application/vnd.ms-excel"
PPT = "application/vnd.ms-powerpoint"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"

TYPE_BY_EXTENSION = {
    "pdf": PDF,
    "png": PNG,
    "jpg": JPEG,
    "jpeg": JPEG,
    "gif": GIF,
    "webp": WEBP,
    "txt": TEXT,
    "csv": CSV,
    "doc": DOC,
    "xls": XLS,
    "ppt": PPT,
    "docx": DOCX,
    "xlsx": XLSX,
    "pptx": PPTX,
}
TYPE_LABELS = {
    PDF: "PDF", PNG: "PNG image", JPEG: "JPEG image", GIF: "GIF image", WEBP: "WebP image", TEXT: "text file",
    CSV: "CSV file", DOC: "Word document", XLS: "Excel workbook", PPT: "PowerPoint presentation",
    DOCX: "Word document", XLSX: "Excel workbook", PPTX: "PowerPoint presentation",
}

# Text is judged on its first 64 KiB: enough to tell a document from a program or a web page.
TEXT_SAMPLE_BYTES = 64 * 1024
OLE_SIGNATURE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# The main part each Office Open XML package must hold, besides [Content_Types].xml.
OOXML_MAIN_PART = {DOCX: "word/", XLSX: "xl/", PPTX: "ppt/"}
# Markup a browser would render as a page (the WHATWG sniffing list, plus SVG and XML), at the start
# of the text, or a tag that runs code anywhere in the sample.
_MARKUP_START = re.compile(
    r"<(?:!doctype\s+html|html|head|body|script|iframe|object|embed|svg|style|title|meta|link|"
    r"h1|div|font|table|a|b|br|p|img|form|!--|\?xml)[\s/>]",
    re.IGNORECASE,
)
_ACTIVE_MARKUP = re.compile(r"<\s*(?:script|iframe|object|embed|html|body|svg|!doctype\s+html)[\s/>]", re.IGNORECASE)
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


class UploadTypeRefused(ValueError):
    """The upload's name or content is not a type that can be accepted; the message says why."""


def verified_upload_type(upload) -> str:
    """Return the MIME type that both the upload's extension and its leading bytes show.

    Raise UploadTypeRefused when the extension is unknown or the content does not match it.
    The file is left at position 0.
    """
    name = (getattr(upload, "name", "") or "").rsplit("/", 1)[-1]
    extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    content_type = TYPE_BY_EXTENSION.get(extension)
    if content_type is None:
        # The guess only names the refused kind in the message; it decides nothing.
        guessed = mimetypes.guess_type(name)[0] if extension else None
        if guessed:
            raise UploadTypeRefused(f"Files of type {guessed} are not accepted.")
        shown = f"“.{extension}” files" if extension else "Files without an extension (like .pdf)"
        raise UploadTypeRefused(f"{shown} are not accepted.")
    try:
        upload.seek(0)
        sample = upload.read(TEXT_SAMPLE_BYTES)
        matches = CONTENT_CHECKS[content_type](upload, sample, complete=len(sample) < TEXT_SAMPLE_BYTES)
    finally:
        upload.seek(0)
    if not matches:
        raise UploadTypeRefused(
            f"{name} is not a real {TYPE_LABELS[content_type]}: its content does not match its .{extension} extension."
        )
    return content_type


def _starts_with(*signatures: bytes) -> Callable[..., bool]:
    return lambda upload, sample, complete: sample.startswith(signatures)


def _is_webp(upload, sample: bytes, complete: bool) -> bool:
    return sample[:4] == b"RIFF" and sample[8:12] == b"WEBP"


def _is_ooxml(content_type: str) -> Callable[..., bool]:
    def check(upload, sample: bytes, complete: bool) -> bool:
        if not sample.startswith(b"PK\x03\x04"):
            return False
        # Only the central directory is read, not the members, so a zip bomb costs nothing here.
        try:
            with zipfile.ZipFile(upload) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            return False
        main = OOXML_MAIN_PART[content_type]
        return "[Content_Types].xml" in names and any(n.startswith(main) for n in names)

    return check


def _is_plain_text(upload, sample: bytes, complete: bool) -> bool:
    text = _decoded(sample, complete=complete)
    if text is None or _CONTROL_CHARS.search(text):
        return False
    head = text.lstrip("\ufeff \t\r\n\f")
    if head.startswith("#!") or _MARKUP_START.match(head) or _ACTIVE_MARKUP.search(text):
        return False
    return True


def _decoded(sample: bytes, *, complete: bool) -> str | None:
    """Return the sample as text (UTF-8, UTF-16 with a BOM, or Windows-1252 as Excel saves CSV), or None."""
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encodings = ["utf-16"]
    else:
        encodings = ["utf-8-sig", "cp1252"]
    for encoding in encodings:
        # Incremental, so a character cut in two by the end of the sample is not a decoding error.
        decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
        try:
            return decoder.decode(sample, final=complete)
        except UnicodeDecodeError:
            continue
    return None


CONTENT_CHECKS: dict[str, Callable[..., bool]] = {
    PDF: _starts_with(b"%PDF-"),
    PNG: _starts_with(b"\x89PNG\r\n\x1a\n"),
    JPEG: _starts_with(b"\xff\xd8\xff"),
    GIF: _starts_with(b"GIF87a", b"GIF89a"),
    WEBP: _is_webp,
    TEXT: _is_plain_text,
    CSV: _is_plain_text,
    DOC: _starts_with(OLE_SIGNATURE),
    XLS: _starts_with(OLE_SIGNATURE),
    PPT: _starts_with(OLE_SIGNATURE),
    DOCX: _is_ooxml(DOCX),
    XLSX: _is_ooxml(XLSX),
    PPTX: _is_ooxml(PPTX),
}

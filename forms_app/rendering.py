"""Turn field definitions into what the public field template needs (ids, types, aria links)."""

from __future__ import annotations

from typing import Any

from forms_app.models import FieldType
from forms_app.services import answer_max_chars

INPUT_TYPES = {
    FieldType.TEXT: "text",
    FieldType.EMAIL: "email",
    FieldType.PHONE: "tel",
    FieldType.NUMBER: "text",  # type=number refuses "1.250,50"; the server reads both
    FieldType.DATE: "date",
    FieldType.FILE: "file",
}
AUTOCOMPLETE = {
    "contact.name": "name", "contact.email": "email", "contact.phone": "tel", "contact.company": "organization",
    "contact.position": "organization-title", "contact.birthday": "bday", "contact.zip_code": "postal-code",
    "contact.country": "country-name", "contact.state": "address-level1", "contact.city": "address-level2",
    "contact.street": "address-line1",
}


def field_rows(
    fields: list[dict[str, Any]], values: dict[str, Any], errors: dict[str, list[str]], limits: dict[str, int]
) -> list[dict[str, Any]]:
    rows = []
    for definition in fields:
        fid = str(definition.get("id") or "")
        kind = definition.get("type")
        input_id = f"f-{fid}"
        field_errors = errors.get(fid, [])
        described = []
        if definition.get("help_text") or kind == FieldType.FILE:
            described.append(f"{input_id}-help")
        if field_errors:
            described.append(f"{input_id}-error")
        value = values.get(fid, "")
        rows.append(
            {
                "f": definition,
                "input_id": input_id,
                "input_type": INPUT_TYPES.get(kind, "text"),
                "inputmode": "decimal" if kind == FieldType.NUMBER else "",
                "autocomplete": AUTOCOMPLETE.get(definition.get("maps_to") or "", "off" if kind == FieldType.FILE else ""),
                "maxlength": answer_max_chars(definition, limits),
                "value": value if isinstance(value, str) else "",
                "selected": value if isinstance(value, list) else [value],
                "errors": field_errors,
                "describedby": " ".join(described),
                "is_choice": kind in (FieldType.SINGLE_CHOICE, FieldType.MULTIPLE_CHOICE),
            }
        )
    return rows

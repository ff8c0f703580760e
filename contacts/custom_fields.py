"""Validate custom field values by the type their definition declares."""

from __future__ import annotations

import datetime as dt
import math
import re
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from contacts.models import CustomField
from contacts.normalize import (
    InvalidEmail,
    InvalidPhone,
    control_character_problem,
    email_normalize,
    number_from_text,
    phone_to_e164,
)
from crm_hub.errors import FieldError

TRUE_WORDS = {"true", "1", "yes", "y", "on", "sim"}
FALSE_WORDS = {"false", "0", "no", "n", "off", "não", "nao"}
MAX_TEXT = 1000
MAX_LONG_TEXT = 20000
_SURROGATE = re.compile("[\ud800-\udfff]")
# What a number may look like, said by every refusal (the rule is number_from_text's docstring).
NUMBER_SHAPES = (
    "e.g. 5000, 5,000.50 or 0.75 (commas group thousands by three; a lone decimal comma as in 12,5 is read too)"
)


class BadValue(ValueError):
    def __init__(self, message: str, *, code: str = "invalid_value", allowed: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.allowed = allowed


def _choice(definition: CustomField, value: Any) -> str:
    # Only a list is read: a malformed definition (e.g. a bare string saved before choices were
    # validated) must not turn into one choice per character.
    choices = definition.choices if isinstance(definition.choices, list) else []
    allowed = [str(c) for c in choices if str(c).strip()]
    text = str(value).strip()
    for choice in allowed:
        if choice.casefold() == text.casefold():
            return choice
    raise BadValue(f"{text!r} is not one of the allowed choices.", allowed=allowed)


def _number(value: Any, message: str) -> Decimal:
    """Read a number or decimal field's value with number_from_text, the one rule for both types."""
    try:
        return number_from_text(str(value))
    except ValueError:  # InvalidNumber, or an int too long to turn into text
        raise BadValue(message) from None


def clean_value(definition: CustomField, value: Any) -> Any:
    """Return the JSON-storable value for ``definition`` or raise BadValue. None/"" clears."""
    if value is None or (isinstance(value, str) and value.strip() == "") or value == []:
        return None
    strings = value if isinstance(value, (list, tuple)) else [value]
    # isascii() is O(1): the regex only runs on text that could hold a surrogate (imports call this per cell).
    if any(isinstance(item, str) and ("\x00" in item or (not item.isascii() and _SURROGATE.search(item))) for item in strings):
        # As for the standard fields: PostgreSQL's jsonb cannot hold NUL, nor text lone surrogates.
        raise BadValue("Null characters and lone surrogates are not allowed.")
    for item in strings:
        # Every type, not text alone: a URL or a choice holding ESC is as garbled in an export.
        if isinstance(item, str) and (problem := control_character_problem(item)):
            raise BadValue(problem)
    kind = definition.type
    T = CustomField.Type
    if kind in (T.TEXT, T.LONG_TEXT):
        if isinstance(value, (dict, list)):
            raise BadValue("Expected text.")
        text = str(value).strip()
        limit = MAX_TEXT if kind == T.TEXT else MAX_LONG_TEXT
        if len(text) > limit:
            raise BadValue(f"At most {limit} characters.")
        return text
    if kind == T.NUMBER:
        if isinstance(value, bool):
            raise BadValue("Expected a number.")
        if isinstance(value, (int, float)):
            number = value
        else:
            number = _number(value, f"Expected a number, {NUMBER_SHAPES}.")
            if not number.is_finite():  # NaN, sNaN, Infinity: float() of sNaN would raise
                raise BadValue("Expected a finite number.")
        try:
            as_float = float(number)
        except OverflowError:  # an integer too large for a float (e.g. 401 digits)
            raise BadValue("Expected a finite number.") from None
        if not math.isfinite(as_float):
            raise BadValue("Expected a finite number.")
        if isinstance(value, (int, float)):
            return int(value) if isinstance(value, int) else value
        return int(number) if number == number.to_integral_value() else as_float
    if kind == T.DECIMAL:
        if isinstance(value, bool):
            raise BadValue("Expected a decimal number.")
        if isinstance(value, (dict, list)):
            raise BadValue("Expected a decimal number, e.g. 1250.00.")
        number = _number(value, f"Expected a decimal number, {NUMBER_SHAPES}.")
        # Sorting and filtering read the value as a double: it must fit one (no 1E+400), and a
        # non-zero value must not vanish to 0 (1E-400, which PostgreSQL refuses to cast).
        if not number.is_finite() or not math.isfinite(float(number)):
            raise BadValue("Expected a finite decimal number.")
        if number != 0 and float(number) == 0:
            raise BadValue("Expected a decimal number, e.g. 1250.00; this one is too close to zero.")
        return format(number, "f")  # positional: "1e3" is stored as 1000, not "1E+3"
    if kind == T.BOOLEAN:
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise BadValue("Expected true or false.", allowed=["true", "false"])
    if kind == T.DATE:
        if isinstance(value, dt.datetime):
            return value.date().isoformat()
        if isinstance(value, dt.date):
            return value.isoformat()
        try:
            parsed = parse_date(value.strip()) if isinstance(value, str) else None
        except ValueError:  # well formed but no such day: 2027-02-30, 2027-13-01, 0000-01-01
            parsed = None
        if parsed is None:
            raise BadValue("Expected a date as YYYY-MM-DD.")
        return parsed.isoformat()
    if kind == T.DATETIME:
        parsed = value if isinstance(value, dt.datetime) else None
        if parsed is None and isinstance(value, str):
            try:
                parsed = parse_datetime(value.strip())
            except ValueError:
                parsed = None
        if parsed is None:
            raise BadValue("Expected a date and time in ISO 8601, e.g. 2026-05-01T14:30:00Z.")
        if timezone.is_naive(parsed):
            parsed = timezone.make_aware(parsed)
        return parsed.isoformat()
    if kind == T.SINGLE_CHOICE:
        return _choice(definition, value)
    if kind == T.MULTIPLE_CHOICE:
        if isinstance(value, (list, tuple)):
            items = value
        else:
            # "Golf, Tennis" or "Golf; Tennis" (as tags are written), unless the whole text is one choice.
            text = str(value)
            choices = definition.choices if isinstance(definition.choices, list) else []
            whole = [c for c in choices if str(c).casefold() == text.strip().casefold()]
            items = [text] if whole else re.split(r"[,;]", text)
        cleaned = []
        for item in items:
            if str(item).strip():
                choice = _choice(definition, item)
                if choice not in cleaned:
                    cleaned.append(choice)
        return cleaned or None
    if kind == T.EMAIL:
        try:
            return email_normalize(str(value))
        except InvalidEmail:
            raise BadValue("Expected a valid email address.", code="invalid_email") from None
    if kind == T.PHONE:
        try:
            return phone_to_e164(str(value))
        except InvalidPhone:
            raise BadValue("Expected a valid phone number.", code="invalid_phone") from None
    if kind == T.URL:
        text = str(value).strip()
        try:
            URLValidator(schemes=["http", "https"])(text)
        except ValidationError:
            raise BadValue("Expected an http(s) URL.") from None
        return text
    raise BadValue(f"Unsupported field type {kind!r}.")


def clean_custom_values(
    values: dict[str, Any] | None,
    *,
    definitions: dict[str, CustomField],
    agent_write: bool,
    prefix: str = "custom",
) -> tuple[dict[str, Any], list[FieldError]]:
    """Validate a ``{key: value}`` mapping; return the cleaned values and every error found."""
    cleaned: dict[str, Any] = {}
    errors: list[FieldError] = []
    if values is None:
        return cleaned, errors
    if not isinstance(values, dict):
        return cleaned, [FieldError(prefix, "invalid_value", "Expected an object keyed by custom field key.")]
    writable = sorted(k for k, d in definitions.items() if d.allow_for_ai or not agent_write)
    for key, value in values.items():
        path = f"{prefix}.{key}"
        definition = definitions.get(key)
        if definition is None and value in (None, "", []):
            cleaned[key] = None  # clearing a value whose field was deleted is always allowed
            continue
        if definition is None:
            errors.append(FieldError(path, "unknown_field", f"There is no custom field {key!r}.", writable))
            continue
        if agent_write and not definition.allow_for_ai:
            errors.append(
                FieldError(
                    path,
                    "field_not_allowed_for_ai",
                    f"Custom field {key!r} is not open to agents (Allow for AI is off).",
                    writable,
                )
            )
            continue
        try:
            cleaned[key] = clean_value(definition, value)
        except BadValue as exc:
            errors.append(FieldError(path, exc.code, exc.message, exc.allowed))
    return cleaned, errors


def is_blank(value: Any) -> bool:
    """Whether a stored custom value says nothing: missing, empty text or an empty list (False is an answer)."""
    return value is None or (isinstance(value, str) and not value.strip()) or value == []


def missing_required(values: Any, definitions: list[CustomField]) -> list[CustomField]:
    """The definitions marked required that ``values`` (a contact's custom JSON) leaves blank."""
    values = values if isinstance(values, dict) else {}
    return [d for d in definitions if d.required and is_blank(values.get(d.key))]

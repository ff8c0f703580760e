"""One helper per normalization: services, imports, forms, filters and search all call these."""

from __future__ import annotations

from dataclasses import dataclass

import phonenumbers
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

# phonenumbers compiles its metadata patterns through re.compile on every use, so each match
# pays a lookup in the re module's cache (and a recompile once numbers from many regions have
# pushed a pattern out of it). Its own pattern cache keeps them compiled: a tenth of a parse.
if hasattr(phonenumbers, "enable_pattern_cache"):  # phonenumbers 9+
    phonenumbers.enable_pattern_cache()


class InvalidPhone(ValueError):
    pass


class InvalidEmail(ValueError):
    pass


@dataclass(frozen=True)
class NormalizedPhone:
    e164: str  # the dedup key: +15615550192
    extension: str  # kept apart so "ext. 12" never splits one person into two

    def display(self) -> str:
        return format_phone(self.e164, self.extension)


def default_region() -> str:
    return settings.CRM_DEFAULT_PHONE_REGION


def parse_phone(raw: str, *, region: str | None = None) -> NormalizedPhone:
    """Parse a phone in any national or international format; raise InvalidPhone if it is not a real number."""
    text = (raw or "").strip()
    if not text:
        raise InvalidPhone("empty")
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, region or default_region())
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhone(str(exc)) from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhone("not a valid number")
    return NormalizedPhone(
        e164=phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        extension=number.extension or "",
    )


def phone_to_e164(raw: str, *, region: str | None = None) -> str:
    """Return the E.164 form of ``raw`` or raise InvalidPhone."""
    return parse_phone(raw, region=region).e164


def phone_to_e164_or_none(raw: str, *, region: str | None = None) -> str | None:
    """Return the E.164 form of ``raw``, or None when it is not a phone (for search boxes)."""
    try:
        return phone_to_e164(raw, region=region)
    except InvalidPhone:
        return None


def format_phone(e164: str, extension: str = "") -> str:
    if not e164:
        return ""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    region = default_region()
    fmt = (
        phonenumbers.PhoneNumberFormat.NATIONAL
        if phonenumbers.region_code_for_number(number) == region
        else phonenumbers.PhoneNumberFormat.INTERNATIONAL
    )
    text = phonenumbers.format_number(number, fmt)
    return f"{text} ext. {extension}" if extension else text


def email_normalize(raw: str) -> str:
    """Return the dedup key of an email (trimmed, lower-cased) or raise InvalidEmail."""
    text = (raw or "").strip()
    if text.lower().startswith("mailto:"):
        text = text[7:]
    text = text.lower()
    if not text:
        raise InvalidEmail("empty")
    try:
        validate_email(text)
    except ValidationError as exc:
        raise InvalidEmail("not a valid email address") from exc
    local, _, domain = text.rpartition("@")
    return f"{local}@{unicode_domain(domain)}"


def unicode_domain(domain: str) -> str:
    """``xn--mail-9oa.com`` -> ``émail.com``: both spellings of an address are one dedup key.

    The Unicode form rather than the ASCII one, so addresses people typed in
    Unicode keep reading as they typed them.
    """
    if "xn--" not in domain:
        return domain
    try:
        return domain.encode("ascii").decode("idna").lower()
    except (UnicodeError, ValueError):
        return domain


def email_normalize_or_none(raw: str) -> str | None:
    try:
        return email_normalize(raw)
    except InvalidEmail:
        return None

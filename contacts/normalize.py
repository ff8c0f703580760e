"""One helper per normalization: services, imports, forms, filters and search all call these."""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import idna
import phonenumbers
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

# phonenumbers compiles its metadata patterns through re.compile on every use, so each match
# pays a lookup in the re module's cache (and a recompile once numbers from many regions have
# pushed a pattern out of it). Its own pattern cache keeps them compiled: a tenth of a parse.
if hasattr(phonenumbers, "enable_pattern_cache"):  # phonenumbers 9+
    phonenumbers.enable_pattern_cache()

# Contact.phone_extension's max_length: contacts.models imports this module, so it cannot be read
# from the field here (tests check the two agree).
MAX_EXTENSION = 12


class InvalidPhone(ValueError):
    pass


class ExtensionTooLong(InvalidPhone):
    """A real number whose extension would not fit Contact.phone_extension (the message says the limit)."""


class InvalidEmail(ValueError):
    pass


class InvalidNumber(ValueError):
    pass


@dataclass(frozen=True)
class NormalizedPhone:
    e164: str  # the dedup key: +15615550192
    extension: str  # kept apart so "ext. 12" never splits one person into two

    def display(self) -> str:
        return format_phone(self.e164, self.extension)


def default_region() -> str:
    return settings.CRM_DEFAULT_PHONE_REGION


def ascii_digits(text: str) -> str:
    """``００44`` -> ``0044``: every Unicode decimal digit (full-width, Arabic-Indic, ...) as its ASCII one."""
    if text.isascii():
        return text
    return "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c for c in text)


def parse_phone(raw: str, *, region: str | None = None) -> NormalizedPhone:
    """Parse a phone in any national or international format; raise InvalidPhone if it is not a real number.

    Digits are read the same whatever script they are typed in, so ``００44 …`` is ``0044 …``;
    a leading ``00`` is the international prefix. Mexican mobiles written with the old ``1``
    after ``+52`` (as WhatsApp still sends them) key to the same E.164 as without it. An
    extension longer than MAX_EXTENSION digits is refused (ExtensionTooLong, an InvalidPhone),
    not cut.
    """
    text = ascii_digits((raw or "").strip())
    if not text:
        raise InvalidPhone("empty")
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, region or default_region())
    except phonenumbers.NumberParseException as exc:
        number = _with_long_x_extension(text, region)
        if number is None:
            raise InvalidPhone(str(exc)) from exc
    # Validity is a third of a parse's cost: the common valid number is checked once.
    if not phonenumbers.is_valid_number(number):
        retry = _with_long_x_extension(text, region)
        if retry is None or not phonenumbers.is_valid_number(retry):
            fixed = _without_mexican_mobile_one(retry or number)
            if fixed is None:
                raise InvalidPhone("not a valid number")
            retry = fixed
        number = retry
    extension = number.extension or ""
    if len(extension) > MAX_EXTENSION:
        raise ExtensionTooLong(f"the extension has at most {MAX_EXTENSION} digits")
    return NormalizedPhone(
        e164=phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        extension=extension,
    )


_X_EXTENSION = re.compile(r"^(.*\d)\s*[xX]\s*(\d{10,})\s*$")


def _with_long_x_extension(text: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    """Read "... x1234567890" as an extension, as "... ext. 1234567890" is read.

    phonenumbers takes at most 9 digits after a bare "x" and otherwise reads them into the
    number, so a 10-12 digit extension was "not a valid number" only when written with "x".
    Tried only after a failed parse: the common case pays nothing.
    """
    match = _X_EXTENSION.match(text)
    if match is None:
        return None
    try:
        return phonenumbers.parse(f"{match.group(1)} ext. {match.group(2)}", region or default_region())
    except phonenumbers.NumberParseException:
        return None


def _without_mexican_mobile_one(
    number: phonenumbers.PhoneNumber,
) -> phonenumbers.PhoneNumber | None:
    """``+52 1 55 1234 5678`` -> ``+52 55 1234 5678``, or None when that is not a valid Mexican number.

    Mexico dropped the ``1`` that marked a mobile dialled from abroad in 2019; phonenumbers
    now refuses it, but WhatsApp and old address books still write it.
    """
    national = str(number.national_number)
    if number.country_code != 52 or len(national) != 11 or not national.startswith("1"):
        return None
    candidate = phonenumbers.PhoneNumber(
        country_code=52, national_number=int(national[1:]), extension=number.extension
    )
    return candidate if phonenumbers.is_valid_number(candidate) else None


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


# Format characters (category Cf) that are drawn, so never stripped as invisible: the Arabic and
# Syriac number signs and their kin (Unicode's Prepended_Concatenation_Mark).
_VISIBLE_FORMAT = frozenset(
    "\u0600\u0601\u0602\u0603\u0604\u0605\u06dd\u070f\u0890\u0891\u08e2\U000110bd\U000110cd"
)
# Zero-width (non-)joiners are part of some IDNA2008 domain labels (Persian, Indic scripts).
_JOINERS = frozenset("\u200c\u200d")
# The four full stops IDNA reads as the dot between labels.
_LABEL_DOTS = re.compile("[.\u3002\uff0e\uff61]")


def _without_invisible(text: str, *, keep_joiners: bool = False) -> str:
    """``text`` without zero-width spaces, soft hyphens, bidi marks and other invisible Cf characters."""
    if text.isascii():
        return text
    return "".join(
        c
        for c in text
        if unicodedata.category(c) != "Cf"
        or c in _VISIBLE_FORMAT
        or (keep_joiners and c in _JOINERS)
    )


# Titles before a name: no part of it ("Dr. Jane Doe" is Jane Doe), for the extractor and name comparison.
HONORIFICS = frozenset("mr mrs ms miss mx dr prof sir dame sr sra srta dona don".split())


# Control characters no one types (BEL, ESC of a terminal colour code, C1 controls) and the explicit
# direction embeddings, overrides and isolates used to disguise text ("\u202eexe.pdf", Trojan Source).
# Tabs and line breaks are whitespace; the plain marks (U+200E, U+200F) stay.
_CONTROL = re.compile("[\x01-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u202a-\u202e\u2066-\u2069]")


def control_character_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored as it is (it holds a control character), or None."""
    found = None if text.isprintable() else _CONTROL.search(text)
    if found is None:
        return None
    return f"Holds the control character U+{ord(found.group(0)):04X}, which shows as nothing or garbles text; remove it."


def visible_text(text: str) -> str:
    """``text`` without invisible format characters (zero-width space, soft hyphen, BOM), joiners kept.

    A name pasted from a web page carried a zero-width space: it looked like "Ann Lee" and matched nothing.
    """
    return text if text.isascii() else _without_invisible(text, keep_joiners=True)


def is_blank(text: str) -> bool:
    """Whether ``text`` shows nothing: only whitespace and invisible format characters (a lone zero-width space)."""
    return not _without_invisible(text).strip()


def email_normalize(raw: str) -> str:
    """Return the dedup key of an email or raise InvalidEmail.

    One key per address however it was typed: trimmed; invisible format characters (zero-width
    space, soft hyphen, bidi marks, BOM: Unicode Cf) dropped; the local part lower-cased and
    otherwise kept (``a+b@`` stays apart from ``a@``); the domain in its Unicode form after
    IDNA's UTS #46 mapping (see ``unicode_domain``). The key must then be a valid address.
    """
    text = (raw or "").strip()
    if not text.isascii():
        text = _without_invisible(text, keep_joiners=True).strip()
    if text[:7].lower() == "mailto:":
        text = text[7:]
    if not text:
        raise InvalidEmail("empty")
    local, at, domain = text.rpartition("@")
    if not at:
        raise InvalidEmail("not a valid email address")
    key = f"{_without_invisible(local).lower()}@{unicode_domain(domain)}"
    if not _valid_email(key):
        raise InvalidEmail("not a valid email address")
    return key


def _valid_email(address: str) -> bool:
    """Django's validate_email, with the domain's verdict remembered.

    Most of a list's addresses share a few domains, and the domain pattern is
    half of the check's cost (an import checks a million addresses).
    """
    if len(address) > 320 or "@" not in address:  # validate_email's own first check
        return False
    user, domain = address.rsplit("@", 1)
    if not (user and domain):
        return _django_accepts(address)
    return bool(validate_email.user_regex.match(user)) and _valid_email_domain(domain)


@functools.lru_cache(maxsize=4096)
def _valid_email_domain(domain: str) -> bool:
    return _django_accepts(f"a@{domain}")


def _django_accepts(address: str) -> bool:
    try:
        validate_email(address)
    except ValidationError:
        return False
    return True


def unicode_domain(domain: str) -> str:
    """``xn--mail-9oa.com``, ``e\\u0301mail.com``, ``ÉMAIL.com`` -> ``émail.com``: one spelling per domain.

    The Unicode form rather than the ASCII one, so addresses people typed in Unicode keep
    reading as they typed them. Each label goes through UTS #46 (what browsers do: NFC, case
    folding, full-width letters to ASCII, ignorable characters dropped) and IDNA2008, so
    ``straße.de`` and ``xn--strae-oqa.de`` are one domain (Python's own idna codec is IDNA2003,
    which reads ß as ss). A label IDNA2008 has no reading of (a symbol such as ♥, a stray
    joiner) is read as IDNA2003 reads it; one neither can read is only lower-cased.
    """
    if domain.isascii() and "xn--" not in domain.lower():
        return domain.lower()
    return ".".join(_unicode_label(label) for label in _LABEL_DOTS.split(domain))


def _unicode_label(label: str) -> str:
    if label.isascii() and not label.lower().startswith("xn--"):
        return label.lower()
    label = _without_invisible(label, keep_joiners=True)
    if not label:
        return label
    try:
        return idna.decode(idna.encode(label, uts46=True, std3_rules=True))
    except (idna.IDNAError, UnicodeError):
        pass
    try:
        return label.encode("idna").decode("idna").lower()
    except UnicodeError:
        return label.lower()


def email_normalize_or_none(raw: str) -> str | None:
    try:
        return email_normalize(raw)
    except InvalidEmail:
        return None


_THOUSANDS = re.compile(r"[+-]?[1-9][0-9]{0,2}(?:,[0-9]{3})+(?:\.[0-9]+)?")
_DECIMAL_COMMA = re.compile(r"([+-]?[0-9]+),([0-9]+)")


def number_from_text(raw: str) -> Decimal:
    """Read a number as a person wrote it; raise InvalidNumber rather than guess.

    The dot is the decimal point and a comma groups thousands, as in the US (the default
    region): ``5,000`` is 5000 and ``1,234,567.89`` is 1234567.89, groups of exactly three
    digits after the first, which has one to three and does not start with 0. A single comma
    is a decimal comma only where it cannot be a thousands separator: ``12,5`` is 12.5, ``3,75``
    is 3.75, ``0,125`` is 0.125. Anything else with a comma is refused, because no reading of it
    is safe: ``1,00,0``, ``1234,567`` (a thousands separator misplaced, or a decimal comma?),
    ``1.000,5`` (the European form: the dot would be read as a decimal point). Without a comma
    the text is read as Python's Decimal reads it (``5000``, ``-0.75``, ``1e3``). Digits in any
    script count as their ASCII ones.
    """
    text = ascii_digits((raw or "").strip())
    if "_" in text:
        # Python's Decimal reads "1_000" as 1000; a person meant something else, or a typo.
        raise InvalidNumber("not a number")
    if "," in text:
        if _THOUSANDS.fullmatch(text):
            text = text.replace(",", "")
        elif (match := _DECIMAL_COMMA.fullmatch(text)) and (
            len(match[2]) != 3 or not match[1].strip("+-0")
        ):
            text = f"{match[1]}.{match[2]}"
        else:
            raise InvalidNumber("a comma must separate thousands in groups of three, e.g. 5,000.50")
    try:
        return Decimal(text)
    except (InvalidOperation, ValueError):
        raise InvalidNumber("not a number") from None

"""Match file columns to contact fields, custom fields and tags; remember the mapping per header set."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata

from contacts.models import CustomField, ImportMapping
from contacts.services import STANDARD_FIELDS
from crm_hub.errors import FieldError, InputRejected

IGNORE = ""
TAGS = "tags"
FIRST_NAME = "first_name"
LAST_NAME = "last_name"
ERROR_COLUMN = "error"  # added by the engine to the file of failed rows
# "error", or "error (2)" as unique_headers renames a second one (error files of error files used to add one).
_ERROR_HEADER = re.compile(r"error(?: \(\d+\))?")

# Header spellings seen in exports of other CRMs and spreadsheets, normalized by _norm().
SYNONYMS: dict[str, tuple[str, ...]] = {
    "name": ("name", "fullname", "contactname", "contact", "nome", "nomecompleto"),
    FIRST_NAME: ("firstname", "givenname", "forename"),
    LAST_NAME: ("lastname", "surname", "familyname"),
    "phone": ("phone", "phonenumber", "mobile", "mobilephone", "mobilenumber", "cell", "cellphone",
              "telephone", "tel", "whatsapp", "telefone", "celular"),
    "email": ("email", "emailaddress", "mail", "emailaddr"),
    "company": ("company", "companyname", "organization", "organisation", "account", "accountname", "empresa"),
    "position": ("position", "title", "jobtitle", "role", "cargo"),
    "identity": ("identity", "taxid", "idnumber", "document", "cpf", "ssn"),
    "birthday": ("birthday", "birthdate", "dateofbirth", "dob"),
    "zip_code": ("zip", "zipcode", "postalcode", "postcode", "cep"),
    "country": ("country", "pais"),
    "state": ("state", "province", "region", "estado"),
    "city": ("city", "town", "cidade"),
    "district": ("district", "neighborhood", "neighbourhood", "bairro"),
    "street": ("street", "address", "addressline1", "streetaddress", "rua", "logradouro"),
    "number": ("number", "streetnumber", "housenumber", "numero"),
    "complement": ("complement", "addressline2", "apt", "suite", "complemento"),
    TAGS: ("tags", "tag", "labels", "label"),
}
# Synonyms that often name something else: "Title" is Mr./Ms. in Outlook's export (beside "Job
# Title"), "Contact" may be a phone. They map only when no better-named column claims the field.
LOOSE_SYNONYMS = frozenset({"title", "role", "contact", "account", "mail", "label", "region", "address"})


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFKD", text or "").encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]", "", text.lower())


def data_headers(headers: list[str]) -> list[str]:
    """Return the headers without the "error" column that the error file adds after the last one.

    The error file is meant to be fixed and imported again with the same
    mapping, so that column must not change which mapping the headers get.
    Error files of error files once got a second one ("error (2)" once read):
    every trailing error column goes.
    """
    end = len(headers)
    while end > 1 and _ERROR_HEADER.fullmatch(headers[end - 1].strip().casefold()):
        end -= 1
    return headers[:end]


def header_key(headers: list[str]) -> str:
    """Return the key of a header set: the same headers in any order share it."""
    return hashlib.sha256(json.dumps(sorted(_norm(h) for h in data_headers(headers))).encode()).hexdigest()


def _ordered_header_key(headers: list[str]) -> str:
    # The key mappings were remembered under before it ignored column order; still read.
    return hashlib.sha256(json.dumps([_norm(h) for h in data_headers(headers)]).encode()).hexdigest()


def _remembered_mapping(headers: list[str]) -> dict[str, str] | None:
    keys = [header_key(headers), _ordered_header_key(headers)]
    found = {m.header_key: m for m in ImportMapping.objects.filter(header_key__in=keys)}
    remembered = found.get(keys[0]) or found.get(keys[1])
    if remembered is None:
        return None
    # Looked up by normalized header too: the key treats "E-mail" and "Email" as one header.
    by_norm = {_norm(h): target for h, target in remembered.mapping.items()}
    return {h: remembered.mapping.get(h, by_norm.get(_norm(h), IGNORE)) for h in headers}


def target_choices(definitions: list[CustomField] | None = None) -> list[tuple[str, str]]:
    """Return (value, label) for every column target: fields, first/last name, custom fields, tags."""
    definitions = definitions if definitions is not None else list(CustomField.objects.all())
    choices = [(IGNORE, "— ignore this column —")]
    choices += [(f, f.replace("_", " ").capitalize()) for f in STANDARD_FIELDS]
    choices += [(FIRST_NAME, "First name (joined into name)"), (LAST_NAME, "Last name (joined into name)")]
    choices += [(f"custom.{d.key}", f"Custom: {d.label}") for d in definitions]
    choices.append((TAGS, "Tags (comma-separated)"))
    return choices


def auto_mapping(headers: list[str], *, definitions: list[CustomField] | None = None) -> dict[str, str]:
    """Return {header: target}: the remembered mapping for these headers, else obvious matches."""
    remembered = _remembered_mapping(headers)
    if remembered is not None:
        return remembered
    definitions = definitions if definitions is not None else list(CustomField.objects.all())
    lookup: dict[str, str] = {}
    for target, words in SYNONYMS.items():
        for word in words:
            lookup.setdefault(word, target)
    loose = {word: lookup[word] for word in LOOSE_SYNONYMS}
    # A standard field's own name ("Phone", "E-mail", "Zip code", "Tags") is always that field, even
    # beside a custom field keyed or labelled "phone" (saved before such keys were refused)...
    standard = {_norm(target): target for target in (*STANDARD_FIELDS, FIRST_NAME, LAST_NAME, TAGS)}
    # ...custom keys and labels win over loose synonyms ("Region" may be a custom field), a key over
    # a label, and a lower-case key over one differing only in case (saved before keys were unique
    # without case); a header spelled exactly as a key, or as our export's custom.<key>, is that key.
    for definition in definitions:
        lookup[_norm(definition.label)] = f"custom.{definition.key}"
    for definition in sorted(definitions, key=lambda d: d.key == d.key.lower()):
        lookup[_norm(definition.key)] = f"custom.{definition.key}"
    exact: dict[str, str] = {}
    for definition in definitions:
        lookup[_norm(f"custom.{definition.key}")] = exact[f"custom.{definition.key}"] = f"custom.{definition.key}"
        if _norm(definition.key) not in standard:
            exact[definition.key] = f"custom.{definition.key}"
    lookup.update(standard)
    mapping = dict.fromkeys(headers, IGNORE)
    # Two columns for one field: the better-named one wins ("Job Title" over a loose "Title"), then
    # the first one (two "Phone" columns); the user can change it.
    claims = []
    for order, header in enumerate(data_headers(headers)):
        target = exact.get(header.strip()) or lookup.get(_norm(header), IGNORE)
        if target:
            claims.append((loose.get(_norm(header)) == target, order, header, target))
    used: set[str] = set()
    for _loose, _order, header, target in sorted(claims):
        if target not in used:
            used.add(target)
            mapping[header] = target
    return mapping


def validate_mapping(mapping: dict[str, str], headers: list[str]) -> list[str]:
    """Return the target list aligned with ``headers``; raise InputRejected for unknown or repeated targets."""
    allowed = {value for value, _label in target_choices()}
    errors: list[FieldError] = []
    targets: list[str] = []
    seen: set[str] = set()
    for header in headers:
        target = mapping.get(header, IGNORE) or IGNORE
        if not isinstance(target, str) or target not in allowed:
            errors.append(FieldError(f"mapping.{header}", "invalid_value", f"Unknown target {target!r}.", sorted(allowed - {IGNORE})))
        elif target and target in seen:
            errors.append(FieldError(f"mapping.{header}", "invalid_value", f"{target!r} is mapped from two columns."))
        seen.add(target)
        targets.append(target)
    unknown = set(mapping) - set(headers)
    for header in sorted(unknown):
        errors.append(FieldError(f"mapping.{header}", "unknown_field", f"The file has no column {header!r}.", headers))
    if not any(t in ("name", "phone", "email", FIRST_NAME, LAST_NAME) for t in targets) and not errors:
        errors.append(FieldError("mapping", "required", "Map at least a name, phone or email column."))
    if errors:
        raise InputRejected(errors)
    return targets


def remember_mapping(headers: list[str], mapping: dict[str, str]) -> None:
    """Store the confirmed mapping so the next file with the same headers (in any order) gets it pre-filled."""
    ImportMapping.objects.update_or_create(
        header_key=header_key(headers), defaults={"headers": headers, "mapping": mapping}
    )

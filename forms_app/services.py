"""Every write of the forms app: building and publishing forms, and turning a submission into a contact.

A submission goes through the contacts write path (``upsert_contact``, ``add_tags``,
``move_to_stage``, ``assign_owner``, ``add_file``) as a system actor named after the
form, so dedup, normalization, custom-field validation and the "no silent
overwrite" rule behave exactly as for agents and imports.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import transaction
from django.db.models import F
from django.utils.dateparse import parse_date
from django.utils.text import slugify

from automations import payloads
from automations.services import run_rules
from automations.webhooks import emit_event
from contacts import services as contact_services
from contacts.custom_fields import BadValue, clean_value
from contacts.models import Contact, CustomField, HistoryEntry, Source, Stage, Tag
from contacts.normalize import (
    ExtensionTooLong,
    InvalidEmail,
    InvalidNumber,
    InvalidPhone,
    control_character_problem,
    email_normalize,
    number_from_text,
    parse_phone,
)
from contacts.uploads import UploadTypeRefused, verified_upload_type
from crm_hub.actors import Actor
from crm_hub.errors import FieldError, InputRejected
from forms_app.models import FieldType, Form, FormVersion, Submission

# Contact fields a form may fill. Identity (tax id) is left out: public pages should not collect it.
CONTACT_TARGETS: tuple[tuple[str, str], ...] = (
    ("name", "Name"), ("email", "Email"), ("phone", "Phone"), ("company", "Company"), ("position", "Position"),
    ("birthday", "Birthday"), ("zip_code", "ZIP code"), ("country", "Country"), ("state", "State"),
    ("city", "City"), ("district", "District"), ("street", "Street"), ("number", "Number"),
    ("complement", "Complement"),
)
FILES_TARGET = "contact.files"
CHOICE_TYPES = {FieldType.SINGLE_CHOICE, FieldType.MULTIPLE_CHOICE}
FIELD_ID_RE = re.compile(r"^[a-z][a-z0-9_]{1,39}$")
# Names the public page itself posts; a field id may not shadow them.
RESERVED_NAMES = frozenset({"website", "form_token", "csrfmiddlewaretoken", "embed"})
MAX_FIELDS = 50
MAX_CHOICES = 50
DEFAULT_SUCCESS_MESSAGE = "Thank you! We received your details and will be in touch soon."


# --- Settings read at call time ---------------------------------------------------------


def limits() -> dict[str, int]:
    return {
        "text": settings.FORMS_MAX_TEXT_CHARS,
        "long_text": settings.FORMS_MAX_LONG_TEXT_CHARS,
        "file": settings.FORMS_MAX_FILE_BYTES,
    }


def max_request_bytes(definitions: list[dict[str, Any]]) -> int:
    """Return the largest POST body a valid submission to these fields can have (files plus generous text)."""
    files = sum(1 for d in definitions if d.get("type") == FieldType.FILE)
    return files * settings.FORMS_MAX_FILE_BYTES + settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 64 * 1024


# --- Building forms ---------------------------------------------------------------------


def mapping_targets() -> list[dict[str, str]]:
    """Return what a field can map to: contact fields, custom fields, files, or the submission only."""
    targets = [{"value": "", "label": "Keep on the submission only", "group": ""}]
    targets += [{"value": f"contact.{key}", "label": label, "group": "Contact field"} for key, label in CONTACT_TARGETS]
    targets += [
        {"value": f"custom.{cf.key}", "label": cf.label, "group": "Custom field"}
        for cf in CustomField.objects.order_by("position", "id")
    ]
    targets.append({"value": FILES_TARGET, "label": "Contact files", "group": "Files"})
    return targets


def new_field_id() -> str:
    return "f" + secrets.token_hex(4)


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _text(value: Any, limit: int) -> str:
    # NUL and lone surrogates cannot be stored (PostgreSQL refused the form: a 500) and show as nothing.
    return _UNSTORABLE.sub("", str(value)).strip()[:limit] if isinstance(value, (str, int, float)) else ""


def clean_field_definitions(raw: Any) -> list[dict[str, Any]]:
    """Validate the builder's field list and return it normalized; raise InputRejected naming each bad part.

    Error paths are ``fields.<field id>.<part>`` so the builder shows each message
    beside the input it is about.
    """
    if not isinstance(raw, list):
        raise InputRejected([FieldError("fields", "invalid_value", "Expected a list of fields.")])
    errors: list[FieldError] = []
    if len(raw) > MAX_FIELDS:
        errors.append(FieldError("fields", "invalid_value", f"A form can have at most {MAX_FIELDS} fields."))
    custom = {cf.key: cf for cf in CustomField.objects.all()}
    contact_keys = {key for key, _ in CONTACT_TARGETS}
    cleaned: list[dict[str, Any]] = []
    seen_ids: set[str] = set()
    seen_targets: dict[str, str] = {}
    for index, item in enumerate(raw[:MAX_FIELDS]):
        if not isinstance(item, Mapping):
            errors.append(FieldError(f"fields.{index}", "invalid_value", "Expected a field object."))
            continue
        fid = str(item.get("id") or "")
        path = f"fields.{fid or index}"
        if not FIELD_ID_RE.match(fid) or fid in RESERVED_NAMES or fid in seen_ids:
            errors.append(FieldError(f"{path}.id", "invalid_value", "Each field needs its own id (lower-case letters and digits)."))
        seen_ids.add(fid)
        kind = item.get("type")
        if kind not in FieldType.values:
            errors.append(FieldError(f"{path}.type", "invalid_value", "Unknown field type.", list(FieldType.values)))
            continue
        label = _text(item.get("label"), 200)
        if not label:
            errors.append(FieldError(f"{path}.label", "required", "Give the field a label."))
        choices: list[str] = []
        if kind in CHOICE_TYPES:
            raw_choices = item.get("choices") or []
            if isinstance(raw_choices, str):
                raw_choices = raw_choices.splitlines()
            for choice in raw_choices if isinstance(raw_choices, list) else []:
                text = _text(choice, 200)
                if text and text not in choices:
                    choices.append(text)
            if not choices:
                errors.append(FieldError(f"{path}.choices", "required", "List at least one choice, one per line."))
            elif len(choices) > MAX_CHOICES:
                errors.append(FieldError(f"{path}.choices", "invalid_value", f"At most {MAX_CHOICES} choices."))
        maps_to = str(item.get("maps_to") or "")
        if kind == FieldType.FILE and not maps_to:
            maps_to = FILES_TARGET  # the one place an upload is kept
        target_error = _target_error(kind, maps_to, choices=choices, contact_keys=contact_keys, custom=custom)
        if target_error:
            errors.append(FieldError(f"{path}.maps_to", "invalid_value", target_error))
        elif maps_to and maps_to != FILES_TARGET:
            if maps_to in seen_targets:
                errors.append(
                    FieldError(f"{path}.maps_to", "invalid_value", f"Another field ({seen_targets[maps_to]}) already fills this.")
                )
            seen_targets[maps_to] = label or fid
        cleaned.append(
            {
                "id": fid,
                "type": kind,
                "label": label,
                "placeholder": _text(item.get("placeholder"), 200),
                "help_text": _text(item.get("help_text"), 500),
                "required": bool(item.get("required")),
                "choices": choices,
                "maps_to": maps_to,
            }
        )
    identifying = {"contact.name", "contact.email", "contact.phone"}
    if raw and not errors and not identifying & set(seen_targets):
        errors.append(
            FieldError("fields", "required", "Map at least one field to the contact's name, email or phone.")
        )
    if errors:
        raise InputRejected(errors)
    return cleaned


def _target_error(
    kind: str, maps_to: str, *, choices: list[str], contact_keys: set[str], custom: dict[str, CustomField]
) -> str:
    if kind == FieldType.FILE:
        return "" if maps_to == FILES_TARGET else "A file field's upload is kept in the contact's files; choose Contact files."
    if maps_to == "":
        return ""
    if maps_to == FILES_TARGET:
        return "Only file fields can go to the contact's files."
    if maps_to.startswith("contact."):
        key = maps_to.removeprefix("contact.")
        if key not in contact_keys:
            return "Unknown contact field."
        if kind in (FieldType.MULTIPLE_CHOICE, FieldType.CHECKBOX):
            return "This field type cannot fill a contact field; map it to a custom field or keep it on the submission."
        if kind == FieldType.NUMBER:
            # Read as a number, ZIP code 02134 would be stored as 2134 and house number 12A refused.
            return "A Number field cannot fill a contact field; use a Short text field."
        if key == "email" and kind != FieldType.EMAIL:
            return "Only an Email field can fill the contact's email."
        if key == "phone" and kind != FieldType.PHONE:
            return "Only a Phone field can fill the contact's phone."
        if key == "birthday" and kind != FieldType.DATE:
            return "Only a Date field can fill the birthday."
        return ""
    if maps_to.startswith("custom."):
        definition = custom.get(maps_to.removeprefix("custom."))
        if definition is None:
            return "This custom field does not exist (any more)."
        return custom_target_error(kind, choices, definition)
    return "Unknown target."


_CF = CustomField.Type
# Custom field types that take every answer a free-answer field accepts, as clean_value cleans them.
# Checkbox and choice fields are checked answer by answer instead (see custom_target_error).
CHECKBOX_NOT_TICKED = frozenset({"", "no", "off", "false", "0", "n"})
# A URL has no field type of its own, so a text field may fill one; the visitor is told if it is not a URL.
_OPEN_ANSWER_TARGETS: dict[str, frozenset[str]] = {
    FieldType.TEXT: frozenset({_CF.TEXT, _CF.LONG_TEXT, _CF.URL}),
    FieldType.LONG_TEXT: frozenset({_CF.TEXT, _CF.LONG_TEXT, _CF.URL}),
    FieldType.EMAIL: frozenset({_CF.TEXT, _CF.LONG_TEXT, _CF.EMAIL}),
    FieldType.PHONE: frozenset({_CF.TEXT, _CF.LONG_TEXT, _CF.PHONE}),
    FieldType.NUMBER: frozenset({_CF.TEXT, _CF.LONG_TEXT, _CF.NUMBER, _CF.DECIMAL}),
    FieldType.DATE: frozenset({_CF.TEXT, _CF.LONG_TEXT, _CF.DATE, _CF.DATETIME}),
}


def _fitting_field(definition: CustomField) -> str:
    """Say which builder field can fill ``definition`` (for the error message)."""
    options = ", ".join(str(c) for c in definition.choices or [])
    return {
        _CF.NUMBER: "a Number field",
        _CF.DECIMAL: "a Number field",
        _CF.BOOLEAN: "a Checkbox, or a Single choice whose options read as yes or no (Yes / No)",
        _CF.DATE: "a Date field",
        _CF.DATETIME: "a Date field",
        _CF.SINGLE_CHOICE: f"a Single choice field whose options are among: {options}",
        _CF.MULTIPLE_CHOICE: f"a Single or Multiple choice field whose options are among: {options}",
        _CF.EMAIL: "an Email field",
        _CF.PHONE: "a Phone field",
        _CF.URL: "a Text field",
    }.get(definition.type, "any field but a Multiple choice")


def _possible_answers(kind: str, choices: list[str]) -> list[Any] | None:
    """Return every answer a checkbox or choice field can send, as clean_answers stores it; None if unbounded."""
    if kind == FieldType.CHECKBOX:
        return [True, False]  # an unticked box is stored (and mapped) as False
    if kind == FieldType.SINGLE_CHOICE:
        return list(choices)
    if kind == FieldType.MULTIPLE_CHOICE:
        # Options are cleaned one by one, so each single pick standing in for every combination is enough.
        return [[choice] for choice in choices]
    return None


def custom_target_error(kind: str, choices: list[str], definition: CustomField) -> str:
    """Refuse a mapping when some answer the field accepts can never be stored in the custom field.

    The check runs the submission's own cleaning (``clean_value``), so the builder
    and the public page cannot disagree: a mapping that passes here never leaves a
    visitor with an answer the form itself offered but the contact refuses.
    """
    fits = f"“{definition.label}” is a {definition.get_type_display()} field: use {_fitting_field(definition)}."
    answers = _possible_answers(kind, choices)
    if answers is None:
        return "" if definition.type in _OPEN_ANSWER_TARGETS.get(kind, frozenset()) else fits
    if kind == FieldType.MULTIPLE_CHOICE and definition.type != _CF.MULTIPLE_CHOICE:
        # Its options may all be fine: it is that the field sends several and this one holds one.
        return (f"“{definition.label}” is a {definition.get_type_display()} field, which holds one value, and a "
                f"Multiple choice field sends several: use {_fitting_field(definition)}.")
    refused = []
    for answer in answers:
        try:
            clean_value(definition, answer)
        except BadValue:
            refused.append(answer)
    if not refused:
        return ""
    if kind == FieldType.CHECKBOX:
        return fits
    names = ", ".join(f"“{a[0] if isinstance(a, list) else a}”" for a in refused)
    return f"{fits} It cannot store {names}."


@dataclass
class FormSettings:
    title: str
    slug: str = ""
    description: str = ""
    success_message: str = ""
    redirect_url: str = ""
    tags: Iterable[Tag] = ()
    stage: Stage | None = None
    owner: Any = None


def _clean_settings(settings_in: FormSettings, *, form: Form | None) -> list[FieldError]:
    errors: list[FieldError] = []
    settings_in.title = (settings_in.title or "").strip()
    if not settings_in.title:
        errors.append(FieldError("title", "required", "Give the form a title."))
    elif len(settings_in.title) > 120:
        errors.append(FieldError("title", "invalid_value", "At most 120 characters."))
    slug = slugify(settings_in.slug or "")[:80]
    if settings_in.slug and not slug:
        errors.append(FieldError("slug", "invalid_value", "Use letters, digits and hyphens."))
    elif slug and Form.objects.filter(slug=slug).exclude(pk=form.pk if form else None).exists():
        errors.append(FieldError("slug", "already_exists", "Another form already uses this address."))
    settings_in.slug = slug
    if len(settings_in.success_message or "") > 500:
        errors.append(FieldError("success_message", "invalid_value", "At most 500 characters."))
    if settings_in.redirect_url:
        try:
            URLValidator(schemes=["http", "https"])(settings_in.redirect_url)
        except ValidationError:
            errors.append(FieldError("redirect_url", "invalid_value", "Enter a full http(s) address."))
    if settings_in.owner is not None and not (settings_in.owner.is_active and settings_in.owner.is_staff):
        errors.append(FieldError("owner", "invalid_value", "The owner must be an active staff user."))
    return errors


def _unique_slug(title: str) -> str:
    base = slugify(title)[:60] or "form"
    slug = base
    while Form.objects.filter(slug=slug).exists():
        slug = f"{base}-{secrets.token_hex(3)}"
    return slug


@transaction.atomic
def save_form(
    *, form: Form | None, settings_in: FormSettings, fields: Any, actor: Actor, publish: bool = False
) -> Form:
    """Create or edit a form with its fields; a field change on a form with submissions makes a new version."""
    errors = _clean_settings(settings_in, form=form)
    try:
        definitions = clean_field_definitions(fields)
    except InputRejected as exc:
        errors.extend(exc.errors)
        definitions = []
    if publish and not definitions and not errors:
        errors.append(FieldError("fields", "required", "Add at least one field before publishing."))
    elif not definitions and not errors and form is not None and form.status == Form.Status.OPEN:
        # A live form with no fields takes nothing: every visitor was told to give a name, with nowhere to.
        errors.append(FieldError("fields", "required", "This form is open: it needs at least one field. "
                                                      "Close it first to empty it."))
    if errors:
        raise InputRejected(errors)
    if form is None:
        form = Form(created_by=actor.user)
    else:
        form = Form.objects.select_for_update().get(pk=form.pk)
    form.title = settings_in.title
    form.slug = settings_in.slug or form.slug or _unique_slug(settings_in.title)
    form.description = (settings_in.description or "").strip()
    form.success_message = (settings_in.success_message or "").strip()
    form.redirect_url = settings_in.redirect_url or ""
    form.stage = settings_in.stage
    form.owner = settings_in.owner
    if publish:
        form.status = Form.Status.OPEN
    form.save()
    form.tags.set(list(settings_in.tags))
    version = form.current_version
    if version is None:
        version = FormVersion.objects.create(form=form, number=1, fields=definitions)
    elif version.fields != definitions:
        if version.submissions.exists():
            # Old submissions must keep reading with the labels and choices they were given.
            version = FormVersion.objects.create(form=form, number=version.number + 1, fields=definitions)
        else:
            version.fields = definitions
            version.save(update_fields=["fields"])
    if form.current_version_id != version.pk:
        form.current_version = version
        form.save(update_fields=["current_version", "updated_at"])
    return form


@transaction.atomic
def set_form_status(*, form: Form, status: str, actor: Actor) -> Form:
    """Open, close or return a form to draft; an empty form cannot open."""
    if status not in Form.Status.values:
        raise InputRejected([FieldError("status", "invalid_value", "Unknown status.", list(Form.Status.values))])
    form = Form.objects.select_for_update(of=("self",)).select_related("current_version").get(pk=form.pk)
    if status == Form.Status.OPEN and not (form.current_version and form.current_version.fields):
        raise InputRejected([FieldError("status", "invalid_value", "Add fields before opening the form.")])
    if form.status != status:
        form.status = status
        form.save(update_fields=["status", "updated_at"])
    return form


def record_form_view(*, form: Form) -> None:
    """Count one view of the public page (for the conversion figure)."""
    Form.objects.filter(pk=form.pk).update(views_count=F("views_count") + 1)


@transaction.atomic
def mark_submission(*, submission: Submission, status: str, actor: Actor) -> Submission:
    if status not in Submission.Status.values:
        raise InputRejected([FieldError("status", "invalid_value", "Unknown status.", list(Submission.Status.values))])
    if submission.status != status:
        submission.status = status
        submission.save(update_fields=["status"])
    return submission


# --- Submissions ------------------------------------------------------------------------


@dataclass
class SubmitResult:
    submission: Submission
    contact: Contact
    created: bool


def _values(data: Any, key: str) -> list[str]:
    if hasattr(data, "getlist"):
        return [str(v) for v in data.getlist(key)]
    value = data.get(key)
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def clean_answers(
    definitions: list[dict[str, Any]], data: Any, files: Any
) -> tuple[dict[str, Any], dict[str, Any], list[FieldError]]:
    """Check each answer against its field; return (answers, uploads, errors keyed by field id)."""
    limit = limits()
    answers: dict[str, Any] = {}
    uploads: dict[str, Any] = {}
    errors: list[FieldError] = []
    for definition in definitions:
        fid, kind, required = definition["id"], definition["type"], definition["required"]

        def fail(code: str, message: str, fid: str = fid) -> None:
            errors.append(FieldError(fid, code, message))

        if kind == FieldType.FILE:
            upload = files.get(fid) if files is not None else None
            if upload is None:
                if required:
                    fail("required", "Please choose a file.")
                continue
            allowed = list(settings.CRM_ALLOWED_UPLOAD_TYPES)
            if upload.size > limit["file"]:
                shown, allowed = _size(upload.size), _size(limit["file"])
                if shown == allowed:  # "5.0 MB; the limit is 5.0 MB": told apart in bytes
                    shown, allowed = f"{upload.size:,} bytes", f"{limit['file']:,} bytes"
                fail("file_too_large", f"This file is too large ({shown}); the limit is {allowed}.")
                continue
            # The type is read from the file itself: the browser's (or a script's) Content-Type is only a claim.
            try:
                content_type = verified_upload_type(upload)
            except UploadTypeRefused as exc:
                fail("unsupported_file_type", f"{exc} Try a PDF, an image or a document.")
                continue
            if allowed and content_type not in allowed:
                fail("unsupported_file_type", "This type of file is not accepted. Try a PDF, an image or a document.")
            else:
                uploads[fid] = upload
            continue
        if kind == FieldType.MULTIPLE_CHOICE:
            picked = [v.strip().replace("\x00", "") for v in _values(data, fid) if v.strip()]
            unknown = [v for v in picked if v not in definition["choices"]]
            if unknown:
                fail("invalid_choice", "Pick from the listed options.")
            elif required and not picked:
                fail("required", "Please pick at least one option.")
            elif picked:
                answers[fid] = [c for c in definition["choices"] if c in picked]
            continue
        if kind == FieldType.CHECKBOX:
            # A ticked box sends "on" (or the value the page gave it); "no", "off", "false", "0" or an
            # empty value, from a script or a hand-made request, is not a tick.
            checked = any(v.strip().casefold() not in CHECKBOX_NOT_TICKED for v in _values(data, fid))
            if required and not checked:
                fail("required", "Please tick this box to continue.")
            answers[fid] = checked
            continue
        given = _values(data, fid)
        # A browser sends a textarea's line breaks as CRLF but its maxlength counted each as one character:
        # counted (and stored) as one, so a visitor who stayed under the page's limit is not refused.
        text = given[0].replace("\r\n", "\n").strip() if given else ""
        if "\x00" in text:
            # PostgreSQL cannot store it (a 500); a person never types it.
            fail("invalid_value", "This answer holds a character that cannot be stored; please retype it.")
            continue
        if not text:
            if required:
                fail("required", "This field is required.")
            continue
        # As contact fields refuse them: an answer kept on the submission only is shown and exported too.
        if problem := control_character_problem(text):
            fail("invalid_value", problem)
            continue
        max_chars = answer_max_chars(definition, limit)
        if len(text) > max_chars:
            fail("too_long", f"Please keep this under {max_chars:,} characters (you wrote {len(text):,}).")
            continue
        if kind == FieldType.EMAIL:
            try:
                email_normalize(text)
            except InvalidEmail:
                fail("invalid_email", "Enter a valid email address, like name@example.com.")
                continue
        elif kind == FieldType.PHONE:
            try:
                parse_phone(text)
            except ExtensionTooLong as exc:
                fail("invalid_phone", f"This number is fine but {exc}; shorten it.")
                continue
            except InvalidPhone:
                fail("invalid_phone", "Enter a valid phone number; add the country code (e.g. +44) for numbers from abroad.")
                continue
        elif kind == FieldType.NUMBER:
            try:
                exact = number_from_text(text)
            except InvalidNumber:
                exact = Decimal("NaN")
            if not exact.is_finite() or not math.isfinite(float(exact)):
                fail("invalid_number", "Enter a number, like 42, 5,000 or 1250.50.")
                continue
            if definition["maps_to"].startswith("contact."):
                answers[fid] = text  # forms saved before Number was refused there: a ZIP code keeps its 0
            elif exact == exact.to_integral_value():
                answers[fid] = int(exact)
            else:
                # A float where it holds the number exactly; else the digits, which a decimal field keeps.
                answers[fid] = float(exact) if Decimal(repr(float(exact))) == exact else format(exact, "f")
            continue
        elif kind == FieldType.DATE:
            try:
                day = parse_date(text)
            except ValueError:
                day = None
            if day is None:
                fail("invalid_date", "Enter a date as YYYY-MM-DD.")
                continue
            answers[fid] = day.isoformat()
            continue
        elif kind == FieldType.SINGLE_CHOICE and text not in definition["choices"]:
            fail("invalid_choice", "Pick one of the listed options.")
            continue
        answers[fid] = text
    return answers, uploads, errors


def answer_max_chars(definition: dict[str, Any], limit: dict[str, int]) -> int:
    """The longest answer a text field takes: the form's limit, or less where its target stores less (a name)."""
    most = limit["long_text"] if definition["type"] == FieldType.LONG_TEXT else limit["text"]
    target = definition.get("maps_to") or ""
    if definition["type"] in (FieldType.TEXT, FieldType.LONG_TEXT) and target.startswith("contact."):
        field = Contact._meta.get_field(target.removeprefix("contact."))
        most = min(most, field.max_length or most)
    return most


def _size(num_bytes: int) -> str:
    if num_bytes >= 1024 * 1024:
        return f"{num_bytes / (1024 * 1024):.1f} MB"
    if num_bytes >= 1024:
        return f"{num_bytes / 1024:.0f} KB"
    return f"{num_bytes} bytes"


def _contact_input(definitions: list[dict[str, Any]], answers: dict[str, Any]) -> tuple[dict, dict, dict[str, str]]:
    """Split answers into contact data and custom values; also return which field fills which target."""
    data: dict[str, Any] = {}
    custom: dict[str, Any] = {}
    field_for: dict[str, str] = {}
    for definition in definitions:
        target = definition["maps_to"]
        if not target or target == FILES_TARGET:
            continue
        field_for[target.removeprefix("contact.")] = definition["id"]
        value = answers.get(definition["id"])
        if value in (None, "", []):
            continue
        if target.startswith("contact."):
            data[target.removeprefix("contact.")] = value
        elif target.startswith("custom."):
            custom[target.removeprefix("custom.")] = value
    return data, custom, field_for


def _unticked_boxes_left_alone(cleaned: contact_services.CleanContactInput, definitions: list[dict[str, Any]]):
    """For a person already in the CRM, an unticked box is no answer: it does not turn their "yes" into "no".

    A page cannot tell "left unticked" from "no", and anyone who knows a customer's phone can send the
    public form: read as "no", that withdrew a consent the customer gave. A new contact keeps the "no".
    """
    unticked = {
        d["maps_to"].removeprefix("custom.") for d in definitions
        if d["type"] == FieldType.CHECKBOX and d["maps_to"].startswith("custom.")
    } & {key for key, value in cleaned.custom.items() if value is False}
    if not unticked or not (cleaned.phone_e164 or cleaned.email_normalized):
        return cleaned
    by_phone, by_email = contact_services.find_contact_by_keys(
        phone_e164=cleaned.phone_e164, email_normalized=cleaned.email_normalized
    )
    if by_phone is None and by_email is None:
        return cleaned
    return replace(cleaned, custom={key: value for key, value in cleaned.custom.items() if key not in unticked})


def form_actor(form: Form) -> Actor:
    return Actor.for_system(f"form {form.slug}")


def submit_form(*, form: Form, data: Any, files: Any = None, ip_hash: str = "") -> SubmitResult:
    """Store a submission and create or update its contact, all in one transaction.

    Everything is validated first; errors name the form field ids (or "" for the
    form as a whole). The result never tells the visitor whether the person
    already existed: callers show the same message either way.
    """
    if not form.is_open:
        raise InputRejected([FieldError("", "form_closed", "This form is not accepting responses.")])
    version = form.current_version
    if version is None:
        raise InputRejected([FieldError("", "form_closed", "This form is not accepting responses.")])
    definitions = version.fields
    answers, uploads, errors = clean_answers(definitions, data, files)
    actor = form_actor(form)
    cleaned = None
    if not errors:
        contact_data, custom, field_for = _contact_input(definitions, answers)
        try:
            cleaned = contact_services.clean_contact_input(contact_data, custom=custom, actor=actor, allow_owner=False)
        except InputRejected as exc:
            # The service names contact fields ("phone", "custom.budget"); point each at the form field that filled it.
            for error in exc.errors:
                key = error.field.split(".")[0] if not error.field.startswith("custom.") else error.field
                errors.append(FieldError(field_for.get(key, ""), error.code, error.message, error.allowed))
        if cleaned is not None and not (cleaned.values.get("name") or cleaned.phone_e164 or cleaned.email_normalized):
            errors.append(FieldError("", "required", "Please give us at least your name, email or phone."))
    if errors:
        raise InputRejected(errors)
    assert cleaned is not None
    with transaction.atomic():
        form = Form.objects.select_related("stage__pipeline", "owner").get(pk=form.pk)
        if not form.is_open:
            raise InputRejected([FieldError("", "form_closed", "This form is not accepting responses.")])
        # The form's tags go in with the person, so "contact created" rules that look for a tag
        # see them (added afterwards, a rule for new VIPs missed every VIP the form brought in).
        form_tags = list(form.tags.all())
        cleaned = _unticked_boxes_left_alone(cleaned, definitions)
        if form_tags:
            cleaned = replace(cleaned, tags=list({t.pk: t for t in [*(cleaned.tags or []), *form_tags]}.values()))
        # Filling, not overwriting: a public page is anyone's, and a known phone must not rename a customer.
        upsert = contact_services.upsert_contact(
            data={}, actor=actor, source=Source.FORM, cleaned=cleaned, protected_changes="fill"
        )
        contact = upsert.contact
        if form.stage is not None:
            # Anyone can submit a public form with a known phone: it may bring a contact into the
            # pipeline or further along, never back (a customer signing up for news stays Won).
            contact_services.move_to_stage(
                contact=contact, pipeline=form.stage.pipeline, stage=form.stage, actor=actor, source=Source.FORM,
                forward_only=True,
            )
        # A deactivated owner (someone who left) is not handed new leads; the form's page says so.
        if form.owner is not None and form.owner.is_active and contact.owner_id is None:
            contact_services.assign_owner(contact=contact, owner=form.owner, actor=actor, source=Source.FORM)
        for fid, upload in uploads.items():
            stored = contact_services.add_file(contact=contact, upload=upload, actor=actor, source=Source.FORM)
            answers[fid] = {"name": stored.name, "size": stored.size, "file_id": stored.pk}
        submission = Submission.objects.create(
            form=form, version=version, contact=contact, answers=answers, ip_hash=ip_hash,
            outcome=Submission.Outcome.CREATED if upsert.created else Submission.Outcome.UPDATED,
        )
        HistoryEntry.objects.create(
            contact=contact, action=HistoryEntry.Action.FORM_SUBMITTED, source=Source.FORM,
            summary=f"Submitted the form “{form.title}”"[:255], actor_label=actor.label[:160],
            changes={"form_submission": [None, submission.pk]},
        )
        # Inside the transaction: a rolled-back submission fires no rule and sends no webhook.
        run_rules(trigger="form_submitted", contact=contact, actor=actor, source=Source.FORM, context={"form_id": form.pk})
        emit_event(event="form.submitted", payload=lambda: payloads.form_submitted_event(submission))
    return SubmitResult(submission=submission, contact=contact, created=upsert.created)


"""Every write to a contact and its parts. API, forms, imports, admin and the web UI call these.

Each function is keyword-only, validates everything before it writes, raises
``InputRejected`` naming every bad field, and owns one transaction.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, Exists, OuterRef, Q, Value, When
from django.db.models.functions import Lower
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from automations import payloads, switchboard
from automations.services import run_rules
from automations.webhooks import emit_event
from contacts.custom_fields import clean_custom_values
from contacts.models import (
    ChangeRequest,
    Contact,
    ContactFile,
    ContactStage,
    ContactTag,
    CustomField,
    HistoryEntry,
    MergedContact,
    Note,
    Pipeline,
    PossibleDuplicate,
    SavedView,
    Source,
    Stage,
    StageChange,
    Tag,
    Task,
)
from contacts.normalize import (
    HONORIFICS,
    ExtensionTooLong,
    InvalidEmail,
    InvalidPhone,
    control_character_problem,
    email_normalize,
    is_blank,
    parse_phone,
    visible_text,
)
from contacts.sanitize import clean_rich_text, rich_text_to_plain
from contacts.selectors import contact_keys
from contacts.uploads import UploadTypeRefused, verified_upload_type
from crm_hub import rawsql
from crm_hub.actors import Actor
from crm_hub.errors import FieldError, InputRejected

logger = logging.getLogger(__name__)

STANDARD_FIELDS: tuple[str, ...] = (
    "name", "identity", "phone", "email", "company", "position", "birthday",
    "zip_code", "country", "state", "city", "district", "street", "number", "complement",
)
# Overwriting these moves a person's identity, so only staff change them directly;
# anyone else gets a ChangeRequest for staff to approve.
PROTECTED_FIELDS: frozenset[str] = frozenset({"phone", "email", "identity", "owner"})
WRITABLE_FIELDS: tuple[str, ...] = (*STANDARD_FIELDS, "owner")
# Cleared to NULL, not to "" (the others are text).
NULLABLE_FIELDS: frozenset[str] = frozenset({"owner", "birthday"})
UPSERT_RETRIES = 3


# --- Results --------------------------------------------------------------------------


@dataclass
class UpsertResult:
    contact: Contact
    created: bool
    matched_by: str | None  # "phone", "email" or None when created
    possible_duplicates: list[int] = field(default_factory=list)
    pending_changes: list[ChangeRequest] = field(default_factory=list)
    changes: dict[str, list[Any]] = field(default_factory=dict)
    tags_added: list[str] = field(default_factory=list)
    kept: dict[str, Any] = field(default_factory=dict)  # values a "fill" writer sent for fields already set


@dataclass
class CleanContactInput:
    """Validated, normalized input: only the keys that were sent with a value."""

    values: dict[str, Any]
    custom: dict[str, Any]
    tags: list[Tag]
    phone_e164: str = ""
    phone_extension: str = ""
    email_normalized: str = ""


# --- Small shared helpers -------------------------------------------------------


def _history(
    contact: Contact,
    *,
    action: str,
    actor: Actor,
    source: str,
    changes: dict | None = None,
    summary: str = "",
    conversation=None,
) -> HistoryEntry:
    return HistoryEntry(
        contact=contact,
        action=action,
        changes=_jsonable(changes or {}),
        summary=summary[:255],
        source=source,
        actor_user=actor.user,
        actor_agent=actor.agent,
        actor_label=actor.label[:160],
        conversation=conversation,
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if hasattr(value, "pk") and hasattr(value, "_meta"):
        return str(value)
    return value


def _check_source(source: str) -> None:
    if source not in Source.values:
        raise InputRejected([FieldError("source", "invalid_value", "Unknown source.", list(Source.values))])


def _touch(contact: Contact, when: dt.datetime | None = None) -> None:
    when = when or timezone.now()
    batch = _intake_batch.get()
    if batch is not None:
        batch.touched[contact.pk] = when
    else:
        Contact.objects.filter(pk=contact.pk).update(last_activity_at=when, updated_at=when)
    contact.last_activity_at = when
    contact.updated_at = when


# --- Intake batching -----------------------------------------------------------------
# Inside record_intake every part is validated up front and the contact row is locked,
# so the steps can share one history insert, one "touch" update and one read of the
# contact's tags and stages, and need no savepoints of their own. That keeps an intake
# on an existing contact within a fixed, small number of statements.


@dataclass
class _IntakeBatch:
    history: list[HistoryEntry] = field(default_factory=list)
    touched: dict[int, dt.datetime] = field(default_factory=dict)
    # contact pk -> (tag ids, {pipeline id: ContactStage}) read once under the contact lock
    state: dict[int, tuple[set[int], dict[int, ContactStage]]] = field(default_factory=dict)
    # Notes, tasks and stage changes: nothing in the intake reads them back, so they are
    # inserted with the history and the touch in one round trip.
    inserts: list[Any] = field(default_factory=list)
    # Webhook events wait for the rows their payloads describe.
    after_flush: list[Callable[[], Any]] = field(default_factory=list)
    # ((phone, email), contacts) read and locked by the intake's prefetch, for the upsert's lookup.
    locked: tuple[tuple[str, str], list[Contact]] | None = None

    def flush(self) -> None:
        inserts, history, touched = self.inserts, self.history, self.touched
        self.inserts, self.history, self.touched = [], [], {}
        groups: dict[type, list[Any]] = {}
        for obj in inserts:
            groups.setdefault(type(obj), []).append(obj)
        statements = [rawsql.insert(objs, presaved=True) for objs in groups.values()]
        if history:
            statements.append(rawsql.insert(history, returning=False))
        statements += [_touch_statement(pk, when) for pk, when in touched.items()]
        rawsql.run_together(statements)
        callbacks, self.after_flush = self.after_flush, []
        for callback in callbacks:
            callback()


def _touch_statement(pk: int, when: dt.datetime) -> rawsql.Statement:
    sql = (
        f"UPDATE {rawsql.table(Contact)} SET {rawsql.column(Contact, 'last_activity_at')} = %s, "
        f"{rawsql.column(Contact, 'updated_at')} = %s WHERE {rawsql.column(Contact, 'id')} = %s"
    )
    return rawsql.Statement(sql=sql, params=[when, when, pk])


_intake_batch: ContextVar[_IntakeBatch | None] = ContextVar("crm_intake_batch", default=None)


def _save_history(entries: list[HistoryEntry]) -> None:
    batch = _intake_batch.get()
    if batch is not None:
        batch.history.extend(entries)
    elif entries:
        HistoryEntry.objects.bulk_create(entries)


def _defer_insert(obj: Any) -> bool:
    """Within an intake, queue ``obj`` for the batch's one-round-trip flush; False outside one."""
    batch = _intake_batch.get()
    if batch is None:
        return False
    batch.inserts.append(rawsql.presave(obj))
    return True


def _emit_after_flush(**kwargs) -> None:
    batch = _intake_batch.get()
    if batch is None:
        emit_event(**kwargs)
    else:
        batch.after_flush.append(functools.partial(emit_event, **kwargs))


def _run_rules(*, trigger: str, contact: Contact, **kwargs) -> None:
    """run_rules, outside the intake batch: a rule's own writes roll back with its savepoint."""
    batch = _intake_batch.get()
    if batch is None or not switchboard.trigger_has_rules(trigger):
        run_rules(trigger=trigger, contact=contact, **kwargs)
        return
    batch.flush()
    token = _intake_batch.set(None)
    try:
        run_rules(trigger=trigger, contact=contact, **kwargs)
    finally:
        _intake_batch.reset(token)
        batch.state.pop(contact.pk, None)  # the rules may have changed its tags or stages


def _write_atomic(func):
    """``transaction.atomic`` that skips the savepoint inside an intake (already validated, one transaction)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with transaction.atomic(savepoint=_intake_batch.get() is None):
            return func(*args, **kwargs)

    return wrapper


def _contact_state(contact: Contact) -> tuple[set[int], dict[int, ContactStage]] | None:
    """Within an intake, return the contact's tag ids and stage memberships, read in one query."""
    batch = _intake_batch.get()
    if batch is None:
        return None
    if contact.pk not in batch.state:
        stage_columns = rawsql.columns(ContactStage)
        tag_ids: set[int] = set()
        memberships: dict[int, ContactStage] = {}
        for row in rawsql.fetch(_contact_state_sql(connection.vendor), [contact.pk, contact.pk]):
            if row[0] == "t":
                tag_ids.add(row[1])
            else:
                membership = stage_columns.instance(row[1:])
                memberships[membership.pipeline_id] = membership
                ContactStage.contact.field.set_cached_value(membership, contact)
        batch.state[contact.pk] = (tag_ids, memberships)
    return batch.state[contact.pk]


@functools.cache
def _contact_state_sql(vendor: str) -> str:
    stage_columns = rawsql.columns(ContactStage)
    contact_id = rawsql.column(ContactTag, "contact")
    # The tag rows are padded to the ContactStage row's width so both fit one UNION ALL.
    padding = ", ".join(["NULL"] * (len(stage_columns.columns) - 1))
    tag_row = f"'t', {rawsql.column(ContactTag, 'tag')}" + (f", {padding}" if padding else "")
    return (
        f"SELECT {tag_row} FROM {rawsql.table(ContactTag)} WHERE {contact_id} = %s "
        f"UNION ALL SELECT 's', {stage_columns.select_list(rawsql.table(ContactStage))} "
        f"FROM {rawsql.table(ContactStage)} WHERE {rawsql.column(ContactStage, 'contact')} = %s"
    )


def resolve_tags(names: Iterable[str], *, field_name: str = "tags") -> list[Tag]:
    """Return the existing tags for ``names`` (case-insensitive) or raise unknown_tag with the allowed list."""
    wanted: list[str] = []
    errors: list[FieldError] = []
    for index, raw in enumerate(names or []):
        if not isinstance(raw, str) or not raw.strip() or "\x00" in raw:
            errors.append(FieldError(f"{field_name}.{index}", "invalid_value", "A tag name must be non-empty text."))
            continue
        if raw.strip().casefold() not in [w.casefold() for w in wanted]:
            wanted.append(raw.strip())
    if not wanted and not errors:
        return []
    found = {
        t.name.casefold(): t
        for t in Tag.objects.annotate(lname=Lower("name")).filter(lname__in=[w.lower() for w in wanted])
    }
    unknown = [w for w in wanted if w.casefold() not in found]
    if unknown:
        allowed = list(Tag.objects.order_by(Lower("name")).values_list("name", flat=True))
        for name in unknown:
            errors.append(
                FieldError(field_name, "unknown_tag", f"Tag {name!r} does not exist; use one of the allowed tags.", allowed)
            )
    if errors:
        raise InputRejected(errors)
    return [found[w.casefold()] for w in wanted]


def resolve_stage(*, pipeline: Any, stage: Any) -> tuple[Pipeline, Stage]:
    """Return the pipeline and stage named (by id or case-insensitive name) or raise with allowed values."""
    if pipeline in (None, ""):
        pipelines = list(Pipeline.objects.all())
        if len(pipelines) == 1:
            found_pipeline = pipelines[0]
        else:
            raise InputRejected(
                [FieldError("pipeline", "required", "Name the pipeline.", [p.name for p in pipelines])]
            )
    else:
        found_pipeline = _by_id_or_name(Pipeline.objects.all(), pipeline)
        if found_pipeline is None:
            allowed = list(Pipeline.objects.values_list("name", flat=True))
            raise InputRejected(
                [FieldError("pipeline", "unknown_pipeline", f"Pipeline {pipeline!r} does not exist.", allowed)]
            )
    if stage in (None, ""):
        allowed = list(found_pipeline.stages.values_list("name", flat=True))
        raise InputRejected([FieldError("stage", "required", "Name the stage.", allowed)])
    found_stage = _by_id_or_name(found_pipeline.stages.all(), stage)
    if found_stage is None:
        allowed = list(found_pipeline.stages.values_list("name", flat=True))
        raise InputRejected(
            [
                FieldError(
                    "stage",
                    "unknown_stage",
                    f"Stage {stage!r} does not exist in pipeline {found_pipeline.name!r}.",
                    allowed,
                )
            ]
        )
    return found_pipeline, found_stage


def _by_id_or_name(queryset, value):
    """A JSON number is an id; text is a name first (a stage may be called "5"), then an id."""
    if isinstance(value, int) and not isinstance(value, bool):
        return queryset.filter(pk=value).first() if abs(value) < 2**63 else None
    text = str(value).strip()
    match = queryset.annotate(lname=Lower("name")).filter(lname=text.lower()).first()
    if match is None and text.isdigit() and len(text) < 18:
        match = queryset.filter(pk=int(text)).first()
    return match


def resolve_user(value: Any, *, field_name: str = "owner"):
    """Return the active staff user named by id, username or email, or raise invalid_value.

    Staff only: owners and assignees work in the CRM, and a user without staff status cannot
    sign in to it (a former rep kept getting leads and tasks nobody would see).
    """
    User = get_user_model()
    if value in (None, ""):
        return None
    if isinstance(value, User):
        return value
    text = str(value).strip()
    if "\x00" in text:  # no user is named so, and PostgreSQL refuses it in a query (a 500)
        raise InputRejected([FieldError(field_name, "invalid_value", "No active user by that name (give an id, username or email).")])
    query = Q(username__iexact=text) | Q(email__iexact=text)
    if text.isdigit():
        query |= Q(pk=int(text))
    user = User.objects.filter(query, is_active=True).order_by("pk").first()
    if user is None:
        raise InputRejected(
            [FieldError(field_name, "invalid_value", f"No active user {text!r} (give an id, username or email).")]
        )
    if not user.is_staff:
        raise InputRejected([FieldError(
            field_name, "invalid_value",
            f"{user.get_username()!r} cannot sign in to the CRM (not a staff user): choose someone who can.",
        )])
    return user


# --- Validation of contact input -----------------------------------------------


def invalid_phone_error(text: str, field_name: str = "phone") -> FieldError:
    return FieldError(
        field_name, "invalid_phone",
        f"{text!r} is not a valid phone number (include the country code if it is not from {settings.CRM_DEFAULT_PHONE_REGION}).",
    )


def invalid_email_error(text: str, field_name: str = "email") -> FieldError:
    return FieldError(field_name, "invalid_email", f"{text!r} is not a valid email address.")


def clean_contact_input(
    data: Mapping[str, Any] | None,
    *,
    custom: Mapping[str, Any] | None = None,
    tags: Iterable[str] | None = None,
    actor: Actor,
    allow_owner: bool = True,
) -> CleanContactInput:
    """Validate and normalize contact input; raise InputRejected listing every bad field."""
    data = dict(data or {})
    errors: list[FieldError] = []
    values: dict[str, Any] = {}
    allowed_keys = WRITABLE_FIELDS if allow_owner else STANDARD_FIELDS
    for key in data:
        if key not in allowed_keys:
            errors.append(FieldError(key, "unknown_field", f"{key!r} is not a contact field.", list(allowed_keys)))
    result = CleanContactInput(values=values, custom={}, tags=[])
    max_lengths = {f: Contact._meta.get_field(f).max_length for f in STANDARD_FIELDS if f != "birthday"}
    for key in STANDARD_FIELDS:
        if key not in data:
            continue
        raw = data[key]
        if raw is None:
            continue
        if key == "birthday":
            if isinstance(raw, str) and not raw.strip():
                values["birthday"] = None  # cleared (update_contact); an upsert skips empty values
                continue
            parsed = _parse_birthday(raw)
            if parsed is None:
                errors.append(FieldError("birthday", "invalid_value", birthday_unreadable(raw)))
            elif problem := birthday_problem(parsed):
                errors.append(FieldError("birthday", "invalid_value", problem))
            else:
                values["birthday"] = parsed
            continue
        if isinstance(raw, (dict, list, bool)) or (key in TEXT_ONLY_FIELDS and not isinstance(raw, str)):
            errors.append(FieldError(key, "invalid_value", "Expected text."))
            continue
        text = str(raw).strip()
        if problem := control_character_problem(text):
            errors.append(FieldError(key, "invalid_value", problem))
            continue
        if key in TEXT_ONLY_FIELDS:
            # One space between words, as a person would type them: "  Ana   Costa " is "Ana Costa",
            # and a file that repeats the name with other spacing changes nothing. Nothing invisible.
            text = " ".join(visible_text(text).split())
        if text == "" or is_blank(text):  # a lone zero-width space is no name
            values[key] = ""
            continue
        if len(text) > max_lengths[key]:
            errors.append(FieldError(key, "invalid_value", f"At most {max_lengths[key]} characters."))
            continue
        if key == "phone":
            try:
                phone = parse_phone(text)
            except ExtensionTooLong as exc:
                errors.append(FieldError(key, "invalid_phone", f"{text!r}: {exc}."))
                continue
            except InvalidPhone:
                errors.append(invalid_phone_error(text))
                continue
            result.phone_e164, result.phone_extension = phone.e164, phone.extension
        elif key == "email":
            try:
                result.email_normalized = email_normalize(text)
            except InvalidEmail:
                errors.append(invalid_email_error(text))
                continue
        values[key] = text
    if allow_owner and data.get("owner") not in (None, ""):
        try:
            values["owner"] = resolve_user(data["owner"])
        except InputRejected as exc:
            errors.extend(exc.errors)
    if custom:
        definitions = {d.key: d for d in CustomField.objects.all()}
        result.custom, custom_errors = clean_custom_values(
            # Not an object (a list from admin's JSON box, say): clean_custom_values names it.
            dict(custom) if isinstance(custom, Mapping) else custom, definitions=definitions, agent_write=actor.is_agent
        )
        errors.extend(custom_errors)
    if tags:
        try:
            result.tags = resolve_tags(tags)
        except InputRejected as exc:
            errors.extend(exc.errors)
    if errors:
        raise InputRejected(errors)
    return result


# Fields no number can be: 123 as a name is a bug in the sender, not a name. Digits stay welcome where
# people write them (phone, house number, ZIP code), so those take JSON numbers too.
TEXT_ONLY_FIELDS = frozenset({"name", "email", "company", "position", "city", "state", "country", "district"})
EARLIEST_BIRTHDAY = dt.date(1900, 1, 1)
_DATE_SHAPE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}")


def birthday_unreadable(raw: Any) -> str:
    """Why ``raw`` could not be read as a birthday: not a date as YYYY-MM-DD, or a day the calendar has not."""
    if isinstance(raw, str) and _DATE_SHAPE.fullmatch(raw.strip()):
        return f"{raw.strip()} does not exist (no such day in that month)."
    return "Expected a date as YYYY-MM-DD."


def birthday_problem(birthday: dt.date) -> str | None:
    """Why ``birthday`` cannot be one (in the future, or a placeholder year such as 0001), or None."""
    # A day of slack: "today" differs by time zone, and a birthday today somewhere is not wrong.
    if birthday > timezone.localdate() + dt.timedelta(days=1):
        return "A birthday cannot be in the future."
    if birthday < EARLIEST_BIRTHDAY:
        return f"A birthday before {EARLIEST_BIRTHDAY.year} is no real one (a placeholder year?); leave it out instead."
    return None


def _parse_birthday(raw: Any) -> dt.date | None:
    if isinstance(raw, dt.datetime):
        return raw.date()
    if isinstance(raw, dt.date):
        return raw
    if isinstance(raw, str):
        try:
            return parse_date(raw.strip())
        except ValueError:
            return None
    return None


# --- Upsert -----------------------------------------------------------------------


def _protected_policy(actor: Actor, explicit: str | None) -> str:
    if explicit is not None:
        return explicit
    return "apply" if actor.is_staff_user else "request"


def find_contact_by_keys(*, phone_e164: str = "", email_normalized: str = "", lock: bool = False) -> tuple[Contact | None, Contact | None]:
    """Return (phone match, email match) in one query; either may be None.

    The owner comes along (a task defaulting to it costs no extra query). Every upsert and
    intake starts here, so the SQL is built once per shape instead of by the ORM per call.
    """
    keys = [k for k in (phone_e164, email_normalized) if k]
    if not keys:
        return None, None
    batch = _intake_batch.get()
    if lock and batch is not None and batch.locked is not None and batch.locked[0] == (phone_e164, email_normalized):
        # The intake's prefetch read (and locked) them; used once, so a retry after a lost race reads again.
        contacts, batch.locked = batch.locked[1], None
    else:
        sql = _contacts_by_keys_sql(bool(phone_e164), bool(email_normalized), lock and connection.features.has_select_for_update_of)
        split = len(rawsql.columns(Contact).columns)
        contacts = [_contact_from_row(row, split) for row in rawsql.fetch(sql, keys)]
    by_phone = by_email = None
    for contact in contacts:
        if phone_e164 and contact.phone_e164 == phone_e164:
            by_phone = contact
        if email_normalized and contact.email_normalized == email_normalized:
            by_email = contact
    return by_phone, by_email


def _contact_from_row(row: Sequence[Any], split: int) -> Contact:
    """A Contact and its owner from _contacts_by_keys_sql's columns (contact's, then the owner's)."""
    contact = rawsql.columns(Contact).instance(row[:split])
    owner = rawsql.columns(get_user_model()).instance(row[split:]) if row[split] is not None else None
    Contact.owner.field.set_cached_value(contact, owner)
    return contact


@functools.cache
def _contacts_by_keys_sql_for(vendor: str, by_phone: bool, by_email: bool, lock: bool) -> str:
    user = get_user_model()
    conditions = []
    # "<> ''" lets a prepared (generic) plan use the partial unique indexes, whose predicate it is.
    for wanted, name in ((by_phone, "phone_e164"), (by_email, "email_normalized")):
        if wanted:
            conditions.append(f"(c.{rawsql.column(Contact, name)} = %s AND c.{rawsql.column(Contact, name)} <> '')")
    return (
        f"SELECT {rawsql.columns(Contact).select_list('c')}, {rawsql.columns(user).select_list('u')} "
        f"FROM {rawsql.table(Contact)} c LEFT OUTER JOIN {rawsql.table(user)} u "
        f"ON c.{rawsql.column(Contact, 'owner')} = u.{rawsql.column(user, user._meta.pk.name)} "
        f"WHERE {' OR '.join(conditions)} ORDER BY c.{rawsql.column(Contact, 'id')}"
        + (" FOR UPDATE OF c" if lock else "")
    )


def _contacts_by_keys_sql(by_phone: bool, by_email: bool, lock: bool) -> str:
    return _contacts_by_keys_sql_for(connection.vendor, by_phone, by_email, lock)


def upsert_contact(
    *,
    data: Mapping[str, Any],
    actor: Actor,
    source: str,
    custom: Mapping[str, Any] | None = None,
    tags: Iterable[str] | None = None,
    conversation=None,
    protected_changes: str | None = None,
    create: bool = True,
    update: bool = True,
    cleaned: CleanContactInput | None = None,
) -> UpsertResult:
    """Create or update the contact matched by phone (first) or email; record every change.

    On a conflict (phone matches A, email matches B) the write goes to A, B is
    untouched and a PossibleDuplicate is recorded. Overwrites of protected fields
    become ChangeRequests unless the actor is staff (or ``protected_changes="apply"``);
    ``protected_changes="fill"`` (a public form) also leaves every other non-empty field as it is.
    """
    _check_source(source)
    cleaned = cleaned or clean_contact_input(data, custom=custom, tags=tags, actor=actor)
    policy = _protected_policy(actor, protected_changes)
    last_error: IntegrityError | None = None
    in_intake = _intake_batch.get() is not None
    for _attempt in range(UPSERT_RETRIES):
        try:
            # In an intake the contact insert keeps its own savepoint (in _create_contact), so a
            # lost race is retried without one more savepoint around the whole upsert.
            with contextlib.nullcontext() if in_intake else transaction.atomic():
                return _upsert_once(
                    cleaned=cleaned, actor=actor, source=source, conversation=conversation,
                    policy=policy, create=create, update=update,
                )
        except IntegrityError as exc:
            # A concurrent writer took the phone or email first; the unique index
            # refused our insert, so look again: we will now match its row.
            last_error = exc
            logger.info("upsert retry after concurrent insert: %s", exc)
    raise last_error  # type: ignore[misc]


def _upsert_once(
    *, cleaned: CleanContactInput, actor: Actor, source: str, conversation, policy: str, create: bool, update: bool
) -> UpsertResult:
    by_phone, by_email = find_contact_by_keys(
        phone_e164=cleaned.phone_e164, email_normalized=cleaned.email_normalized, lock=True
    )
    contact = by_phone or by_email
    if contact is None:
        if not create:
            raise InputRejected(
                [FieldError("phone" if cleaned.phone_e164 else "email", "not_found", "No contact matches this phone or email.")]
            )
        if not (cleaned.values.get("name") or cleaned.phone_e164 or cleaned.email_normalized):
            raise InputRejected([FieldError("name", "required", "Give at least a name, a phone or an email.")])
        return _create_contact(cleaned=cleaned, actor=actor, source=source, conversation=conversation)
    if not update:
        raise InputRejected(
            [FieldError("phone" if by_phone else "email", "already_exists", f"Contact #{contact.pk} already has this {'phone' if by_phone else 'email'}.")]
        )
    matched_by = "phone" if by_phone is not None else "email"
    result = UpsertResult(contact=contact, created=False, matched_by=matched_by)
    skip: set[str] = set()
    entries: list[HistoryEntry] = []
    if by_phone is not None and by_email is not None and by_phone.pk != by_email.pk:
        skip.add("email")  # it belongs to the other contact; writing it would merge silently
        flag, flagged = _flag_duplicate(
            contact=by_phone, other=by_email, source=source, reason="Phone matched this contact, email matched the other."
        )
        if flag is not None:
            result.possible_duplicates.append(by_email.pk)
        if flagged:  # once per open flag: a retried conversation does not add the same line again
            entries.append(
                _history(
                    contact, action=HistoryEntry.Action.POSSIBLE_DUPLICATE, actor=actor, source=source,
                    summary=f"Email {cleaned.email_normalized} belongs to contact #{by_email.pk}; flagged as possible duplicate.",
                    conversation=conversation,
                )
            )
    _apply_changes(
        contact, cleaned=cleaned, actor=actor, source=source, conversation=conversation,
        policy=policy, skip=skip, result=result, entries=entries, clear_empty=False,
    )
    return result


def _create_contact(*, cleaned: CleanContactInput, actor: Actor, source: str, conversation) -> UpsertResult:
    now = timezone.now()
    values = {k: v for k, v in cleaned.values.items() if v not in ("", None)}
    contact = Contact(
        **values,
        phone_e164=cleaned.phone_e164,
        phone_extension=cleaned.phone_extension,
        email_normalized=cleaned.email_normalized,
        custom={k: v for k, v in cleaned.custom.items() if v is not None},
        source=source,
        last_activity_at=now,
    )
    with transaction.atomic():
        contact.save(force_insert=True)
    changes = {k: [None, v] for k, v in values.items()}
    changes.update({f"custom.{k}": [None, v] for k, v in contact.custom.items()})
    entries = [
        _history(contact, action=HistoryEntry.Action.CREATED, actor=actor, source=source, changes=changes,
                 summary=f"Created via {Source(source).label}", conversation=conversation)
    ]
    result = UpsertResult(contact=contact, created=True, matched_by=None, changes=changes)
    if cleaned.tags:
        ContactTag.objects.bulk_create([ContactTag(contact=contact, tag=t) for t in cleaned.tags])
        result.tags_added = [t.name for t in cleaned.tags]
        entries.append(
            _history(contact, action=HistoryEntry.Action.TAG_ADDED, actor=actor, source=source,
                     changes={"tags": [[], result.tags_added]}, summary="Tags added: " + ", ".join(result.tags_added),
                     conversation=conversation)
        )
    _save_history(entries)
    announce_created(contact, tags_added=result.tags_added, actor=actor, source=source)
    return result


def announce_created(contact: Contact, *, tags_added: list[str], actor: Actor, source: str) -> None:
    """Queue contact.created, then run "contact created" (and "tag added") rules.

    Every path that creates contacts calls this, the bulk ones per created contact,
    so rules and webhooks behave the same whatever the source. contact.created goes
    first, with the contact as created: queued after the rules, it reached receivers
    after the contact.updated and task.created events of a contact they had never heard of.
    """
    _emit_after_flush(event="contact.created", payload=lambda: payloads.contact_event(contact))
    _run_rules(trigger="contact_created", contact=contact, actor=actor, source=source, context={"tags": tags_added})
    if tags_added:
        _run_rules(trigger="tag_added", contact=contact, actor=actor, source=source, context={"tags": tags_added})


def _apply_changes(
    contact: Contact,
    *,
    cleaned: CleanContactInput,
    actor: Actor,
    source: str,
    conversation,
    policy: str,
    skip: set[str],
    result: UpsertResult,
    entries: list[HistoryEntry],
    clear_empty: bool,
) -> None:
    """Apply cleaned input to an existing contact, queueing protected overwrites for approval."""
    now = timezone.now()
    update_fields: list[str] = []
    changes: dict[str, list[Any]] = {}
    requests: list[ChangeRequest] = []
    for key, new in cleaned.values.items():
        if key in skip:
            continue
        if new in ("", None) and not clear_empty:
            continue
        current = getattr(contact, key)
        if key == "phone":
            # Caller ID never carries an extension: the same number without one is the same phone.
            same = cleaned.phone_e164 == contact.phone_e164 and cleaned.phone_extension in ("", contact.phone_extension)
        elif key == "email":
            same = cleaned.email_normalized == contact.email_normalized
        elif key == "owner":
            same = (current.pk if current else None) == (new.pk if new else None)
        elif key == "name" and policy in ("request", "fill") and not clear_empty:
            # An agent or a form that knows less of the name ("Marcus" for "Marcus Aurelius Reed",
            # "reed" in lower case) keeps the fuller one on record; a different name still replaces it.
            same = current == new or _name_part_of(new, current)
        else:
            same = current == new
        if same:
            continue
        is_empty = current in ("", None)
        if policy == "fill" and not is_empty and key not in PROTECTED_FIELDS and not (
            key == "name" and _name_part_of(current, new)  # "Ana" → "Ana Souza": the same name, fuller
        ):
            # An anonymous writer (a public form) fills what is empty and changes nothing the team
            # knows: anyone can send a customer's phone with another name. Its answers stay on the submission.
            result.kept[key] = new
            continue
        if key in PROTECTED_FIELDS and not is_empty and policy in ("request", "fill"):
            requests.append(
                ChangeRequest(
                    contact=contact, field=key, old_value=_as_text(current), new_value=_as_text(new),
                    source=source, requested_by_agent=actor.agent, requested_by_user=actor.user,
                    requested_by_system=actor.system, conversation=conversation,
                )
            )
            continue
        changes[key] = [_as_text(current) if key == "owner" else current, _as_text(new) if key == "owner" else new]
        setattr(contact, key, new if new is not None or key in NULLABLE_FIELDS else "")
        update_fields.append(key)
        if key == "phone":
            contact.phone_e164, contact.phone_extension = cleaned.phone_e164, cleaned.phone_extension
            update_fields += ["phone_e164", "phone_extension"]
        elif key == "email":
            contact.email_normalized = cleaned.email_normalized
            update_fields.append("email_normalized")
    if cleaned.custom:
        merged = dict(contact.custom or {})
        for key, new in cleaned.custom.items():
            old = merged.get(key)
            if new is None and not clear_empty:
                continue
            if old == new:
                continue
            if policy == "fill" and old is not None:
                result.kept[f"custom.{key}"] = new
                continue
            changes[f"custom.{key}"] = [old, new]
            if new is None:
                merged.pop(key, None)
            else:
                merged[key] = new
        if merged != (contact.custom or {}):
            contact.custom = merged
            update_fields.append("custom")
    if update_fields or requests:
        # A write that changes nothing leaves the record (and its updated_at) alone.
        contact.last_activity_at = now
        contact.updated_at = now
        update_fields += ["last_activity_at", "updated_at"]
        # A new phone or email can lose a race for its unique index. The savepoint keeps the
        # caller's transaction usable, so an upsert can look again and an edit can say who holds it.
        takes_key = "phone_e164" in update_fields or "email_normalized" in update_fields
        with transaction.atomic() if takes_key else contextlib.nullcontext():
            contact.save(update_fields=update_fields)
    if changes:
        entries.append(
            _history(contact, action=HistoryEntry.Action.UPDATED, actor=actor, source=source, changes=changes,
                     summary="Updated " + ", ".join(changes), conversation=conversation)
        )
    if requests:
        fresh, repeated = _split_pending(contact, requests)
        ChangeRequest.objects.bulk_create(fresh)
        for request in fresh:
            entries.append(
                _history(contact, action=HistoryEntry.Action.CHANGE_REQUESTED, actor=actor, source=source,
                         changes={request.field: [request.old_value, request.new_value]},
                         summary=f"Change of {request.field} awaits approval", conversation=conversation)
            )
        result.pending_changes.extend(fresh + repeated)
    if cleaned.tags:
        state = _contact_state(contact)
        existing = state[0] if state else set(ContactTag.objects.filter(contact=contact).values_list("tag_id", flat=True))
        new_tags = [t for t in cleaned.tags if t.pk not in existing]
        # The database says which links it really made: the tags read with an intake's lock come
        # from a snapshot taken before it waited, and a writer that held the lock may have added them.
        new_tags = _link_new_tags(contact, new_tags)
        existing.update(t.pk for t in new_tags)
        if new_tags:
            _touch(contact, now)
            result.tags_added = [t.name for t in new_tags]
            entries.append(
                _history(contact, action=HistoryEntry.Action.TAG_ADDED, actor=actor, source=source,
                         changes={"tags": [[], result.tags_added]}, summary="Tags added: " + ", ".join(result.tags_added),
                         conversation=conversation)
            )
    _save_history(entries)
    result.changes = changes
    if result.tags_added:
        _run_rules(trigger="tag_added", contact=contact, actor=actor, source=source, context={"tags": result.tags_added})
    if changes or result.tags_added:
        event_changes = {**changes, **({"tags": [[], result.tags_added]} if result.tags_added else {})}
        _emit_after_flush(event="contact.updated", payload=lambda: payloads.contact_event(contact, changes=_jsonable(event_changes)))


_GERMAN_SPELLED_OUT = (("ae", "a"), ("oe", "o"), ("ue", "u"))


def _name_words(name: Any) -> list[str]:
    """A name's words as compared: case, accents, apostrophes and "Mr."-style titles aside; "Reed, Marcus" too."""
    text = unicodedata.normalize("NFKD", str(name or "").casefold())
    text = "".join(c for c in text if not unicodedata.combining(c)).replace("ß", "ss")
    words = []
    for word in re.split(r"[\s,-]+", text):
        word = word.strip(".").replace("'", "").replace("’", "").replace(".", "")
        if word and word not in HONORIFICS:
            words.append(word)
    return words


def _same_word(new: str, current: str) -> bool:
    if new == current or (len(new) == 1 and current.startswith(new)):  # "M." for "Marcus"
        return True
    for spelled, letter in _GERMAN_SPELLED_OUT:  # "Juergen" for "Jürgen"
        new = new.replace(spelled, letter)
    return new == current


def _name_part_of(new: Any, current: Any) -> bool:
    """Whether ``new`` says nothing ``current`` does not: each of its words is one of current's (an initial,
    a spelling without accents or titles, another order), and current is not the same text."""
    new_words, current_words = _name_words(new), _name_words(current)
    if not new_words or not current_words or str(new).strip() == str(current).strip():
        return False
    left = list(current_words)
    for word in new_words:
        match = next((c for c in left if _same_word(word, c)), None)
        if match is None:
            return False  # a word the record lacks: a different or fuller name
        left.remove(match)
    return True


def _split_pending(contact: Contact, requests: list[ChangeRequest]) -> tuple[list[ChangeRequest], list[ChangeRequest]]:
    """Split into (new requests, matching ones already pending): a retried conversation asks once."""
    pending = {
        _request_key(r): r for r in ChangeRequest.objects.filter(contact=contact, status=ChangeRequest.Status.PENDING)
    }
    fresh = [r for r in requests if _request_key(r) not in pending]
    repeated = [pending[_request_key(r)] for r in requests if _request_key(r) in pending]
    return fresh, repeated


def _request_key(request: ChangeRequest) -> tuple[str, str]:
    """What a request asks for: the same phone or email in another spelling is the same request."""
    value = request.new_value
    try:
        if request.field == "phone":
            phone = parse_phone(value)
            return request.field, f"{phone.e164};{phone.extension}"
        if request.field == "email":
            return request.field, email_normalize(value)
    except (InvalidPhone, InvalidEmail):
        pass
    return request.field, value


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if hasattr(value, "get_username"):
        return value.get_username()
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return str(value)


def _flag_duplicate(
    *, contact: Contact, other: Contact, source: str, reason: str
) -> tuple[PossibleDuplicate | None, bool]:
    """Return the open flag for the pair and whether this call raised it; None where staff said "not a duplicate"."""
    if PossibleDuplicate.objects.filter(
        Q(contact=contact, other=other) | Q(contact=other, other=contact), status=PossibleDuplicate.Status.DISMISSED
    ).exists():
        return None, False  # dismissed: the next chat from this person does not raise it again
    return PossibleDuplicate.objects.get_or_create(
        contact=contact, other=other, status=PossibleDuplicate.Status.OPEN,
        defaults={"reason": reason[:255], "source": source},
    )


# --- Direct edits -----------------------------------------------------------------


@transaction.atomic
def update_contact(
    *,
    contact: Contact,
    data: Mapping[str, Any],
    actor: Actor,
    source: str,
    custom: Mapping[str, Any] | None = None,
    conversation=None,
    protected_changes: str | None = None,
) -> UpsertResult:
    """Edit a known contact; an empty value clears the field. Phone/email already held elsewhere are refused."""
    _check_source(source)
    try:
        cleaned = clean_contact_input(data, custom=custom, actor=actor)
    except InputRejected as exc:
        # Name a phone or email held by another contact in the same answer as the other errors.
        raise InputRejected(exc.errors + _keys_held_elsewhere(contact, data, exc.errors)) from None
    locked = Contact.objects.select_for_update().get(pk=contact.pk)
    errors = _held_elsewhere_errors(locked, cleaned.phone_e164, cleaned.email_normalized)
    if "phone" in cleaned.values and cleaned.values["phone"] == "":
        cleaned.phone_e164 = cleaned.phone_extension = ""
    if "email" in cleaned.values and cleaned.values["email"] == "":
        cleaned.email_normalized = ""
    if not errors:
        errors = _left_nameless_errors(locked, cleaned)
    if errors:
        raise InputRejected(errors)
    for nullable in ("owner", "birthday"):
        if nullable in data and data[nullable] in (None, ""):
            cleaned.values[nullable] = None
    result = UpsertResult(contact=locked, created=False, matched_by=None)
    try:
        _apply_changes(
            locked, cleaned=cleaned, actor=actor, source=source, conversation=conversation,
            policy=_protected_policy(actor, protected_changes), skip=set(), result=result, entries=[], clear_empty=True,
        )
    except IntegrityError:
        # Another writer committed the same phone or email after our check above.
        errors = _held_elsewhere_errors(locked, cleaned.phone_e164, cleaned.email_normalized)
        if errors:
            raise InputRejected(errors) from None
        raise
    return result


def _left_nameless_errors(contact: Contact, cleaned: CleanContactInput) -> list[FieldError]:
    """Refuse an edit that would leave the contact with no name, phone or email (as creating one is refused)."""
    after = {
        key: cleaned.values[key] if key in cleaned.values else (getattr(contact, key) or "")
        for key in ("name", "phone", "email")
    }
    if any(str(value).strip() for value in after.values()):
        return []
    cleared = [key for key in ("name", "phone", "email") if key in cleaned.values] or ["name"]
    return [FieldError(cleared[0], "required", "This would leave the contact with no name, phone or email; keep one of them.")]


def _held_elsewhere_errors(contact: Contact, phone_e164: str, email_normalized: str) -> list[FieldError]:
    errors = []
    for field_name, column, key in (("phone", "phone_e164", phone_e164), ("email", "email_normalized", email_normalized)):
        if key:
            other = Contact.objects.filter(**{column: key}).exclude(pk=contact.pk).values_list("pk", flat=True).first()
            if other is not None:
                errors.append(FieldError(field_name, "already_exists", f"Contact #{other} already has this {field_name}."))
    return errors


def _keys_held_elsewhere(contact: Contact, data: Mapping[str, Any], refused: list[FieldError]) -> list[FieldError]:
    """The already_exists errors for the phone and email of ``data`` that are themselves valid."""
    bad = {error.field for error in refused}
    phone_e164 = email_normalized = ""
    if "phone" not in bad and isinstance(data.get("phone"), str) and data["phone"].strip():
        try:
            phone_e164 = parse_phone(data["phone"]).e164
        except InvalidPhone:
            pass
    if "email" not in bad and isinstance(data.get("email"), str) and data["email"].strip():
        try:
            email_normalized = email_normalize(data["email"])
        except InvalidEmail:
            pass
    return _held_elsewhere_errors(contact, phone_e164, email_normalized)


@transaction.atomic
def assign_owner(*, contact: Contact, owner, actor: Actor, source: str, conversation=None) -> bool:
    """Set the owner directly (rules, bulk actions, admins); return whether it changed."""
    previous = contact.owner
    if (previous.pk if previous else None) == (owner.pk if owner else None):
        return False
    contact.owner = owner
    contact.updated_at = timezone.now()
    contact.save(update_fields=["owner", "updated_at"])
    HistoryEntry.objects.bulk_create([
        _history(contact, action=HistoryEntry.Action.UPDATED, actor=actor, source=source,
                 changes={"owner": [_as_text(previous), _as_text(owner)]},
                 summary=f"Owner set to {_as_text(owner) or 'nobody'}", conversation=conversation)
    ])
    emit_event(event="contact.updated", payload=lambda: payloads.contact_event(contact, changes={"owner": [_as_text(previous), _as_text(owner)]}))
    return True


@transaction.atomic
def erase_contacts(*, contact_ids: list[int]) -> int:
    """Delete contacts with everything that is theirs; return how many were deleted.

    This is how a right-to-erasure request is carried out: their history, stage moves, notes,
    tasks and files go with them (CASCADE), the stored files are removed once the deletion has
    committed, and no copy of their names stays in Django's log of admin actions.
    """
    from django.contrib.admin.models import LogEntry
    from django.contrib.contenttypes.models import ContentType

    from automations.models import WebhookDelivery

    files = [name for name in ContactFile.objects.filter(contact_id__in=contact_ids).values_list("file", flat=True) if name]
    deleted = Contact.objects.filter(pk__in=contact_ids).delete()[1].get(Contact._meta.label, 0)
    # Events about them still in the outbox would carry their data out after the erasure, and
    # delivered ones keep it in the delivery log: pending ones go, the others keep only the id.
    about_them = WebhookDelivery.objects.filter(payload__contact__id__in=contact_ids)
    about_them.filter(status=WebhookDelivery.Status.PENDING).delete()
    scrubbed = WebhookDelivery._meta.get_field("payload")
    about_them.update(payload=Case(
        *(When(payload__contact__id=pk, then=Value({"erased": True, "contact": {"id": pk}}, output_field=scrubbed))
          for pk in contact_ids),
        output_field=scrubbed,
    ))
    LogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(Contact), object_id__in=[str(pk) for pk in contact_ids]
    ).update(object_repr="(erased contact)")
    storage = ContactFile._meta.get_field("file").storage

    def remove_files() -> None:
        for name in files:
            storage.delete(name)

    transaction.on_commit(remove_files)
    return deleted


# --- Merging duplicates -------------------------------------------------------------

# Written together or not at all: a phone and its key and extension, an email and its key.
_MERGED_TOGETHER = (("phone", "phone_e164", "phone_extension"), ("email", "email_normalized"))
_MERGE_SKIPPED = {f for group in _MERGED_TOGETHER for f in group}
# Relations where the kept contact's own row wins over the other's (a unique constraint per contact).
_MERGE_KEEPS_OWN = {ContactTag: "tag_id", ContactStage: "pipeline_id"}
# What a merge reports as moved; history, stage moves and rule runs move too, unreported.
_MERGE_MOVED_LABELS = {
    "contacts.ContactTag": "tags", "contacts.ContactStage": "pipeline stages", "contacts.Note": "notes",
    "contacts.Task": "tasks", "contacts.ContactFile": "files", "contacts.ChangeRequest": "change requests",
    "conversations.Conversation": "conversations", "forms_app.Submission": "form submissions",
}


@dataclass
class MergeResult:
    contact: Contact
    merged_id: int
    filled: dict[str, list[Any]]  # field -> [None, value taken from the other contact]
    moved: dict[str, int]  # what moved over ("notes": 3), as _MERGE_MOVED_LABELS names it


def moved_phrase(moved: Mapping[str, int]) -> str:
    """ "1 tag, 3 notes": what a merge moves (or would), each name in its number."""
    return ", ".join(f"{count} {name if count != 1 else _SINGULAR.get(name, name)}" for name, count in moved.items())


_SINGULAR = {
    "tags": "tag", "pipeline stages": "pipeline stage", "notes": "note", "tasks": "task", "files": "file",
    "change requests": "change request", "conversations": "conversation", "form submissions": "form submission",
}


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def merge_fills(keep: Contact, other: Contact) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """What merging ``other`` into ``keep`` takes from the other: {field: [None, value]}, and the merged custom values.

    The kept contact's values win; only what it lacks is filled. Used by the merge and by its preview.
    """
    filled: dict[str, list[Any]] = {}
    for group in _MERGED_TOGETHER:
        if all(_empty(getattr(keep, f)) for f in group) and not _empty(getattr(other, group[0])):
            for name in group:
                if not _empty(getattr(other, name)):
                    filled[name] = [None, getattr(other, name)]
    for name in STANDARD_FIELDS:
        if name not in _MERGE_SKIPPED and _empty(getattr(keep, name)) and not _empty(getattr(other, name)):
            filled[name] = [None, getattr(other, name)]
    custom = dict(keep.custom) if isinstance(keep.custom, dict) else {}
    for key, value in (other.custom if isinstance(other.custom, dict) else {}).items():
        if _empty(custom.get(key)) and not _empty(value):
            custom[key] = value
            filled[f"custom.{key}"] = [None, value]
    if keep.owner_id is None and other.owner_id is not None:
        filled["owner"] = [None, _as_text(other.owner)]
    return filled, custom


@transaction.atomic
def merge_contacts(*, keep: Contact, other: Contact, actor: Actor, source: str) -> MergeResult:
    """Merge ``other`` into ``keep``, which stays; ``other`` is deleted once nothing of it is left behind.

    The kept contact's values win; fields it lacks are filled from the other (a phone with its key and
    extension, an email with its key, the owner, custom values). Notes, tasks, files, conversations,
    submissions, history, stage moves and change requests move over; tags are joined; in a pipeline both
    are in, the kept contact's stage stays. Open possible-duplicate flags between the two are resolved
    by the merge, and flags with third contacts move to the kept one. The merge is recorded in the kept
    contact's history and sent as ``contact.merged``.
    """
    _check_source(source)
    if keep.pk == other.pk:
        raise InputRejected([FieldError("other", "invalid_value", "A contact cannot be merged into itself.")])
    # Locked in id order, as bulk actions lock, so two merges of the same pair cannot deadlock.
    locked = {c.pk: c for c in Contact.objects.select_for_update().filter(pk__in=[keep.pk, other.pk]).order_by("pk")}
    if len(locked) != 2:
        raise InputRejected([FieldError("other", "not_found", "One of the two contacts no longer exists.")])
    keep, other = locked[keep.pk], locked[other.pk]

    filled, custom = merge_fills(keep, other)

    moved: dict[str, int] = {}
    tags_taken = list(Tag.objects.filter(contacts=other).exclude(contacts=keep).order_by("name").values_list("name", flat=True))
    for relation in Contact._meta.related_objects:
        model, name = relation.related_model, relation.field.name
        rows = model.objects.filter(**{name: other})
        if model is PossibleDuplicate:
            continue
        if model in _MERGE_KEEPS_OWN:
            own = model.objects.filter(**{name: keep}).values(_MERGE_KEEPS_OWN[model])
            rows = rows.exclude(**{f"{_MERGE_KEEPS_OWN[model]}__in": own})
        count = rows.update(**{name: keep})
        label = _MERGE_MOVED_LABELS.get(model._meta.label)
        if count and label:
            moved[label] = count
    _move_duplicate_flags(keep=keep, other=other)

    merged_id, merged_label = other.pk, str(other)
    merged_record = " · ".join(filter(None, [f"#{other.pk}", other.name, other.phone_display, other.email, other.company]))
    # The other contact goes first: its phone and email keys are unique, and the kept one may take them.
    Contact.objects.filter(pk=other.pk).delete()
    MergedContact.objects.update_or_create(merged_id=merged_id, defaults={"contact": keep})
    now = timezone.now()
    for name, (_old, value) in filled.items():
        if name == "owner":
            keep.owner_id = other.owner_id
        elif not name.startswith("custom."):
            setattr(keep, name, value)
    keep.custom = custom
    keep.updated_at = now
    keep.last_activity_at = max(filter(None, [keep.last_activity_at, other.last_activity_at, now]))
    keep.save()
    changes = _jsonable({k: v for k, v in filled.items() if k not in ("phone_e164", "phone_extension", "email_normalized")})
    if tags_taken:
        changes["tags"] = [[], tags_taken]
    moved_text = moved_phrase(moved)
    _history(
        keep, action=HistoryEntry.Action.MERGED, actor=actor, source=source,
        # What the merged contact was, values this one kept its own of included: where both had a phone or
        # an email, the other's is not stored on the contact, so history is where it can be found again.
        changes={**changes, "merged_contact": [None, merged_record]},
        summary=f"Merged contact #{merged_id} ({merged_label}) into this one" + (f"; moved {moved_text}" if moved_text else ""),
    ).save()
    emit_event(event="contact.merged", payload=lambda: {
        **payloads.contact_event(keep, changes=changes), "merged_contact_id": merged_id,
    })
    return MergeResult(contact=keep, merged_id=merged_id, filled=filled, moved=moved)


def _move_duplicate_flags(*, keep: Contact, other: Contact) -> None:
    """Resolve the flags between the two; point the other's flags with third contacts at the kept one."""
    PossibleDuplicate.objects.filter(
        Q(contact=keep, other=other) | Q(contact=other, other=keep)
    ).delete()
    for flag in PossibleDuplicate.objects.filter(Q(contact=other) | Q(other=other)):
        pair = (keep.pk if flag.contact_id == other.pk else flag.contact_id, keep.pk if flag.other_id == other.pk else flag.other_id)
        taken = flag.status == PossibleDuplicate.Status.OPEN and PossibleDuplicate.objects.filter(
            contact_id=pair[0], other_id=pair[1], status=PossibleDuplicate.Status.OPEN
        ).exists()
        if taken:
            flag.delete()  # the kept contact already has this flag open
        else:
            PossibleDuplicate.objects.filter(pk=flag.pk).update(contact_id=pair[0], other_id=pair[1])


@transaction.atomic
def dismiss_possible_duplicate(*, flag: PossibleDuplicate, actor: Actor, source: str) -> bool:
    """Mark an open flag "not a duplicate"; return whether it was open."""
    updated = PossibleDuplicate.objects.filter(pk=flag.pk, status=PossibleDuplicate.Status.OPEN).update(
        status=PossibleDuplicate.Status.DISMISSED
    )
    if updated:
        HistoryEntry.objects.bulk_create([
            _history(flag.contact, action=HistoryEntry.Action.POSSIBLE_DUPLICATE, actor=actor, source=source,
                     changes={"possible_duplicate": [flag.other_id, None]},
                     summary=f"Marked as not a duplicate of contact #{flag.other_id}")
        ])
    return bool(updated)


# --- Change requests ----------------------------------------------------------------


@transaction.atomic
def approve_change_request(*, request: ChangeRequest, user) -> ChangeRequest:
    """Apply a pending protected-field change; refused if the value now belongs to another contact."""
    request = ChangeRequest.objects.select_for_update().get(pk=request.pk)
    if request.status != ChangeRequest.Status.PENDING:
        raise InputRejected([FieldError("status", "invalid_value", f"This request is already {request.status}.")])
    contact = Contact.objects.select_for_update().get(pk=request.contact_id)
    current = _as_text(getattr(contact, request.field))
    if current != request.old_value:
        # Asked to change a value that has changed since (another approval, an edit): applying it
        # now would overwrite a newer decision with an older one.
        raise InputRejected([FieldError(
            request.field, "stale",
            f"The {request.field} has changed since this request was made (from {request.old_value!r} to "
            f"{current!r}); reject it, or edit the contact.",
        )])
    actor = Actor.for_user(user)
    data = {request.field: request.new_value}
    update_contact(contact=contact, data=data, actor=actor, source=Source.MANUAL, protected_changes="apply")
    request.status = ChangeRequest.Status.APPROVED
    request.decided_by = user
    request.decided_at = timezone.now()
    request.save(update_fields=["status", "decided_by", "decided_at"])
    HistoryEntry.objects.bulk_create([
        _history(request.contact, action=HistoryEntry.Action.CHANGE_APPROVED, actor=actor, source=Source.MANUAL,
                 changes={request.field: [request.old_value, request.new_value]},
                 summary=f"Approved change of {request.field}")
    ])
    return request


@transaction.atomic
def reject_change_request(*, request: ChangeRequest, user, note: str = "") -> ChangeRequest:
    request = ChangeRequest.objects.select_for_update().get(pk=request.pk)
    if request.status != ChangeRequest.Status.PENDING:
        raise InputRejected([FieldError("status", "invalid_value", f"This request is already {request.status}.")])
    request.status = ChangeRequest.Status.REJECTED
    request.decided_by = user
    request.decided_at = timezone.now()
    request.decision_note = note[:255]
    request.save(update_fields=["status", "decided_by", "decided_at", "decision_note"])
    HistoryEntry.objects.bulk_create([
        _history(request.contact, action=HistoryEntry.Action.CHANGE_REJECTED, actor=Actor.for_user(user),
                 source=Source.MANUAL, changes={request.field: [request.old_value, request.new_value]},
                 summary=f"Rejected change of {request.field}")
    ])
    return request


# --- Tags --------------------------------------------------------------------------


@transaction.atomic
def add_tags(*, contact: Contact, tags: Iterable[str], actor: Actor, source: str, conversation=None) -> list[Tag]:
    """Add existing tags (never replacing others); return the ones that were new on the contact."""
    _check_source(source)
    resolved = resolve_tags(list(tags))
    new_tags = _link_new_tags(contact, resolved)
    if new_tags:
        names = [t.name for t in new_tags]
        HistoryEntry.objects.bulk_create([
            _history(contact, action=HistoryEntry.Action.TAG_ADDED, actor=actor, source=source,
                     changes={"tags": [[], names]}, summary="Tags added: " + ", ".join(names), conversation=conversation)
        ])
        _touch(contact)
        run_rules(trigger="tag_added", contact=contact, actor=actor, source=source, context={"tags": names})
        emit_event(event="contact.updated", payload=lambda: payloads.contact_event(contact, changes={"tags": [[], names]}))
    return new_tags


def _link_new_tags(contact: Contact, tags: list[Tag]) -> list[Tag]:
    """Link ``tags`` to the contact; return those this call linked, in their order.

    The database says which rows it inserted (ON CONFLICT DO NOTHING RETURNING), so two
    concurrent calls adding the same tag record it, run its rules and send its webhook once.
    """
    if not tags:
        return []
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    sql = (
        f"INSERT INTO {rawsql.table(ContactTag)} ({rawsql.column(ContactTag, 'contact')}, "
        f"{rawsql.column(ContactTag, 'tag')}, {rawsql.column(ContactTag, 'added_at')}) VALUES "
        + ", ".join(["(%s, %s, %s)"] * len(tags))
        + f" ON CONFLICT DO NOTHING RETURNING {rawsql.column(ContactTag, 'tag')}"
    )
    params = [value for tag in tags for value in (contact.pk, tag.pk, now)]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        linked = {row[0] for row in cursor.fetchall()}
    return [t for t in tags if t.pk in linked]


@transaction.atomic
def remove_tag(*, contact: Contact, tag: str | Tag, actor: Actor, source: str) -> bool:
    """Remove a tag from the contact; return whether it was there."""
    _check_source(source)
    found = tag if isinstance(tag, Tag) else resolve_tags([tag], field_name="tag")[0]
    deleted, _ = ContactTag.objects.filter(contact=contact, tag=found).delete()
    if deleted:
        HistoryEntry.objects.bulk_create([
            _history(contact, action=HistoryEntry.Action.TAG_REMOVED, actor=actor, source=source,
                     changes={"tags": [[found.name], []]}, summary=f"Tag removed: {found.name}")
        ])
        _touch(contact)
        # Receivers that mirror tags hear of removals as of additions.
        _emit_after_flush(event="contact.updated",
                          payload=lambda: payloads.contact_event(contact, changes={"tags": [[found.name], []]}))
    return bool(deleted)


# --- Stages ------------------------------------------------------------------------


@dataclass
class StageMoveResult:
    membership: ContactStage
    changed: bool
    from_stage: Stage | None


@_write_atomic
def move_to_stage(
    *, contact: Contact, pipeline: Any, stage: Any, actor: Actor, source: str, conversation=None,
    only_if_not_in_pipeline: bool = False,
    forward_only: bool = False,
) -> StageMoveResult:
    """Put the contact in ``stage`` of ``pipeline`` (names or ids); record the move with its time.

    ``forward_only`` leaves a contact already at that stage's position or further along where it
    is: an anonymous source (a public form) never sends a won customer back to "New lead".
    """
    _check_source(source)
    found_pipeline, found_stage = (
        (pipeline, stage) if isinstance(stage, Stage) else resolve_stage(pipeline=pipeline, stage=stage)
    )
    if isinstance(stage, Stage):
        found_pipeline = stage.pipeline
    now = timezone.now()
    state = _contact_state(contact)
    if state is not None:
        # An intake holds the contact's lock, so the membership read with its tags is current.
        membership = state[1].get(found_pipeline.pk)
        if membership is not None and membership.stage_id == found_stage.pk:
            membership.stage = found_stage
    else:
        # The contact's row first, as an intake takes it: locking the membership first and the
        # contact later (its touch) deadlocked with a concurrent intake on PostgreSQL.
        list(Contact.objects.select_for_update().filter(pk=contact.pk).values_list("pk", flat=True))
        membership = (
            ContactStage.objects.select_for_update().select_related("stage")
            .filter(contact=contact, pipeline=found_pipeline).first()
        )
    previous = membership.stage if membership else None
    if membership is not None and (
        only_if_not_in_pipeline or membership.stage_id == found_stage.pk
        or (forward_only and previous.position >= found_stage.position)
    ):
        return StageMoveResult(membership=membership, changed=False, from_stage=previous)
    if membership is None:
        try:
            with transaction.atomic():
                membership = ContactStage.objects.create(
                    contact=contact, pipeline=found_pipeline, stage=found_stage, entered_at=now
                )
        except IntegrityError:
            membership = ContactStage.objects.select_for_update().get(contact=contact, pipeline=found_pipeline)
            previous = membership.stage
            if (
                membership.stage_id == found_stage.pk or only_if_not_in_pipeline
                or (forward_only and previous.position >= found_stage.position)
            ):
                return StageMoveResult(membership=membership, changed=False, from_stage=previous)
    if membership.stage_id != found_stage.pk:
        # Only if it is still where it was read: an intake's membership comes with the contact's
        # lock, but from a snapshot taken before the lock wait, so another writer may have moved it.
        moved = ContactStage.objects.filter(pk=membership.pk, stage_id=membership.stage_id).update(
            stage=found_stage, entered_at=now
        )
        if not moved:
            membership = ContactStage.objects.select_for_update().select_related("stage").get(pk=membership.pk)
            previous = membership.stage
            if state is not None:
                state[1][found_pipeline.pk] = membership
            if (
                membership.stage_id == found_stage.pk or only_if_not_in_pipeline
                or (forward_only and previous.position >= found_stage.position)
            ):
                return StageMoveResult(membership=membership, changed=False, from_stage=previous)
            ContactStage.objects.filter(pk=membership.pk).update(stage=found_stage, entered_at=now)
        membership.stage = found_stage
        membership.entered_at = now
    if state is not None:
        state[1][found_pipeline.pk] = membership
    stage_change = StageChange(
        contact=contact, pipeline=found_pipeline, from_stage=previous, to_stage=found_stage, changed_at=now
    )
    if not _defer_insert(stage_change):
        stage_change.save(force_insert=True)
    _save_history([
        _history(contact, action=HistoryEntry.Action.STAGE_CHANGED, actor=actor, source=source,
                 changes={f"stage.{found_pipeline.name}": [previous.name if previous else None, found_stage.name]},
                 summary=f"{found_pipeline.name}: {previous.name if previous else '—'} → {found_stage.name}",
                 conversation=conversation)
    ])
    _touch(contact, now)
    _emit_after_flush(event="stage.changed", payload=lambda: payloads.stage_event(contact, pipeline=found_pipeline, from_stage=previous, to_stage=found_stage))
    _run_rules(trigger="stage_changed", contact=contact, actor=actor, source=source,
              context={"pipeline_id": found_pipeline.pk, "stage_id": found_stage.pk})
    if switchboard.trigger_has_rules("stage_changed"):
        # A "stage changed" rule may have moved the contact on: the result says where it is now.
        membership = ContactStage.objects.select_related("pipeline", "stage").filter(pk=membership.pk).first() or membership
    return StageMoveResult(membership=membership, changed=True, from_stage=previous)


# --- Notes ---------------------------------------------------------------------------


NOTE_MAX_CHARACTERS = 100_000


def clean_note_body(body: Any, *, field_name: str = "body") -> str:
    """Return the note as sanitized HTML; raise InputRejected naming ``field_name`` if it is none.

    The limit applies to what was sent: escaping can make the stored HTML longer.
    """
    if not isinstance(body, str):
        raise InputRejected([FieldError(field_name, "invalid_value", "Expected text or HTML.")])
    if len(body) > NOTE_MAX_CHARACTERS:
        raise InputRejected([FieldError(field_name, "invalid_value", f"At most {NOTE_MAX_CHARACTERS:,} characters.")])
    clean = clean_rich_text(body)
    if not rich_text_to_plain(clean):  # "<p></p>", "<br>": markup with nothing to read
        raise InputRejected([FieldError(field_name, "required", "The note has no readable text.")])
    return clean


@_write_atomic
def add_note(*, contact: Contact, body: str, actor: Actor, source: str, conversation=None) -> Note:
    """Store a sanitized rich-text note on the contact."""
    _check_source(source)
    clean = clean_note_body(body)
    note = Note(
        contact=contact, body=clean, source=source, author=actor.user, agent=actor.agent, conversation=conversation
    )
    if not _defer_insert(note):
        note.save(force_insert=True)
    _save_history([
        _history(contact, action=HistoryEntry.Action.NOTE_ADDED, actor=actor, source=source,
                 summary="Note added", conversation=conversation)
    ])
    _touch(contact)
    _emit_after_flush(event="note.created", payload=lambda: payloads.note_event(note))
    return note


# --- Tasks ---------------------------------------------------------------------------


def parse_due_at(value: Any, *, field_name: str = "due_at") -> dt.datetime:
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, dt.date):
        parsed = dt.datetime.combine(value, dt.time(9, 0))
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        # A date alone first: Django's parse_datetime (datetime.fromisoformat) also takes
        # "2026-12-01" and would make it midnight, not the 09:00 a due date without a time means.
        try:
            day = parse_date(text)
        except ValueError:
            day = None
        if day is not None:
            parsed = dt.datetime.combine(day, dt.time(9, 0))
        else:
            try:
                parsed = parse_datetime(text)
            except ValueError:
                parsed = None
        if parsed is None:
            raise InputRejected(
                [FieldError(field_name, "invalid_value", "Expected a date-time in ISO 8601, e.g. 2026-05-01T14:30:00Z.")]
            )
    else:
        raise InputRejected([FieldError(field_name, "required", "A task needs a due date and time.")])
    try:
        if timezone.is_naive(parsed):
            parsed = timezone.make_aware(parsed)
        # Near year 1 or 9999 an offset pushes the time past what the database can hold in UTC; and
        # PostgreSQL refuses offsets past ±15:59 that Python accepts, so the time is kept in UTC.
        parsed = parsed.astimezone(dt.UTC)
    except (OverflowError, ValueError):
        raise InputRejected(
            [FieldError(field_name, "invalid_value", "Date-time out of range; expected a date between the years 1 and 9999.")]
        ) from None
    latest = timezone.now().year + TASK_DUE_YEARS_AHEAD
    if not TASK_DUE_EARLIEST_YEAR <= parsed.year <= latest:
        # Year 1 sat at the top of everyone's Overdue list; 9999 hid a task for good. Both are typos.
        raise InputRejected([FieldError(
            field_name, "invalid_value",
            f"The year {parsed.year} looks mistyped; a task is due between {TASK_DUE_EARLIEST_YEAR} and {latest}.",
        )])
    return parsed


TASK_DUE_EARLIEST_YEAR = 2000
TASK_DUE_YEARS_AHEAD = 20


TASK_TITLE_MAX_CHARACTERS = 200


def clean_task_fields(task: Mapping[str, Any]) -> tuple[dict[str, Any], list[FieldError]]:
    """Check a task's title, due_at, assignee, priority and description; return (values, every error).

    The assignee is a user or None (create_task then takes the contact's owner).
    """
    errors: list[FieldError] = []
    raw_title = task.get("title")
    title = raw_title.strip() if isinstance(raw_title, str) else ""
    if not title:
        errors.append(FieldError("title", "required", "A task needs a title."))
    elif len(title) > TASK_TITLE_MAX_CHARACTERS:
        errors.append(FieldError("title", "invalid_value", f"At most {TASK_TITLE_MAX_CHARACTERS} characters."))
    priority = task.get("priority") or Task.Priority.NORMAL
    if isinstance(priority, str):
        priority = priority.strip().casefold()  # "HIGH" is high, as tags and stages match in any case
    if priority not in Task.Priority.values:
        errors.append(FieldError("priority", "invalid_value", "Unknown priority.", list(Task.Priority.values)))
    description = task.get("description") or ""
    if not isinstance(description, str):
        errors.append(FieldError("description", "invalid_value", "Expected text."))
        description = ""
    due = None
    try:
        due = parse_due_at(task.get("due_at"))
    except InputRejected as exc:
        errors.extend(exc.errors)
    user = None
    if task.get("assignee") not in (None, ""):
        try:
            user = resolve_user(task["assignee"], field_name="assignee")
        except InputRejected as exc:
            errors.extend(exc.errors)
    values = {"title": title, "due_at": due, "priority": priority, "description": description, "assignee": user}
    return values, errors


@_write_atomic
def create_task(
    *,
    contact: Contact,
    title: str,
    due_at: Any,
    actor: Actor,
    source: str,
    assignee: Any = None,
    priority: str = Task.Priority.NORMAL,
    description: str = "",
    conversation=None,
) -> Task:
    """Create a follow-up task on the contact; the assignee defaults to the contact's active owner, else the
    staff user writing it (agents and rules have none: the task is then unassigned)."""
    _check_source(source)
    fields, errors = clean_task_fields(
        {"title": title, "due_at": due_at, "assignee": assignee, "priority": priority, "description": description}
    )
    if errors:
        raise InputRejected(errors)
    title, due, priority, description = fields["title"], fields["due_at"], fields["priority"], fields["description"]
    # The owner only while they can work it: a task for a deactivated owner is seen by nobody. Without
    # one, a person who writes a task on a contact nobody owns is the one who will do it.
    owner = contact.owner if contact.owner is not None and contact.owner.is_active and contact.owner.is_staff else None
    user = fields["assignee"] if fields["assignee"] is not None else owner or actor.user
    task = Task(
        contact=contact, title=title, description=description or "", due_at=due, assignee=user, priority=priority,
        source=source, created_by=actor.user, agent=actor.agent, actor_label=actor.label[:160],
        conversation=conversation,
    )
    if not _defer_insert(task):
        task.save(force_insert=True)
    _save_history([
        _history(contact, action=HistoryEntry.Action.TASK_CREATED, actor=actor, source=source,
                 changes={"task": [None, title]}, summary=f"Task: {title} (due {due:%Y-%m-%d %H:%M})",
                 conversation=conversation)
    ])
    _touch(contact)
    _emit_after_flush(event="task.created", payload=lambda: payloads.task_event(task))
    return task


@transaction.atomic
def complete_task(*, task: Task, actor: Actor, source: str) -> Task:
    task = Task.objects.select_for_update().get(pk=task.pk)
    if task.status == Task.Status.DONE:
        return task
    task.status = Task.Status.DONE
    task.completed_at = timezone.now()
    task.save(update_fields=["status", "completed_at"])
    HistoryEntry.objects.bulk_create([
        _history(task.contact, action=HistoryEntry.Action.TASK_COMPLETED, actor=actor, source=source,
                 changes={"task": [task.title, "done"]}, summary=f"Task done: {task.title}")
    ])
    emit_event(event="task.completed", payload=lambda: payloads.task_event(task))
    return task


@transaction.atomic
def reopen_task(*, task: Task, actor: Actor, source: str) -> Task:
    task = Task.objects.select_for_update().get(pk=task.pk)
    if task.status == Task.Status.OPEN:
        return task
    task.status = Task.Status.OPEN
    task.completed_at = None
    task.save(update_fields=["status", "completed_at"])
    HistoryEntry.objects.bulk_create([
        _history(task.contact, action=HistoryEntry.Action.TASK_REOPENED, actor=actor, source=source,
                 changes={"task": ["done", task.title]}, summary=f"Task reopened: {task.title}")
    ])
    return task



TASK_EDITABLE_FIELDS = ("title", "due_at", "assignee", "priority", "description")


@transaction.atomic
def update_task(*, task: Task, changes: Mapping[str, Any], actor: Actor, source: str) -> Task:
    """Change a task's title, due date, assignee, priority or description, checked as a new task is.

    Only the fields that really change are written, and each lands in the contact's
    history as [before, after]; an edit that changes nothing writes nothing.
    """
    _check_source(source)
    unknown = sorted(set(changes) - set(TASK_EDITABLE_FIELDS))
    if unknown:
        raise InputRejected([
            FieldError(name, "unknown_field", "Not a field of a task that can be edited.", list(TASK_EDITABLE_FIELDS))
            for name in unknown
        ])
    task = Task.objects.select_for_update(of=("self",)).select_related("contact", "assignee").get(pk=task.pk)
    current = {name: getattr(task, name) for name in TASK_EDITABLE_FIELDS}
    fields, errors = clean_task_fields({**current, **changes})
    if errors:
        raise InputRejected(errors)
    changed = {name: [current[name], fields[name]] for name in TASK_EDITABLE_FIELDS if fields[name] != current[name]}
    if not changed:
        return task
    for name, (_before, after) in changed.items():
        setattr(task, name, after)
    task.save(update_fields=list(changed))
    shown = {
        f"task.{name}": [_task_value(before), _task_value(after)] for name, (before, after) in changed.items()
    }
    _save_history([
        _history(task.contact, action=HistoryEntry.Action.TASK_UPDATED, actor=actor, source=source,
                 changes=shown, summary=f"Task edited: {task.title}")
    ])
    return task


def _task_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if hasattr(value, "get_username"):
        return value.get_username()
    return value


@transaction.atomic
def delete_tasks(*, tasks: Iterable[Task], actor: Actor, source: str) -> int:
    """Delete tasks, leaving a line in each contact's history that says which task went and who removed it."""
    _check_source(source)
    doomed = list(Task.objects.select_for_update().select_related("contact").filter(pk__in=[t.pk for t in tasks]))
    _save_history([
        _history(task.contact, action=HistoryEntry.Action.TASK_DELETED, actor=actor, source=source,
                 changes={"task": [task.title, None]},
                 summary=f"Task deleted: {task.title} (due {timezone.localtime(task.due_at):%Y-%m-%d %H:%M}, {task.status})")
        for task in doomed
    ])
    Task.objects.filter(pk__in=[t.pk for t in doomed]).delete()
    return len(doomed)


@transaction.atomic
def delete_notes(*, notes: Iterable[Note], actor: Actor, source: str) -> int:
    """Delete notes, leaving a line in each contact's history with the start of the note's text."""
    _check_source(source)
    doomed = list(Note.objects.select_for_update().select_related("contact").filter(pk__in=[n.pk for n in notes]))
    entries = []
    for note in doomed:
        text = rich_text_to_plain(note.body)
        excerpt = text if len(text) <= 120 else text[:119] + "…"
        entries.append(_history(note.contact, action=HistoryEntry.Action.NOTE_DELETED, actor=actor, source=source,
                                changes={"note": [excerpt, None]},
                                summary=f"Note deleted (written {timezone.localtime(note.created_at):%Y-%m-%d %H:%M}): {excerpt}"))
    _save_history(entries)
    Note.objects.filter(pk__in=[n.pk for n in doomed]).delete()
    return len(doomed)


# --- Files ---------------------------------------------------------------------------


@transaction.atomic
def add_file(*, contact: Contact, upload, actor: Actor, source: str) -> ContactFile:
    """Store an uploaded file on the contact within the size and type limits from settings.

    The stored content type is the one its name and leading bytes show (contacts.uploads).
    """
    _check_source(source)
    errors: list[FieldError] = []
    if upload is None:
        raise InputRejected([FieldError("file", "required", "Choose a file to upload.")])
    limit = settings.CRM_MAX_UPLOAD_BYTES
    if upload.size > limit:
        errors.append(
            FieldError("file", "file_too_large", f"The file is {upload.size:,} bytes; the limit is {limit:,} bytes.")
        )
    allowed = list(settings.CRM_ALLOWED_UPLOAD_TYPES)
    # The type is read from the file itself: the sender's Content-Type is only a claim.
    try:
        content_type = verified_upload_type(upload)
    except UploadTypeRefused as exc:
        errors.append(FieldError("file", "unsupported_file_type", str(exc), allowed))
    else:
        if allowed and content_type not in allowed:
            errors.append(FieldError("file", "unsupported_file_type", f"Files of type {content_type} are not accepted.", allowed))
    if errors:
        raise InputRejected(errors)
    # Browsers send a quote in a file name as %22 (and a line break as %0A/%0D, per the HTML spec's
    # multipart rules): stored as sent it came back as "%22", and the download's header encoded it again.
    name = (upload.name or "file").rsplit("/", 1)[-1].replace("%22", '"').replace("%0D", "").replace("%0A", "")
    name = name.strip()[:255] or "file"
    stored = ContactFile(
        contact=contact, name=name, size=upload.size, content_type=content_type,
        uploaded_by=actor.user, agent=actor.agent, source=source,
    )
    stored.file.save(name, upload, save=False)
    stored.save()
    HistoryEntry.objects.bulk_create([
        _history(contact, action=HistoryEntry.Action.FILE_ADDED, actor=actor, source=source,
                 changes={"file": [None, name]}, summary=f"File added: {name}")
    ])
    _touch(contact)
    return stored


# --- Intake: the whole post-conversation write in one transaction ---------------------


@dataclass
class IntakeResult:
    upsert: UpsertResult
    note: Note | None
    task: Task | None
    stage: StageMoveResult | None
    conversation: Any
    completeness: dict[str, bool]


def _prefixed(errors: list[FieldError], exc: InputRejected, prefix: str) -> None:
    errors.extend(exc.prefixed(prefix).errors)


def _aim_at_linked_contact(cleaned: CleanContactInput, contact_id: int) -> None:
    """Give ``cleaned`` the linked contact's key (phone, else email), so the upsert finds that contact."""
    linked = contact_keys(contact_id)
    if linked is None:
        return
    if linked["phone_e164"]:
        cleaned.phone_e164, cleaned.phone_extension = linked["phone_e164"], linked["phone_extension"]
    elif linked["email_normalized"]:
        cleaned.email_normalized = linked["email_normalized"]


def _one_intake_transaction(func):
    """Run an intake in one transaction from its first read, with an _IntakeBatch.

    On PostgreSQL the taxonomy, the contact (locked) and its tags and stages come back in one
    statement at the start. A refused intake (an InputRejected returned, having written nothing)
    leaves the block normally and is raised after it, so a caller's transaction is not marked failed.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with transaction.atomic(savepoint=False), _batching(_IntakeBatch()):
            outcome = func(*args, **kwargs)
        if isinstance(outcome, Exception):  # InputRejected, ConversationEnded
            raise outcome
        return outcome

    return wrapper


@_one_intake_transaction
def record_intake(
    *,
    contact: Mapping[str, Any] | None,
    actor: Actor,
    source: str = Source.CHAT,
    custom: Mapping[str, Any] | None = None,
    tags: Iterable[str] | None = None,
    note: str | None = None,
    pipeline: Any = None,
    stage: Any = None,
    task: Mapping[str, Any] | None = None,
    conversation: Mapping[str, Any] | Any = None,
    validate_only: bool = False,
) -> IntakeResult | InputRejected | None:
    """Write a conversation's outcome (contact, note, tags, stage, task, transcript) all or nothing.

    Everything is validated before the first write; errors name their place in
    the payload (``contact.phone``, ``task.due_at``, ``stage``). A refusal is returned
    here and raised by the decorator once the transaction block is left. ``validate_only`` stops after
    the checks, writing nothing (None when there is nothing to refuse).
    """
    from conversations.models import Conversation
    from conversations.services import (
        ConversationEnded,
        add_messages,
        clean_messages,
        conversation_text_errors,
        get_or_create_conversation,
        link_contact,
    )

    batch = _intake_batch.get()

    _check_source(source)
    errors: list[FieldError] = []
    contact_data = dict(contact or {})
    custom_values = dict(custom or {})
    contact_custom = contact_data.pop("custom", None) or {}
    if isinstance(contact_custom, Mapping):
        for key, value in contact_custom.items():
            # Both places are accepted; two different values for one field is a question, not a choice to make.
            if key in custom_values and custom_values[key] != value:
                errors.append(FieldError(
                    f"contact.custom.{key}", "conflict",
                    f"custom.{key} and contact.custom.{key} differ ({custom_values[key]!r} and {value!r}); send one.",
                ))
        custom_values.update(contact_custom)
    else:
        errors.append(FieldError("contact.custom", "invalid_value", "Expected an object keyed by custom field key."))
    top_tags = list(tags or [])
    contact_tags = contact_data.pop("tags", None) or []
    if not isinstance(contact_tags, (list, tuple)):
        errors.append(FieldError("contact.tags", "invalid_value", "Expected a list of tag names."))
        contact_tags = []
    tag_names = top_tags + list(contact_tags)
    cleaned = None
    try:
        cleaned = clean_contact_input(contact_data, custom=None, tags=None, actor=actor, allow_owner=False)
    except InputRejected as exc:
        _prefixed(errors, exc, "contact")
    resolved_tags: list[Tag] = []
    stage_pair = None
    # An intake naming a conversation by its fields locks that conversation first, then the contact (the
    # order conversations/{id}/end takes them): its first read then must not lock the contact already.
    quick = _intake_prefetch(
        batch, cleaned, tag_names, pipeline, stage, with_custom_fields=bool(custom_values),
        lock_contacts=not (isinstance(conversation, Mapping) and conversation),
    )
    if quick is not None:
        resolved_tags, stage_pair, definitions = quick
    if custom_values:
        # Checked even when the contact's own fields are refused, so one answer lists every error.
        if quick is not None:
            custom_cleaned, custom_errors = clean_custom_values(
                dict(custom_values), definitions=definitions, agent_write=actor.is_agent
            )
        else:
            try:
                custom_cleaned, custom_errors = clean_contact_input({}, custom=custom_values, actor=actor).custom, []
            except InputRejected as exc:
                custom_cleaned, custom_errors = {}, exc.errors
        # Each error names the path in the caller's body: contact.custom.<key> for a value sent
        # in the contact (as over the API), custom.<key> for one passed apart.
        errors.extend(
            replace(e, field=f"contact.{e.field}") if e.field.partition(".")[2] in contact_custom else e
            for e in custom_errors
        )
        if cleaned is not None:
            cleaned.custom = custom_cleaned
    if cleaned is not None and not (cleaned.values.get("name") or cleaned.phone_e164 or cleaned.email_normalized):
        errors.append(FieldError("contact", "required", "Give the contact at least a name, a phone or an email."))
    if tag_names and quick is None:
        try:
            resolved_tags = resolve_tags(tag_names)
        except InputRejected:
            # Name the list each bad tag came from, as the caller wrote it.
            for names, path in ((top_tags, "tags"), (contact_tags, "contact.tags")):
                try:
                    resolve_tags(names, field_name=path)
                except InputRejected as exc:
                    errors.extend(exc.errors)
    if (pipeline not in (None, "") or stage not in (None, "")) and quick is None:
        try:
            stage_pair = resolve_stage(pipeline=pipeline, stage=stage)
        except InputRejected as exc:
            errors.extend(exc.errors)
    has_note = note not in (None, "")
    if has_note:
        try:
            clean_note_body(note, field_name="note")
        except InputRejected as exc:
            errors.extend(exc.errors)
    task_data = None
    if task:
        if not isinstance(task, Mapping):
            errors.append(FieldError("task", "invalid_value", "Expected an object with title and due_at."))
        else:
            task_data, task_errors = clean_task_fields(task)
            errors.extend(InputRejected(task_errors).prefixed("task").errors)
    conversation_obj = None
    conversation_spec = None
    messages: list[dict] = []
    if isinstance(conversation, Conversation):
        conversation_obj = conversation
    elif conversation:
        if not isinstance(conversation, Mapping):
            errors.append(FieldError("conversation", "invalid_value", "Expected an object."))
        else:
            conversation_spec = dict(conversation)
            try:
                messages = clean_messages(conversation_spec.get("messages"), prefix="conversation.messages")
            except InputRejected as exc:
                errors.extend(exc.errors)
            errors += conversation_text_errors(
                external_id=conversation_spec.get("external_id") or "", metadata=conversation_spec.get("metadata"),
                prefix="conversation",
            )
            channel = conversation_spec.get("channel") or Conversation.Channel.WEB_CHAT
            if channel not in Conversation.Channel.values:
                errors.append(FieldError("conversation.channel", "invalid_value", f"Unknown channel {channel!r}.", list(Conversation.Channel.values)))
    if errors:
        return InputRejected(errors)
    if validate_only:
        return None
    external_id = str(conversation_spec.get("external_id") or "").strip() if conversation_spec else ""
    if external_id and actor.agent is not None:
        ended = Conversation.objects.filter(
            agent=actor.agent, external_id=external_id, status=Conversation.Status.ENDED
        ).first()
        if ended is not None:  # it takes no second intake, as conversations/{id}/end answers
            return ConversationEnded(ended)
    assert cleaned is not None
    cleaned.tags = resolved_tags
    # Everything was validated above, so no savepoint: an error from here on fails the caller's transaction too.
    if conversation_spec is not None:
        conversation_obj, conversation_created = get_or_create_conversation(
            agent=actor.agent,
            external_id=str(conversation_spec.get("external_id") or ""),
            channel=conversation_spec.get("channel") or Conversation.Channel.WEB_CHAT,
            metadata=conversation_spec.get("metadata"),
        )
        # Locked before the contact, in the order conversations/{id}/end takes them (the other order
        # deadlocked the two); it also lines up retries of one intake, so each sees the transcript stored.
        conversation_obj = Conversation.objects.select_for_update().get(pk=conversation_obj.pk)
        if conversation_obj.status == Conversation.Status.ENDED:
            return ConversationEnded(conversation_obj)
        if conversation_obj.contact_id and not (cleaned.phone_e164 or cleaned.email_normalized):
            # Nothing in the intake names anyone else: it is about the caller the conversation is linked to,
            # as conversations/{id}/end has it (this made a keyless second contact and moved the conversation).
            _aim_at_linked_contact(cleaned, conversation_obj.contact_id)
        add_messages(conversation=conversation_obj, messages=messages, transcript=not conversation_created)
    upsert = upsert_contact(
        data={}, actor=actor, source=source, cleaned=cleaned, conversation=conversation_obj
    )
    person = upsert.contact
    if conversation_obj is not None:
        link_contact(conversation=conversation_obj, contact=person, actor=actor, source=source)
    note_obj = (
        add_note(contact=person, body=note, actor=actor, source=source, conversation=conversation_obj)
        if has_note else None
    )
    stage_result = (
        move_to_stage(contact=person, pipeline=stage_pair[0], stage=stage_pair[1], actor=actor, source=source,
                      conversation=conversation_obj)
        if stage_pair else None
    )
    task_obj = (
        create_task(
            contact=person, title=task_data["title"], due_at=task_data["due_at"], actor=actor, source=source,
            assignee=task_data.get("assignee"), priority=task_data.get("priority", Task.Priority.NORMAL),
            description=task_data.get("description", ""), conversation=conversation_obj,
        )
        if task_data else None
    )
    state = batch.state.get(person.pk)
    completeness = intake_completeness(
        person, note=note_obj, task=task_obj,
        has_tags=True if cleaned.tags else (False if upsert.created else (bool(state[0]) if state else None)),
        has_stage=True if stage_pair else (False if upsert.created else (bool(state[1]) if state else None)),
    )
    batch.flush()
    return IntakeResult(
        upsert=upsert, note=note_obj, task=task_obj, stage=stage_result, conversation=conversation_obj,
        completeness=completeness,
    )


@contextlib.contextmanager
def _batching(batch: _IntakeBatch):
    token = _intake_batch.set(batch)
    try:
        yield batch
    finally:
        _intake_batch.reset(token)


def _resolve_taxonomy(
    tag_names: list, pipeline: Any, stage: Any, *, with_custom_fields: bool = False,
) -> tuple[list[Tag], tuple[Pipeline, Stage] | None, dict[str, CustomField]] | None:
    """Resolve an intake's tags, stage and custom field definitions in one query.

    None sends the caller to resolve_tags/resolve_stage, which also explain what is wrong.
    """
    query = _TaxonomyQuery.build(tag_names, pipeline, stage, with_custom_fields=with_custom_fields)
    if query is None:
        return None
    if not query.sql:
        return [], None, {}
    return query.result(rawsql.fetch(query.sql, query.params))


@dataclass
class _TaxonomyQuery:
    sql: str
    params: list[Any]
    wanted: dict[str, str]
    want_stage: bool

    @classmethod
    def build(cls, tag_names: list, pipeline: Any, stage: Any, *, with_custom_fields: bool) -> _TaxonomyQuery | None:
        if not all(isinstance(t, str) and t.strip() for t in tag_names):
            return None
        wanted = {t.strip().casefold(): t.strip() for t in tag_names}
        want_stage = pipeline not in (None, "") or stage not in (None, "")
        if want_stage and (pipeline in (None, "") or stage in (None, "")):
            return None
        # Every branch names its columns: the intake prefetch reads them as JSON.
        selects: list[str] = []
        params: list[Any] = []
        if wanted:
            selects.append(
                f"SELECT 't' AS kind, id AS pk, name AS name, 0 AS num, '' AS text, '' AS extra FROM {rawsql.table(Tag)} "
                f"WHERE LOWER(name) IN ({', '.join(['%s'] * len(wanted))})"
            )
            params += [w.lower() for w in wanted.values()]
        if with_custom_fields:
            # Every definition: an unknown key's error lists the writable ones.
            selects.append(
                f"SELECT 'c' AS kind, id AS pk, {rawsql.column(CustomField, 'key')} AS name, "
                f"CAST(allow_for_ai AS integer) AS num, type AS text, CAST(choices AS text) AS extra "
                f"FROM {rawsql.table(CustomField)}"
            )
        if want_stage:
            # Digits may be an id or a name ("5"): both are looked up, and when they name two
            # different stages the query answers none and resolve_stage decides (the name wins).
            conditions = []
            for value, by_id, by_name in ((pipeline, "s.pipeline_id", "LOWER(p.name)"), (stage, "s.id", "LOWER(s.name)")):
                if isinstance(value, bool) or not isinstance(value, (int, str)):
                    return None
                raw = str(value).strip()
                if isinstance(value, int):
                    if abs(value) >= 2**63:
                        return None
                    conditions.append(f"{by_id} = %s")
                    params.append(value)
                elif raw.isdigit() and len(raw) < 18:
                    conditions.append(f"({by_id} = %s OR {by_name} = %s)")
                    params.extend([int(raw), raw])
                else:
                    conditions.append(f"{by_name} = %s")
                    params.append(raw.lower())
            selects.append(
                f"SELECT 's' AS kind, s.id AS pk, s.name AS name, s.pipeline_id AS num, p.name AS text, '' AS extra "
                f"FROM {rawsql.table(Stage)} s JOIN {rawsql.table(Pipeline)} p ON p.id = s.pipeline_id "
                f"WHERE {' AND '.join(conditions)}"
            )
        return cls(sql=" UNION ALL ".join(selects), params=params, wanted=wanted, want_stage=want_stage)

    def result(self, rows) -> tuple[list[Tag], tuple[Pipeline, Stage] | None, dict[str, CustomField]] | None:
        tags: dict[str, Tag] = {}
        stages: list[Stage] = []
        definitions: dict[str, CustomField] = {}
        for kind, pk, name, number_value, text_value, extra in rows:
            if kind == "t":
                tags[name.casefold()] = Tag(pk=pk, name=name)
            elif kind == "s":
                stages.append(Stage(pk=pk, name=name, pipeline=Pipeline(pk=number_value, name=text_value)))
            else:
                choices = extra if isinstance(extra, list) else json.loads(extra or "[]")
                definitions[name] = CustomField(
                    pk=pk, key=name, allow_for_ai=bool(number_value), type=text_value, choices=choices
                )
        if set(self.wanted) - set(tags) or (self.want_stage and len(stages) != 1):
            return None
        ordered = [tags[key] for key in self.wanted]
        return ordered, ((stages[0].pipeline, stages[0]) if self.want_stage else None), definitions


def _intake_prefetch(
    batch: _IntakeBatch, cleaned: CleanContactInput | None, tag_names: list, pipeline: Any, stage: Any, *,
    with_custom_fields: bool, lock_contacts: bool = True,
) -> tuple[list[Tag], tuple[Pipeline, Stage] | None, dict[str, CustomField]] | None:
    """_resolve_taxonomy, and on PostgreSQL in the same statement the contacts holding the intake's
    phone or email, locked, with their tags and stages: what the upsert and the stage move read next.

    Without ``lock_contacts`` only the taxonomy is read; the upsert then finds and locks the contact itself."""
    phone_e164 = cleaned.phone_e164 if cleaned is not None else ""
    email_normalized = cleaned.email_normalized if cleaned is not None else ""
    if connection.vendor != "postgresql" or not (phone_e164 or email_normalized) or not lock_contacts:
        return _resolve_taxonomy(tag_names, pipeline, stage, with_custom_fields=with_custom_fields)
    query = _TaxonomyQuery.build(tag_names, pipeline, stage, with_custom_fields=with_custom_fields)
    locked_sql = _contacts_by_keys_sql(bool(phone_e164), bool(email_normalized), True)
    taxonomy = (
        f"(SELECT json_agg(json_build_array(t.kind, t.pk, t.name, t.num, t.text, t.extra)) FROM ({query.sql}) t)"
        if query is not None and query.sql else "NULL"
    )
    tag_link, membership = rawsql.table(ContactTag), rawsql.table(ContactStage)
    sql = (
        f"WITH locked AS MATERIALIZED ({locked_sql.replace('SELECT ', 'SELECT c.id AS locked_id, ', 1)}) "
        f"SELECT {taxonomy}, "
        f"ARRAY(SELECT tag_id FROM {tag_link} WHERE contact_id = l.locked_id), "
        f"(SELECT json_agg(json_build_array(id, pipeline_id, stage_id, entered_at)) FROM {membership} "
        f"WHERE contact_id = l.locked_id), l.* "
        f"FROM (SELECT 1) AS one LEFT JOIN locked l ON true ORDER BY l.locked_id"
    )
    keys = [k for k in (phone_e164, email_normalized) if k]
    # Placeholders in text order: the CTE's keys, then the taxonomy's values.
    rows = rawsql.fetch(sql, [*keys, *(query.params if query is not None and query.sql else [])])
    contacts = []
    split = 4 + len(rawsql.columns(Contact).columns)
    for row in rows:
        if row[3] is None:
            continue
        contact = _contact_from_row(row[4:], split - 4)
        memberships = {}
        for pk, pipeline_id, stage_id, entered_at in row[2] or []:
            memberships[pipeline_id] = ContactStage(
                pk=pk, contact=contact, pipeline_id=pipeline_id, stage_id=stage_id, entered_at=parse_datetime(entered_at),
            )
        batch.state[contact.pk] = (set(row[1] or []), memberships)
        contacts.append(contact)
    batch.locked = ((phone_e164, email_normalized), contacts)
    if query is None:
        return None
    if not query.sql:
        return [], None, {}
    return query.result(rows[0][0] or [])


def intake_completeness(
    contact: Contact, *, note: Note | None, task: Task | None,
    has_tags: bool | None = None, has_stage: bool | None = None,
) -> dict[str, bool]:
    """Say which parts of a clean record the contact now has: fields, note, tags, stage, task.

    ``has_tags``/``has_stage`` let a caller that already knows skip the lookups.
    """
    fields = bool(contact.name and (contact.phone_e164 or contact.email_normalized))
    if has_tags is None or has_stage is None:
        found = Contact.objects.filter(pk=contact.pk).values(
            t=Exists(ContactTag.objects.filter(contact=OuterRef("pk"))),
            s=Exists(ContactStage.objects.filter(contact=OuterRef("pk"))),
        ).first() or {"t": False, "s": False}
        has_tags = found["t"] if has_tags is None else has_tags
        has_stage = found["s"] if has_stage is None else has_stage
    parts = {"fields": fields, "note": note is not None, "tags": has_tags, "stage": has_stage, "task": task is not None}
    parts["clean"] = all(parts.values())
    return parts


# --- Saved views and bulk actions of the web UI (issue 5) ------------------------------

BULK_ACTION_LIMIT = 5_000
BULK_ACTIONS = ("assign_owner", "add_tag", "remove_tag", "move_stage")


@transaction.atomic
def save_view(*, owner, name: str, query: str, shared: bool = False) -> SavedView:
    """Save (or overwrite, by name) one of ``owner``'s contact-list views."""
    name = (name or "").strip()
    errors: list[FieldError] = []
    if not name:
        errors.append(FieldError("name", "required", "Give the view a name."))
    elif len(name) > 80:
        errors.append(FieldError("name", "invalid_value", f"A view's name has at most 80 characters (this one has {len(name):,})."))
    elif problem := control_character_problem(name):
        errors.append(FieldError("name", "invalid_value", f"The view's name: {problem[0].lower()}{problem[1:]}"))
    if len(query or "") > 4000:
        errors.append(FieldError("query", "invalid_value",
                                 f"The filters are too long to save ({len(query):,} characters; at most 4,000)."))
    if errors:
        raise InputRejected(errors)
    view = SavedView.objects.select_for_update().filter(owner=owner, name__iexact=name).first()
    if view is None:
        return SavedView.objects.create(owner=owner, name=name, query=query or "", shared=shared)
    view.query, view.shared = query or "", shared
    view.save(update_fields=["query", "shared", "updated_at"])
    return view


@transaction.atomic
def delete_saved_view(*, view: SavedView, user) -> None:
    """Delete a saved view; only its owner (or a superuser) may."""
    if view.owner_id != user.pk and not user.is_superuser:
        raise InputRejected([FieldError("view", "forbidden", "Only the owner can delete this view.")])
    view.delete()


@transaction.atomic
def bulk_apply(*, contacts: Iterable[Contact], action: str, value: Any, actor: Actor, source: str) -> int:
    """Apply one action to many contacts, all or nothing, in set-based writes; return how many changed."""
    _check_source(source)
    if action not in BULK_ACTIONS:
        raise InputRejected([FieldError("action", "invalid_value", "Unknown bulk action.", list(BULK_ACTIONS))])
    targets = list(contacts)
    if len(targets) > BULK_ACTION_LIMIT:
        raise InputRejected([FieldError(
            "contacts", "too_many", f"{len(targets):,} contacts selected; a bulk action takes at most {BULK_ACTION_LIMIT:,}. Narrow the filter."
        )])
    # Set-based: a fixed number of queries per action whatever the selection size.
    # History, rules and webhooks match the single-contact services (rules and
    # webhooks cost nothing when none are configured, see automations.switchboard).
    # The contacts are locked first, in id order, and their tags, stages and owners read after:
    # two people applying the same action at once then see each other's work, and a contact
    # is tagged, moved, recorded and handed to the rules once (it was once per request, and a
    # concurrent move to a new pipeline was a duplicate-key 500).
    locked = {
        row["pk"]: row["owner_id"]
        for row in Contact.objects.select_for_update().filter(pk__in=[c.pk for c in targets])
        .order_by("pk").values("pk", "owner_id")
    }
    targets = [c for c in targets if c.pk in locked]
    for contact in targets:
        contact.owner_id = locked[contact.pk]
    now = timezone.now()
    if action == "assign_owner":
        owner = resolve_user(value) if value not in (None, "", "none") else None
        owner_id = owner.pk if owner else None
        moved = [c for c in targets if c.owner_id != owner_id]
        if not moved:
            return 0
        previous = dict(
            get_user_model().objects.filter(pk__in={c.owner_id for c in moved if c.owner_id})
            .values_list("pk", "username")
        )
        Contact.objects.filter(pk__in=[c.pk for c in moved]).update(owner=owner, updated_at=now)
        entries = []
        for contact in moved:
            change = {"owner": [previous.get(contact.owner_id, ""), _as_text(owner)]}
            contact.owner, contact.updated_at = owner, now
            entries.append(_history(contact, action=HistoryEntry.Action.UPDATED, actor=actor, source=source,
                                    changes=change, summary=f"Owner set to {_as_text(owner) or 'nobody'}"))
        HistoryEntry.objects.bulk_create(entries)
        for contact, entry in zip(moved, entries, strict=True):
            emit_event(event="contact.updated", payload=lambda c=contact, e=entry: payloads.contact_event(c, changes=e.changes))
        return len(moved)
    if action in ("add_tag", "remove_tag"):
        tag = resolve_tags([value] if value else [""], field_name="tag")[0]
        tagged = set(ContactTag.objects.filter(tag=tag, contact__in=[c.pk for c in targets]).values_list("contact_id", flat=True))
        if action == "add_tag":
            hit = [c for c in targets if c.pk not in tagged]
            ContactTag.objects.bulk_create([ContactTag(contact=c, tag=tag) for c in hit], ignore_conflicts=True)
            changes, summary = {"tags": [[], [tag.name]]}, f"Tags added: {tag.name}"
            kind = HistoryEntry.Action.TAG_ADDED
        else:
            hit = [c for c in targets if c.pk in tagged]
            ContactTag.objects.filter(tag=tag, contact__in=[c.pk for c in hit]).delete()
            changes, summary = {"tags": [[tag.name], []]}, f"Tag removed: {tag.name}"
            kind = HistoryEntry.Action.TAG_REMOVED
        if not hit:
            return 0
        Contact.objects.filter(pk__in=[c.pk for c in hit]).update(last_activity_at=now, updated_at=now)
        HistoryEntry.objects.bulk_create(
            [_history(c, action=kind, actor=actor, source=source, changes=changes, summary=summary) for c in hit]
        )
        for contact in hit:
            if action == "add_tag":
                run_rules(trigger="tag_added", contact=contact, actor=actor, source=source, context={"tags": [tag.name]})
            emit_event(event="contact.updated", payload=lambda c=contact: payloads.contact_event(c, changes=changes))
        return len(hit)
    stage = Stage.objects.select_related("pipeline").filter(pk=value).first() if str(value or "").isdigit() else None
    if stage is None:
        message = f"There is no stage {str(value)[:20]!r} (deleted, or never was); choose one of the list's stages." if value else "Choose a stage."
        raise InputRejected([FieldError("stage", "unknown_stage", message, [
            f"{s.pipeline.name} → {s.name}" for s in Stage.objects.select_related("pipeline").order_by("pipeline__position", "position")
        ])])
    pipeline = stage.pipeline
    current = {
        m.contact_id: m
        for m in ContactStage.objects.select_related("stage").filter(pipeline=pipeline, contact__in=[c.pk for c in targets])
    }
    hit = [c for c in targets if c.pk not in current or current[c.pk].stage_id != stage.pk]
    if not hit:
        return 0
    existing = [c.pk for c in hit if c.pk in current]
    ContactStage.objects.filter(pipeline=pipeline, contact__in=existing).update(stage=stage, entered_at=now)
    ContactStage.objects.bulk_create(
        [ContactStage(contact=c, pipeline=pipeline, stage=stage, entered_at=now) for c in hit if c.pk not in current]
    )
    StageChange.objects.bulk_create([
        StageChange(contact=c, pipeline=pipeline, from_stage=current[c.pk].stage if c.pk in current else None,
                    to_stage=stage, changed_at=now)
        for c in hit
    ])
    Contact.objects.filter(pk__in=[c.pk for c in hit]).update(last_activity_at=now, updated_at=now)
    entries = []
    for contact in hit:
        before = current[contact.pk].stage.name if contact.pk in current else None
        entries.append(_history(
            contact, action=HistoryEntry.Action.STAGE_CHANGED, actor=actor, source=source,
            changes={f"stage.{pipeline.name}": [before, stage.name]},
            summary=f"{pipeline.name}: {before or '—'} → {stage.name}",
        ))
    HistoryEntry.objects.bulk_create(entries)
    for contact in hit:
        previous = current[contact.pk].stage if contact.pk in current else None
        emit_event(event="stage.changed", payload=lambda c=contact, p=previous: payloads.stage_event(
            c, pipeline=pipeline, from_stage=p, to_stage=stage))
        run_rules(trigger="stage_changed", contact=contact, actor=actor, source=source,
                  context={"pipeline_id": pipeline.pk, "stage_id": stage.pk})
    return len(hit)

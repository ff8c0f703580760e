"""Writes for conversations and messages; idempotent by the agent platform's ids."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from automations import payloads
from automations.services import run_rules
from automations.webhooks import emit_event
from contacts.models import Contact, HistoryEntry, Source
from contacts.selectors import contact_keys, missing_contact_message
from contacts.services import clean_note_body, record_intake
from conversations.models import Conversation, Message
from crm_hub.actors import Actor
from crm_hub.errors import FieldError, InputRejected
from crm_hub.unstorable import MESSAGES as UNSTORABLE_MESSAGES
from crm_hub.unstorable import unstorable_text

MAX_MESSAGES_PER_CALL = 500
MAX_MESSAGE_CHARS = 20_000


def _text_error(field_name: str, value: Any, *, code: str | None = None) -> FieldError | None:
    """A FieldError for text in ``value`` that cannot be stored; ``code`` overrides the specific one."""
    found = unstorable_text(value, field_name)
    if found is None:
        return None
    path, reason = found
    message = UNSTORABLE_MESSAGES[reason]
    if code is not None and path != field_name:
        message = f"{message[:-1]} (at {path})."
    return FieldError(field_name, code or reason, message)


def conversation_text_errors(*, external_id: Any = "", metadata: Any = None, prefix: str = "") -> list[FieldError]:
    """Return errors for a conversation's external_id and metadata holding text no database can store.

    Call it before the transaction that writes the conversation: get_or_create_conversation checks again
    as a last guard, but an error raised there fails every transaction around it.
    """
    at = f"{prefix}." if prefix else ""
    found = (
        _text_error(f"{at}external_id", external_id, code="invalid_value"),
        _text_error(f"{at}metadata", metadata, code="invalid_value"),
    )
    return [error for error in found if error is not None]


def _parse_time(value: Any, *, field_name: str) -> dt.datetime:
    """Return an aware date-time, or raise InputRejected: invalid_value if it does not parse, overflow if out of range."""
    if value in (None, ""):
        return timezone.now()
    if isinstance(value, dt.datetime):
        parsed = value
    else:
        try:
            parsed = parse_datetime(str(value))
        except ValueError:
            parsed = None
        if parsed is None:
            raise InputRejected([FieldError(field_name, "invalid_value", "Expected a date-time in ISO 8601.")])
    try:
        parsed = timezone.make_aware(parsed) if timezone.is_naive(parsed) else parsed
        # Near year 1 or 9999 an offset pushes the time out of range in UTC (as it is stored) or in the display
        # time zone (as the API and pages show it): stored anyway, every later read of it would be a 500.
        # The code is DRF's DateTimeField's for the same refusal, as POST conversations answers it.
        parsed.astimezone(dt.UTC)
        parsed.astimezone(timezone.get_default_timezone())
    except (OverflowError, ValueError):
        raise InputRejected(
            [FieldError(field_name, "overflow", "Date-time out of range; expected a date between the years 1 and 9999.")]
        ) from None
    return parsed


# Chat-completion transcripts name the two sides "user" and "assistant"; an agent may send them as they are.
ROLE_ALIASES = {"user": "visitor", "assistant": "agent"}


def clean_messages(messages: Iterable[Mapping[str, Any]] | None, *, prefix: str = "messages") -> list[dict]:
    """Validate messages; raise InputRejected naming each bad one by index."""
    if messages is None:
        return []
    if not isinstance(messages, (list, tuple)):
        raise InputRejected([FieldError(prefix, "invalid_value", "Expected a list of messages.")])
    if len(messages) > MAX_MESSAGES_PER_CALL:
        raise InputRejected([FieldError(prefix, "invalid_value", f"At most {MAX_MESSAGES_PER_CALL} messages per call.")])
    cleaned, errors = [], []
    roles = list(Message.Role.values)
    for index, item in enumerate(messages):
        path = f"{prefix}.{index}"
        if not isinstance(item, Mapping):
            errors.append(FieldError(path, "invalid_value", "Expected an object with role and content."))
            continue
        role = item.get("role")
        role = ROLE_ALIASES.get(role, role) if isinstance(role, str) else role
        content = item.get("content")
        if role not in roles:
            errors.append(FieldError(f"{path}.role", "invalid_value" if role else "required", "Unknown role.", roles))
        if not isinstance(content, str) or not content.strip():
            errors.append(FieldError(f"{path}.content", "required", "A message needs text content."))
        elif len(content) > MAX_MESSAGE_CHARS:
            errors.append(FieldError(f"{path}.content", "invalid_value", f"At most {MAX_MESSAGE_CHARS} characters."))
        elif error := _text_error(f"{path}.content", content):
            errors.append(error)
        try:
            # Left unset until the message is stored (add_messages): stamped here, before the call waited
            # for the conversation's lock, a concurrent call's later messages sorted before earlier ones.
            sent_at = _parse_time(item["sent_at"], field_name=f"{path}.sent_at") if item.get("sent_at") not in (None, "") else None
        except InputRejected as exc:
            errors.extend(exc.errors)
            sent_at = None
        external_id = str(item.get("external_id") or "").strip()[:200]
        if error := _text_error(f"{path}.external_id", external_id):
            errors.append(error)
        cleaned.append({"role": role, "content": content, "sent_at": sent_at, "external_id": external_id})
    if errors:
        raise InputRejected(errors)
    return cleaned


def get_or_create_conversation(
    *,
    agent,
    external_id: str = "",
    channel: str = Conversation.Channel.WEB_CHAT,
    started_at: Any = None,
    metadata: Mapping | None = None,
) -> tuple[Conversation, bool]:
    """Return the agent's conversation with ``external_id``, creating it once even under concurrent calls."""
    if channel not in Conversation.Channel.values:
        raise InputRejected(
            [FieldError("channel", "invalid_value", f"Unknown channel {channel!r}.", list(Conversation.Channel.values))]
        )
    external_id = (external_id or "").strip()
    if len(external_id) > 200:
        raise InputRejected([FieldError("external_id", "invalid_value", "At most 200 characters.")])
    # Callers check these before their transaction opens (start_conversation does); this is the last guard
    # before the row is written, for any caller that did not.
    text_errors = conversation_text_errors(external_id=external_id, metadata=metadata)
    if text_errors:
        raise InputRejected(text_errors)
    started = _parse_time(started_at, field_name="started_at")
    if external_id:
        existing = Conversation.objects.filter(agent=agent, external_id=external_id).first()
        if existing is not None:
            return existing, False
    try:
        with transaction.atomic():
            conversation = Conversation.objects.create(
                agent=agent, external_id=external_id, channel=channel, started_at=started, metadata=dict(metadata or {})
            )
        return conversation, True
    except IntegrityError:
        return Conversation.objects.get(agent=agent, external_id=external_id), False


def add_messages(*, conversation: Conversation, messages: list[dict], transcript: bool = False) -> list[Message]:
    """Append cleaned messages and return those stored; one resent with a known external_id is not stored twice.

    ``transcript``: the messages are the conversation so far, from its start (an intake's, a repeated
    create-or-fetch's), so those the conversation already begins with are not stored again (see
    _stored_prefix_length). Without ids, a retried intake stored the whole transcript twice.
    Storing any bumps the conversation's updated_at, however the messages came.
    """
    if transcript and messages:
        messages = messages[_stored_prefix_length(conversation, messages):]
    if not messages:
        return []
    now = timezone.now()
    messages = [m if m["sent_at"] is not None else {**m, "sent_at": now} for m in messages]
    for _attempt in range(3):
        fresh = [Message(conversation=conversation, **m) for m in _unseen(conversation, messages)]
        try:
            # No ignore_conflicts: it would leave the stored rows without ids.
            with transaction.atomic():
                Message.objects.bulk_create(fresh)
        except IntegrityError:
            # A concurrent resend stored one of these between our read and our insert: read again.
            continue
        if fresh:
            conversation.save(update_fields=["updated_at"])
        return fresh
    raise IntegrityError("messages kept colliding with concurrent inserts")


def _unseen(conversation: Conversation, messages: list[dict]) -> list[dict]:
    """``messages`` without those whose external_id is stored already or repeats an earlier one of them."""
    known = _known_external_ids(conversation, messages)
    fresh, seen = [], set()
    for m in messages:
        key = m["external_id"]
        if key and (key in known or key in seen):
            continue
        seen.add(key)
        fresh.append(m)
    return fresh


def _would_store(conversation: Conversation, messages: list[dict], *, transcript: bool) -> bool:
    """Whether add_messages would store any of ``messages`` (a resend of what is stored would store none)."""
    if transcript and messages:
        messages = messages[_stored_prefix_length(conversation, messages):]
    return bool(messages) and bool(_unseen(conversation, messages))


def link_contact(*, conversation: Conversation, contact: Contact, actor: Actor, source: str) -> bool:
    """Link the conversation to ``contact``; a relink is recorded on both contacts' history."""
    if conversation.contact_id == contact.pk:
        return False
    previous_id = conversation.contact_id
    conversation.contact = contact
    conversation.save(update_fields=["contact", "updated_at"])
    label = f"{conversation.get_channel_display()} conversation {conversation.external_id or conversation.pk}"
    entries = [
        HistoryEntry(
            contact=contact, action=HistoryEntry.Action.CONVERSATION, source=source,
            changes={"conversation": [previous_id, conversation.pk]},
            summary=f"{label} linked" + (f" (moved from contact #{previous_id})" if previous_id else ""),
            actor_user=actor.user, actor_agent=actor.agent, actor_label=actor.label[:160], conversation=conversation,
        )
    ]
    if previous_id:
        entries.append(
            HistoryEntry(
                contact_id=previous_id, action=HistoryEntry.Action.CONVERSATION, source=source,
                changes={"conversation": [conversation.pk, None]},
                summary=f"{label} moved to contact #{contact.pk}",
                actor_user=actor.user, actor_agent=actor.agent, actor_label=actor.label[:160],
                conversation=conversation,
            )
        )
    HistoryEntry.objects.bulk_create(entries)
    return True


# --- Conversation lifecycle: start, append, end ------------------------------------------------

MAX_SUMMARY_CHARS = 10_000
INTAKE_KEYS = ("contact", "note", "tags", "pipeline", "stage", "task", "custom")


class ConversationEnded(Exception):
    """The conversation is already ended: it takes no new messages and no second intake."""

    def __init__(self, conversation: Conversation):
        self.conversation = conversation
        super().__init__(
            f"Conversation #{conversation.pk} ended at {conversation.ended_at:%Y-%m-%d %H:%M:%S}; "
            "a new conversation needs an external_id of its own."
        )


@dataclass
class StartResult:
    conversation: Conversation
    created: bool
    messages_added: list[Message]


@dataclass
class AppendResult:
    conversation: Conversation
    added: list[Message]
    duplicates: int


@dataclass
class EndResult:
    conversation: Conversation
    intake: Any = None  # contacts.services.IntakeResult when a contact was written
    extraction: dict | None = None
    # The intake named no phone or email of its own and went to the contact the conversation is linked to.
    reached_by_link: bool = False


def _stored_prefix_length(conversation: Conversation, messages: list[dict]) -> int:
    """How many of ``messages``, from the first, the conversation's stored messages begin with.

    A transcript may list its messages as they arrived or as they were sent (one delivered late sits
    among earlier ones; a bot's and a tool's clocks disagree): the stored messages are compared in both
    orders, and the longer match counts. A message with an external_id is the stored one only if that
    has the same id; same role and text alone is another message ("ok" twice).
    """
    stored = Message.objects.filter(conversation=conversation).values_list("role", "content", "external_id")
    return max(
        _matching_prefix(list(stored.order_by(*order)[: len(messages)]), messages)
        for order in (("id",), ("sent_at", "id"))
    )


def _matching_prefix(stored: list[tuple[str, str, str]], messages: list[dict]) -> int:
    count = 0
    for (role, content, external_id), message in zip(stored, messages, strict=False):
        if (role, content) != (message["role"], message["content"]):
            break
        if message["external_id"] and message["external_id"] != external_id:
            break
        count += 1
    return count


def _known_external_ids(conversation: Conversation, messages: list[dict]) -> set[str]:
    ids = [m["external_id"] for m in messages if m["external_id"]]
    if not ids:
        return set()
    return set(
        Message.objects.filter(conversation=conversation, external_id__in=ids).values_list("external_id", flat=True)
    )


def _find_contact(contact_id: Any) -> Contact:
    if isinstance(contact_id, bool) or not isinstance(contact_id, (int, str)) or not str(contact_id).isdigit():
        raise InputRejected([FieldError("contact_id", "invalid_value", "Expected a contact id.")])
    contact = Contact.objects.filter(pk=int(contact_id)).first()
    if contact is None:
        raise InputRejected([FieldError("contact_id", "not_found", missing_contact_message(int(contact_id)))])
    return contact


def start_conversation(
    *,
    actor: Actor,
    source: str = Source.CHAT,
    external_id: str = "",
    channel: str = Conversation.Channel.WEB_CHAT,
    started_at: Any = None,
    metadata: Mapping | None = None,
    messages: list[Mapping[str, Any]] | None = None,
    contact_id: Any = None,
) -> StartResult:
    """Create the agent's conversation or fetch it by ``external_id``; append first messages; link a contact.

    Channel, start time and metadata are taken only when the conversation is created;
    a repeated call fetches the same row, and resent messages are stored once.
    ``contact_id`` links the conversation only while it is linked to no contact.
    """
    errors: list[FieldError] = []
    cleaned: list[dict] = []
    try:
        cleaned = clean_messages(messages)
    except InputRejected as exc:
        errors.extend(exc.errors)
    if metadata is not None and not isinstance(metadata, Mapping):
        errors.append(FieldError("metadata", "invalid_value", "Expected an object."))
    else:
        errors += conversation_text_errors(external_id=external_id, metadata=metadata)
    try:
        _parse_time(started_at, field_name="started_at")
    except InputRejected as exc:
        errors.extend(exc.errors)
    contact = None
    if contact_id not in (None, ""):
        try:
            contact = _find_contact(contact_id)
        except InputRejected as exc:
            errors.extend(exc.errors)
    if errors:
        raise InputRejected(errors)
    with transaction.atomic():
        conversation, created = get_or_create_conversation(
            agent=actor.agent, external_id=external_id, channel=channel, started_at=started_at, metadata=metadata
        )
        # The row lock orders this call's messages and link against concurrent appends and a concurrent end.
        conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
        if (cleaned and conversation.status == Conversation.Status.ENDED
                and _would_store(conversation, cleaned, transcript=not created)):
            raise ConversationEnded(conversation)
        added = add_messages(conversation=conversation, messages=cleaned, transcript=not created)
        # contact_id links a conversation that has no contact yet. A fetch (agents repeat this call on
        # every turn) never moves one: after an intake wrote to another contact, a repeated
        # contact_id would have pulled the conversation back, away from the note and task it produced.
        if contact is not None and conversation.contact_id is None:
            link_contact(conversation=conversation, contact=contact, actor=actor, source=source)
    return StartResult(conversation=conversation, created=created, messages_added=added)


def append_messages(*, conversation: Conversation, messages: list[Mapping[str, Any]]) -> AppendResult:
    """Append one or many messages; those resent with a known external_id are skipped, not stored twice."""
    cleaned = clean_messages(messages)
    if not cleaned:
        raise InputRejected([FieldError("messages", "required", "Send at least one message.")])
    with transaction.atomic():
        # The row lock orders appends against a concurrent end.
        locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
        if locked.status == Conversation.Status.ENDED and _would_store(locked, cleaned, transcript=False):
            raise ConversationEnded(locked)
        added = add_messages(conversation=locked, messages=cleaned)
    return AppendResult(conversation=locked, added=added, duplicates=len(cleaned) - len(added))


def _clean_end_options(
    *, summary: Any, intake: Any, extract: bool, extractor: str | None
) -> tuple[str | None, dict | None, str | None]:
    from conversations.extraction import EXTRACTORS, LLM, RULES, llm_configured

    errors: list[FieldError] = []
    if summary is not None and not isinstance(summary, str):
        errors.append(FieldError("summary", "invalid_value", "Expected text."))
    elif summary is not None and len(summary) > MAX_SUMMARY_CHARS:
        errors.append(FieldError("summary", "invalid_value", f"At most {MAX_SUMMARY_CHARS:,} characters."))
    elif error := _text_error("summary", summary, code="invalid_value"):
        errors.append(error)
    if intake is not None:
        if not isinstance(intake, Mapping):
            errors.append(FieldError("intake", "invalid_value", "Expected an object like the body of POST intake."))
        else:
            for key in intake:
                if key not in INTAKE_KEYS:
                    errors.append(FieldError(f"intake.{key}", "unknown_field",
                                             f"{key!r} is not part of an intake here (the conversation is this one).",
                                             list(INTAKE_KEYS)))
            # Named "intake" (the message says where): the intake path below relies on this, as the end's
            # input serializer passes the intake through as a plain object.
            if error := _text_error("intake", intake, code="invalid_value"):
                errors.append(error)
            errors.extend(_intake_shape_errors(intake))
        if extract:
            errors.append(FieldError("extract", "invalid_value", "Send either an intake payload or extract, not both."))
    if extractor is not None and not extract:
        errors.append(FieldError("extractor", "invalid_value", "Only used with extract: true."))
    if extract:
        if extractor is None:
            extractor = LLM if llm_configured() else RULES
        if extractor not in EXTRACTORS:
            errors.append(FieldError("extractor", "invalid_value", f"Unknown extractor {extractor!r}.", list(EXTRACTORS)))
        elif extractor == LLM and not llm_configured():
            errors.append(FieldError("extractor", "invalid_value",
                                     "The LLM extractor is not configured (CRM_LLM_BASE_URL is empty).", [RULES]))
    if errors:
        raise InputRejected(errors)
    return summary, (dict(intake) if intake is not None else None), (extractor if extract else None)


def _intake_shape_errors(intake: Mapping[str, Any]) -> list[FieldError]:
    """Check the containers' types, so the intake path only ever sees objects and lists where it expects them."""
    errors = []
    contact = intake.get("contact")
    expected = [("contact", contact, Mapping), ("custom", intake.get("custom"), Mapping),
                ("tags", intake.get("tags"), (list, tuple)), ("task", intake.get("task"), Mapping)]
    if isinstance(contact, Mapping):
        expected += [("contact.custom", contact.get("custom"), Mapping), ("contact.tags", contact.get("tags"), (list, tuple))]
    for name, value, kind in expected:
        if value is not None and not isinstance(value, kind):
            wanted = "an object" if kind is Mapping else "a list"
            errors.append(FieldError(f"intake.{name}", "invalid_value", f"Expected {wanted}."))
    for name in ("pipeline", "stage"):
        value = intake.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int))):
            errors.append(FieldError(f"intake.{name}", "invalid_value", "Expected a name or an id."))
    return errors


def _linked_contact(conversation: Conversation) -> tuple[dict | None, dict]:
    """Return the linked contact's row (name and keys) and the key an intake reaches it by ({} if none).

    An intake finds its contact by phone, then email; a conversation linked at start whose intake
    names nobody else (no phone, no email) is about that contact, so it gets that contact's key.
    """
    linked = contact_keys(conversation.contact_id)
    if not linked:
        return None, {}
    if linked["phone_e164"]:
        extension = f" ext. {linked['phone_extension']}" if linked["phone_extension"] else ""
        return linked, {"phone": linked["phone_e164"] + extension}
    if linked["email_normalized"]:
        return linked, {"email": linked["email_normalized"]}
    return linked, {}


def _aim_intake(conversation: Conversation, intake: dict) -> dict:
    """An explicit intake that names no phone or email writes to the contact the conversation is linked to.

    Without this, a note and tags sent for a known caller ({"contact": {"name": "Zed"}}, or no
    contact at all) made a second, keyless contact and moved the conversation to it.
    """
    contact = intake.get("contact")
    if contact is not None and not isinstance(contact, Mapping):
        return intake  # refused by record_intake, naming the field
    contact = dict(contact or {})
    if contact.get("phone") or contact.get("email"):
        return intake
    linked, key = _linked_contact(conversation)
    if linked is None:
        if not contact:
            raise InputRejected([FieldError(
                "intake.contact", "required",
                "Give the contact (at least a name, a phone or an email): this conversation is linked to no contact.",
            )])
        return intake
    if not key:
        raise InputRejected([FieldError(
            "intake.contact", "no_contact_key",
            f"This conversation is linked to contact #{conversation.contact_id}, which has no phone or email for "
            "the intake to find it by: give one in intake.contact.",
        )])
    return {**intake, "contact": {**contact, **key}}


def _intake_from_extraction(conversation: Conversation, extraction, *, note: str | None) -> dict | None:
    """Turn validated findings into intake kwargs, or None when there is nobody to write to."""
    contact = dict(extraction.contact)
    if conversation.contact_id and not (contact.get("phone") or contact.get("email")):
        # Known caller (linked at start) and nothing that identifies anyone else: the findings (a first name,
        # scores) go onto that contact, matched by its keys. A name alone never moves the conversation to a new
        # contact. (A phone or email found is written like any intake: matching another contact relinks.)
        linked, key = _linked_contact(conversation)
        if key:
            contact.update(key)
            if contact.get("name") and linked["name"] and contact["name"] != linked["name"]:
                # "I am Robert" does not rename "Robert Smith".
                extraction.drop("name", contact.pop("name"), "kept: the linked contact already has a name")
        else:
            # No key to reach the linked contact through the intake path; never create a stranger instead.
            for key, value in contact.items():
                extraction.drop(key, value, "no_contact_key: the linked contact has no phone or email to write to")
            contact = {}
    if not any(contact.get(k) for k in ("name", "phone", "email")):
        for key, value in extraction.custom.items():
            extraction.drop(f"custom.{key}", value, "no_contact: the transcript has no name, phone or email to attach it to")
        extraction.custom = {}
        return None
    return {"contact": contact, "custom": dict(extraction.custom), "note": note or None}


def prepare_extraction(
    *,
    conversation: Conversation,
    actor: Actor,
    summary: Any = None,
    intake: Any = None,
    extract: bool = False,
    extractor: str | None = None,
):
    """Run the extractor an end with these options asks for (the LLM call), outside any transaction.

    Returns the validated ``Extraction`` to pass to ``end_conversation(extracted=...)``, or None when the
    options ask for no extraction. Raises InputRejected for options ``end_conversation`` would refuse.
    """
    from conversations.extraction import run_extractor, validate_found
    from conversations.selectors import visitor_texts

    _summary, _intake, extractor = _clean_end_options(summary=summary, intake=intake, extract=extract, extractor=extractor)
    if extractor is None:
        return None
    return validate_found(run_extractor(extractor, visitor_texts(conversation)), actor=actor)


def end_conversation(
    *,
    conversation: Conversation,
    actor: Actor,
    source: str = Source.CHAT,
    summary: str | None = None,
    intake: Mapping[str, Any] | None = None,
    extract: bool = False,
    extractor: str | None = None,
    extracted=None,
) -> EndResult:
    """End the conversation, optionally writing an intake (given, or extracted from the visitor's messages).

    The intake, the link to its contact and the end are one transaction: if the
    intake is refused the conversation stays open and nothing is written. An
    extractor that calls out (the LLM) runs before that transaction opens; a caller that must open its own
    transaction first (the idempotency middleware) runs ``prepare_extraction`` before it and passes the
    result as ``extracted``.
    """
    summary, intake, extractor = _clean_end_options(summary=summary, intake=intake, extract=extract, extractor=extractor)
    if conversation.status == Conversation.Status.ENDED:
        raise ConversationEnded(conversation)
    # The summary becomes the note only when it has something to read: a blank one ("   ", "<p></p>")
    # refused the whole end with an error about a note that was never sent.
    summary_note = summary if summary and _readable_note(summary) else None
    intake_kwargs = None
    extraction_record = None
    named = None  # the contact part the intake or extraction gave, before aiming it at the linked contact
    if intake is not None:
        named = intake.get("contact") if isinstance(intake.get("contact"), Mapping) else {}
        intake_kwargs = _aim_intake(conversation, dict(intake))
        if summary_note and not intake_kwargs.get("note"):
            intake_kwargs["note"] = summary_note
    elif extractor is not None:
        found = extracted if extracted is not None else prepare_extraction(
            conversation=conversation, actor=actor, summary=summary, extract=True, extractor=extractor
        )
        named = dict(found.contact)
        intake_kwargs = _intake_from_extraction(conversation, found, note=summary_note)
        extraction_record = found.as_record()

    with transaction.atomic():
        locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
        if locked.status == Conversation.Status.ENDED:
            raise ConversationEnded(locked)
        intake_result = None
        if intake_kwargs is not None:
            try:
                intake_result = record_intake(actor=actor, source=source, conversation=locked, **intake_kwargs)
            except InputRejected as exc:
                if intake is None:
                    raise
                raise exc.prefixed("intake") from None
        now = timezone.now()
        locked.status = Conversation.Status.ENDED
        locked.ended_at = now
        fields = ["status", "ended_at", "updated_at"]
        if summary is not None:
            locked.summary = summary
            fields.append("summary")
        if extraction_record is not None:
            locked.extraction = extraction_record
            fields.append("extraction")
        locked.save(update_fields=fields)
        if locked.contact_id:
            HistoryEntry.objects.bulk_create([_ended_entry(locked, actor=actor, source=source)])
            run_rules(
                trigger="conversation_ended", contact=locked.contact, actor=actor, source=source,
                context={"conversation_id": locked.pk},
            )
        emit_event(event="conversation.ended", payload=lambda: payloads.conversation_ended_event(locked))
    reached_by_link = bool(
        conversation.contact_id and named is not None and not (named.get("phone") or named.get("email"))
        and intake_result is not None and getattr(intake_result, "upsert", None) is not None
        and intake_result.upsert.contact.pk == conversation.contact_id
    )
    return EndResult(conversation=locked, intake=intake_result, extraction=extraction_record, reached_by_link=reached_by_link)


def _readable_note(text: str) -> bool:
    try:
        clean_note_body(text)
    except InputRejected:
        return False
    return True


def _ended_entry(conversation: Conversation, *, actor: Actor, source: str) -> HistoryEntry:
    label = f"{conversation.get_channel_display()} conversation {conversation.external_id or conversation.pk}"
    extra = ""
    if conversation.extraction:
        extra = f"; extraction by {conversation.extraction.get('extractor')}"
        if conversation.extraction.get("dropped"):
            extra += f", {len(conversation.extraction['dropped'])} value(s) dropped"
    return HistoryEntry(
        contact_id=conversation.contact_id, action=HistoryEntry.Action.CONVERSATION, source=source,
        changes={"conversation_status": ["open", "ended"]}, summary=f"{label} ended{extra}"[:255],
        actor_user=actor.user, actor_agent=actor.agent, actor_label=actor.label[:160], conversation=conversation,
    )

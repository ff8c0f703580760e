"""Writes for conversations and messages; idempotent by the agent platform's ids."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from contacts.models import Contact, HistoryEntry
from conversations.models import Conversation, Message
from crm_hub.actors import Actor
from crm_hub.errors import FieldError, InputRejected

MAX_MESSAGES_PER_CALL = 500
MAX_MESSAGE_CHARS = 20_000


def _parse_time(value: Any, *, field_name: str) -> dt.datetime:
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
    return timezone.make_aware(parsed) if timezone.is_naive(parsed) else parsed


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
        content = item.get("content")
        if role not in roles:
            errors.append(FieldError(f"{path}.role", "invalid_value" if role else "required", "Unknown role.", roles))
        if not isinstance(content, str) or not content.strip():
            errors.append(FieldError(f"{path}.content", "required", "A message needs text content."))
        elif len(content) > MAX_MESSAGE_CHARS:
            errors.append(FieldError(f"{path}.content", "invalid_value", f"At most {MAX_MESSAGE_CHARS} characters."))
        try:
            sent_at = _parse_time(item.get("sent_at"), field_name=f"{path}.sent_at")
        except InputRejected as exc:
            errors.extend(exc.errors)
            sent_at = None
        external_id = str(item.get("external_id") or "").strip()[:200]
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


def add_messages(*, conversation: Conversation, messages: list[dict]) -> list[Message]:
    """Append cleaned messages; one resent with a known external_id is not stored twice."""
    if not messages:
        return []
    ids = [m["external_id"] for m in messages if m["external_id"]]
    known = set(
        Message.objects.filter(conversation=conversation, external_id__in=ids).values_list("external_id", flat=True)
    ) if ids else set()
    fresh, seen = [], set()
    for m in messages:
        key = m["external_id"]
        if key and (key in known or key in seen):
            continue
        seen.add(key)
        fresh.append(Message(conversation=conversation, **m))
    # ignore_conflicts covers a concurrent resend between our read and our insert.
    Message.objects.bulk_create(fresh, ignore_conflicts=True)
    return fresh


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

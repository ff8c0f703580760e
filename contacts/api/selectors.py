"""Reads behind the agent API's contact detail and access check."""

from __future__ import annotations

from django.db.models import Exists, OuterRef, Q, QuerySet
from django.db.models.functions import Lower

from contacts.models import Contact, ContactStage, ContactTag, CustomField, Note, Task
from conversations.models import Conversation

LAST_NOTES = 5
OPEN_TASKS = 20
RECENT_CONVERSATIONS = 5


def contacts_for_api() -> QuerySet[Contact]:
    return Contact.objects.select_related("owner").prefetch_related("tags")


def contact_detail(contact: Contact) -> dict:
    """Return what an agent needs before it answers: tags, stages, custom fields, notes, tasks, conversations."""
    definitions = {d.key: d for d in CustomField.objects.all()}
    custom_fields = []
    for key, value in (contact.custom or {}).items():
        definition = definitions.get(key)
        if definition is None:
            continue
        # null, not "", where there is no band: as the conversation endpoints say it.
        band = (definition.band_label(value) or None) if definition.type in (CustomField.Type.NUMBER, CustomField.Type.DECIMAL) else None
        custom_fields.append(
            {"key": key, "label": definition.label, "type": definition.type, "value": value, "band": band,
             "position": (definition.position, definition.pk)}
        )
    custom_fields.sort(key=lambda item: item.pop("position"))
    stages = [
        {"pipeline": m.pipeline.name, "pipeline_id": m.pipeline_id, "stage": m.stage.name, "stage_id": m.stage_id,
         "entered_at": m.entered_at}
        for m in ContactStage.objects.filter(contact=contact).select_related("pipeline", "stage").order_by("pipeline__position", "pipeline_id")
    ]
    return {
        "tags": sorted(t.name for t in contact.tags.all()),
        "stages": stages,
        "custom_fields": custom_fields,
        "last_notes": list(Note.objects.filter(contact=contact).order_by("-created_at", "-id")[:LAST_NOTES]),
        "open_tasks": list(
            Task.objects.filter(contact=contact, status=Task.Status.OPEN).select_related("assignee")
            .order_by("due_at", "id")[:OPEN_TASKS]
        ),
        "open_task_count": Task.objects.filter(contact=contact, status=Task.Status.OPEN).count(),
        "recent_conversations": list(
            Conversation.objects.filter(contact=contact).order_by("-started_at", "-id")[:RECENT_CONVERSATIONS]
        ),
    }


def access_match(*, phone_e164: str, email_normalized: str, tag: str) -> tuple[int | None, bool]:
    """Return (contact id, carries the tag) for the phone (first) or email, in one indexed query."""
    query = Q()
    if phone_e164:
        query |= Q(phone_e164=phone_e164)
    if email_normalized:
        query |= Q(email_normalized=email_normalized)
    rows = Contact.objects.filter(query)
    if tag:
        rows = rows.annotate(
            has_tag=Exists(
                ContactTag.objects.annotate(lname=Lower("tag__name")).filter(contact=OuterRef("pk"), lname=tag.lower())
            )
        ).values_list("pk", "phone_e164", "has_tag")
    else:
        rows = rows.values_list("pk", "phone_e164")
    found = list(rows[:2])
    if not found:
        return None, False
    by_phone = [r for r in found if phone_e164 and r[1] == phone_e164]
    row = (by_phone or found)[0]
    return row[0], bool(row[2]) if tag else True



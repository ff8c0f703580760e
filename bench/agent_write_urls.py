"""Bench-only URLs: the product API plus a naive intake baseline that never ships in the product.

The baseline is the same endpoint written the obvious way: the same input serializer and the same
answer (the contact record and completeness), but one ORM get_or_create / get / create per step,
one history row per step, no batching. Only the write strategy differs.
"""

from __future__ import annotations

from django.db import transaction
from django.urls import include, path
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from contacts.api.serializers import IntakeInput, contact_record
from contacts.models import (
    Contact,
    ContactStage,
    ContactTag,
    HistoryEntry,
    Note,
    Pipeline,
    Source,
    Stage,
    StageChange,
    Tag,
    Task,
)
from contacts.normalize import phone_to_e164
from contacts.sanitize import clean_rich_text


class NaiveIntakeView(APIView):
    required_scopes = {"POST": "contacts:write"}

    @extend_schema(exclude=True)
    def post(self, request):
        data = IntakeInput.clean(request.data)
        agent = request.auth
        person = data["contact"]
        with transaction.atomic():
            phone = phone_to_e164(person["phone"])
            contact, created = Contact.objects.get_or_create(
                phone_e164=phone, defaults={"name": person.get("name", ""), "phone": person["phone"], "source": Source.CHAT}
            )
            HistoryEntry.objects.create(contact=contact, action="updated", source=Source.CHAT, actor_agent=agent, actor_label=agent.name)
            for name in data.get("tags", []):
                tag = Tag.objects.get(name__iexact=name)
                _link, added = ContactTag.objects.get_or_create(contact=contact, tag=tag)
                if added:
                    HistoryEntry.objects.create(contact=contact, action="tag_added", source=Source.CHAT, actor_agent=agent, actor_label=agent.name)
            pipeline = Pipeline.objects.get(name__iexact=data["pipeline"])
            stage = Stage.objects.get(pipeline=pipeline, name__iexact=data["stage"])
            membership, new = ContactStage.objects.get_or_create(
                contact=contact, pipeline=pipeline, defaults={"stage": stage, "entered_at": timezone.now()}
            )
            if new or membership.stage_id != stage.pk:
                membership.stage = stage
                membership.save()
                StageChange.objects.create(contact=contact, pipeline=pipeline, to_stage=stage, changed_at=timezone.now())
                HistoryEntry.objects.create(contact=contact, action="stage_changed", source=Source.CHAT, actor_agent=agent, actor_label=agent.name)
            note = Note.objects.create(contact=contact, body=clean_rich_text(data["note"]), source=Source.CHAT, agent=agent)
            HistoryEntry.objects.create(contact=contact, action="note_added", source=Source.CHAT, actor_agent=agent, actor_label=agent.name)
            task = Task.objects.create(
                contact=contact, title=data["task"]["title"], due_at=parse_datetime(data["task"]["due_at"]),
                source=Source.CHAT, agent=agent,
            )
            HistoryEntry.objects.create(contact=contact, action="task_created", source=Source.CHAT, actor_agent=agent, actor_label=agent.name)
            contact.last_activity_at = timezone.now()
            contact.save()
        completeness = {
            "fields": bool(contact.name and contact.phone_e164), "note": True, "task": True,
            "tags": ContactTag.objects.filter(contact=contact).exists(),
            "stage": ContactStage.objects.filter(contact=contact).exists(),
        }
        completeness["clean"] = all(completeness.values())
        body = {
            "contact": contact_record(contact, identity_visible=False), "created": created,
            "matched_by": None if created else "phone", "possible_duplicates": [], "pending_changes": [],
            "note_id": note.pk, "task_id": task.pk, "conversation_id": None, "completeness": completeness,
        }
        return Response(body, status=201 if created else 200)


urlpatterns = [
    path("bench/naive-intake", NaiveIntakeView.as_view()),
    path("", include("crm_hub.urls")),
]

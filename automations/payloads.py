"""What webhook receivers get: plain JSON snapshots taken when the event happened."""

from __future__ import annotations

from typing import Any


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def contact_data(contact) -> dict[str, Any]:
    owner = contact.owner
    return {
        "id": contact.pk,
        "name": contact.name,
        "email": contact.email_normalized or contact.email,
        "phone": contact.phone_e164 or contact.phone,
        "company": contact.company,
        "position": contact.position,
        "source": contact.source,
        "owner": {"id": owner.pk, "username": owner.get_username()} if owner else None,
        "tags": sorted(contact.tags.values_list("name", flat=True)),
        "custom": contact.custom or {},
        "created_at": _iso(contact.created_at),
        "updated_at": _iso(contact.updated_at),
    }


# Sensitive (the API shows it only to tokens with identity:read): contact_data leaves it out,
# and so must the changes, whichever write path built them.
HIDDEN_FROM_WEBHOOKS = frozenset({"identity"})


def contact_event(contact, *, changes: dict | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"contact": contact_data(contact)}
    if changes is not None:
        payload["changes"] = {k: v for k, v in changes.items() if k not in HIDDEN_FROM_WEBHOOKS}
    return payload


def note_event(note) -> dict[str, Any]:
    return {
        "note": {"id": note.pk, "body": note.body, "source": note.source, "created_at": _iso(note.created_at)},
        "contact": {"id": note.contact_id},
    }


def task_event(task) -> dict[str, Any]:
    return {
        "task": {
            "id": task.pk,
            "title": task.title,
            "status": task.status,
            "due_at": _iso(task.due_at),
            "assignee": task.assignee.get_username() if task.assignee_id else None,
            "completed_at": _iso(task.completed_at),
        },
        "contact": {"id": task.contact_id},
    }


def stage_event(contact, *, pipeline, from_stage, to_stage) -> dict[str, Any]:
    return {
        "contact": {"id": contact.pk},
        "pipeline": {"id": pipeline.pk, "name": pipeline.name},
        "from_stage": {"id": from_stage.pk, "name": from_stage.name} if from_stage else None,
        "to_stage": {"id": to_stage.pk, "name": to_stage.name},
    }


def form_submitted_event(submission) -> dict[str, Any]:
    return {
        "form": {"id": submission.form_id, "slug": submission.form.slug, "title": submission.form.title},
        "submission": {
            "id": submission.pk,
            "version_id": submission.version_id,
            "answers": submission.answers,
            # What each answer's key means, as the form read when it was sent (answers are keyed by field id).
            "fields": [
                {"id": f.get("id"), "label": f.get("label"), "type": f.get("type"), "maps_to": f.get("maps_to") or None}
                for f in (submission.version.fields if submission.version_id else [])
            ],
            "outcome": submission.outcome,
            "created_at": _iso(submission.created_at),
        },
        "contact": contact_data(submission.contact) if submission.contact_id else None,
    }


def conversation_ended_event(conversation) -> dict[str, Any]:
    return {
        "conversation": {
            "id": conversation.pk,
            "external_id": conversation.external_id,
            "channel": conversation.channel,
            "status": conversation.status,
            "started_at": _iso(conversation.started_at),
            "ended_at": _iso(conversation.ended_at),
            "summary": conversation.summary,
            "agent": conversation.agent.name if conversation.agent_id else None,
        },
        "contact": contact_data(conversation.contact) if conversation.contact_id else None,
    }

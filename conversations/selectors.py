"""Reads of conversations shared by the API, the admin and the contact page."""

from __future__ import annotations

from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from contacts.models import Contact
from conversations.models import Conversation, Message


def _message_count() -> Coalesce:
    # A correlated subquery, not a JOIN + GROUP BY: it runs only for the rows a page returns.
    counts = (
        Message.objects.filter(conversation=OuterRef("pk"))
        .order_by()
        .values("conversation")
        .annotate(n=Count("id"))
        .values("n")
    )
    return Coalesce(Subquery(counts, output_field=IntegerField()), Value(0))


def conversation_list() -> QuerySet[Conversation]:
    """Return conversations with their agent, contact and message count, newest first."""
    return (
        Conversation.objects.select_related("agent", "contact")
        .annotate(message_count=_message_count())
        .order_by("-started_at", "-id")
    )


def conversation_detail(pk: int) -> Conversation | None:
    """Return one conversation with its messages prefetched, or None."""
    return conversation_list().prefetch_related("messages").filter(pk=pk).first()


def recent_for_contact(contact: Contact | int, limit: int = 5) -> QuerySet[Conversation]:
    """Return the contact's most recent conversations (any agent, any channel), newest first."""
    contact_id = contact if isinstance(contact, int) else contact.pk
    return conversation_list().filter(contact_id=contact_id)[:limit]


def visitor_texts(conversation: Conversation) -> list[str]:
    """Return what the visitor wrote, in order: the only text extractors read."""
    return list(
        conversation.messages.filter(role=Message.Role.VISITOR).order_by("sent_at", "id").values_list("content", flat=True)
    )

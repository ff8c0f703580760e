"""Reads shared by the web UI, the API, admin and exports."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from contacts.models import Contact, CustomField, HistoryEntry
from contacts.normalize import email_normalize_or_none, phone_to_e164_or_none


def search_contacts(queryset: QuerySet[Contact], text: str) -> QuerySet[Contact]:
    """Filter by one search box: an exact phone (any format) or email, else name/company/email prefix."""
    text = (text or "").strip()
    if not text:
        return queryset
    digits = sum(ch.isdigit() for ch in text)
    if digits >= 6:
        e164 = phone_to_e164_or_none(text)
        if e164:
            return queryset.filter(phone_e164=e164)
    if "@" in text:
        email = email_normalize_or_none(text)
        if email:
            return queryset.filter(email_normalized=email)
    lowered = text.lower()
    return queryset.filter(
        Q(name__icontains=text) | Q(company__icontains=text) | Q(email_normalized__startswith=lowered)
    )


def custom_field_definitions() -> list[CustomField]:
    return list(CustomField.objects.order_by("position", "id"))


def field_provenance(contact: Contact, field_name: str) -> HistoryEntry | None:
    """Return the history entry that last set ``field_name`` (e.g. "email", "custom.budget")."""
    for entry in contact.history.filter(changes__has_key=field_name).order_by("-created_at", "-id")[:1]:
        return entry
    return None

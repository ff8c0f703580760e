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


# --- Web UI: who sees what (issue 5) --------------------------------------------------

ADMINS_GROUP = "Admins"


def user_is_crm_admin(user) -> bool:
    """Return whether ``user`` administers the CRM: a superuser or a member of the "Admins" group."""
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    if user.is_superuser:
        return True
    cached = getattr(user, "_crm_is_admin", None)
    if cached is None:
        cached = user.groups.filter(name=ADMINS_GROUP).exists()
        user._crm_is_admin = cached
    return cached


def visible_contacts(user) -> QuerySet[Contact]:
    """Return the contacts ``user`` may see: all, or only their own for sales users when CRM_SALES_SEE_OWN_ONLY is on.

    Every web page (list, contact page, export, board, tasks) starts from this queryset, so a
    contact hidden here answers 404 everywhere.
    """
    from django.conf import settings

    queryset = Contact.objects.all()
    if user is None or not user.is_authenticated or not user.is_staff:
        return queryset.none()
    if settings.CRM_SALES_SEE_OWN_ONLY and not user_is_crm_admin(user):
        queryset = queryset.filter(owner=user)
    return queryset

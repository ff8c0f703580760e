"""Filters for GET /api/v1/contacts. Phones and emails go through the same normalizers as writes."""

from __future__ import annotations

import django_filters
from django.contrib.auth import get_user_model
from django.db.models import Q
from django.db.models.functions import Lower

from contacts.models import Contact, ContactStage, ContactTag, Source, Stage
from contacts.normalize import email_normalize_or_none, phone_to_e164_or_none
from contacts.selectors import search_contacts
from contacts.services import invalid_email_error, invalid_phone_error, resolve_tags
from crm_hub.api.filters import (
    CaseInsensitiveChoiceFilter,
    RefusesBlankFilterSet,
    UtcIsoDateTimeFilter,
)
from crm_hub.errors import FieldError, InputRejected


class ContactApiFilter(RefusesBlankFilterSet):
    refuse_blank = ("phone", "email", "q", "tag", "stage", "owner", "source", "updated_since")

    phone = django_filters.CharFilter(method="filter_phone", help_text="Phone in any format; exact match on the normalized number. Not a phone: 400 invalid_phone.")
    email = django_filters.CharFilter(method="filter_email", help_text="Email; case-insensitive exact match. Not an email: 400 invalid_email.")
    q = django_filters.CharFilter(method="filter_q", help_text="Search: a phone or email finds that contact, other text matches name, company or email prefix.")
    tag = django_filters.CharFilter(method="filter_tag", help_text="Tag name (case-insensitive); an unknown tag answers 400 unknown_tag with the allowed names.")
    stage = django_filters.CharFilter(method="filter_stage", help_text="Stage id or name (case-insensitive), in any pipeline; an unknown stage answers 400 unknown_stage.")
    owner = django_filters.CharFilter(method="filter_owner", help_text="Owner's user id, username or email; no such user: 400 invalid_value.")
    source = CaseInsensitiveChoiceFilter(choices=Source.choices, help_text="How the contact came in: chat, form, manual, import or api.")
    updated_since = UtcIsoDateTimeFilter(
        field_name="updated_at", lookup_expr="gte", help_text="Only contacts changed at or after this ISO 8601 time."
    )

    class Meta:
        model = Contact
        fields = ["phone", "email", "q", "tag", "stage", "owner", "source", "updated_since"]

    # A value that cannot match anything (a phone that is no phone, an owner who does not exist) is
    # refused, like an unknown tag or stage: to an agent an empty answer reads as "no such contact".
    def filter_phone(self, queryset, name, value):
        e164 = phone_to_e164_or_none(value)
        if not e164:
            raise InputRejected([invalid_phone_error(value)])
        return queryset.filter(phone_e164=e164)

    def filter_email(self, queryset, name, value):
        email = email_normalize_or_none(value)
        if not email:
            raise InputRejected([invalid_email_error(value)])
        return queryset.filter(email_normalized=email)

    def filter_q(self, queryset, name, value):
        return search_contacts(queryset, value)

    # An unknown tag or stage is refused with the allowed names rather than matching nobody: to
    # an agent an empty answer reads as "no such contacts", and a typo would go unnoticed.
    def filter_tag(self, queryset, name, value):
        (tag,) = resolve_tags([value], field_name="tag")
        return queryset.filter(pk__in=ContactTag.objects.filter(tag=tag).values("contact_id"))

    def filter_stage(self, queryset, name, value):
        text = value.strip()
        condition = Q(lname=text.lower())
        if text.isdigit() and len(text) < 18:
            condition |= Q(pk=int(text))
        stages = list(Stage.objects.annotate(lname=Lower("name")).filter(condition).values_list("pk", flat=True))
        if not stages:
            allowed = sorted(set(Stage.objects.values_list("name", flat=True)), key=str.casefold)
            raise InputRejected([FieldError("stage", "unknown_stage", f"No stage {text!r} in any pipeline.", allowed)])
        return queryset.filter(pk__in=ContactStage.objects.filter(stage_id__in=stages).values("contact_id"))

    def filter_owner(self, queryset, name, value):
        text = value.strip()
        users = list(get_user_model().objects.filter(
            Q(username__iexact=text) | Q(email__iexact=text) | (Q(pk=int(text)) if text.isdigit() and len(text) < 18 else Q(pk__in=[]))
        ).values_list("pk", flat=True))
        if not users:
            raise InputRejected([FieldError("owner", "invalid_value", f"No user {text!r} (give an id, username or email).")])
        return queryset.filter(owner__in=users)

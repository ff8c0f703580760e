"""Query filters for the conversation list (django-filter, never request.GET by hand)."""

import datetime as dt

import django_filters
from django import forms
from django_filters.fields import IsoDateTimeField

from conversations.models import Conversation

# Ids beyond a 64-bit integer cannot exist; SQLite would raise OverflowError on them.
MAX_ID = 2**63 - 1


class UtcIsoDateTimeField(IsoDateTimeField):
    def clean(self, value):
        parsed = super().clean(value)
        if parsed is not None:
            try:
                # Near year 1 or 9999 an offset pushes the time out of range once the database converts it to UTC.
                parsed.astimezone(dt.UTC)
            except OverflowError:
                raise forms.ValidationError("Date-time out of range.", code="invalid") from None
        return parsed


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField


class ConversationFilter(django_filters.FilterSet):
    contact = django_filters.NumberFilter(
        field_name="contact_id", min_value=1, max_value=MAX_ID, decimal_places=0,
        help_text="Only conversations linked to this contact id.",
    )
    channel = django_filters.ChoiceFilter(choices=Conversation.Channel.choices, help_text="Only this channel.")
    status = django_filters.ChoiceFilter(choices=Conversation.Status.choices, help_text="open or ended.")
    since = UtcIsoDateTimeFilter(
        field_name="started_at", lookup_expr="gte", help_text="Only conversations started at or after this ISO 8601 time."
    )
    linked = django_filters.BooleanFilter(
        field_name="contact", lookup_expr="isnull", exclude=True,
        help_text="true: linked to a contact; false: not linked (no contact could be identified yet).",
    )
    mine = django_filters.BooleanFilter(method="filter_mine", help_text="true: only conversations this agent held.")

    class Meta:
        model = Conversation
        fields = ["contact", "channel", "status", "since", "linked", "mine"]

    def filter_mine(self, queryset, name, value):
        agent = getattr(self.request, "auth", None)
        if value is None or agent is None:
            return queryset
        return queryset.filter(agent=agent) if value else queryset.exclude(agent=agent)

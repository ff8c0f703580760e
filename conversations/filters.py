"""Query filters for the conversation list (django-filter, never request.GET by hand)."""

import django_filters

from conversations.models import Conversation
from crm_hub.api.filters import (
    CaseInsensitiveChoiceFilter,
    RefusesBlankFilterSet,
    StrictBooleanFilter,
    UtcIsoDateTimeFilter,
)

# Ids beyond a 64-bit integer cannot exist; SQLite would raise OverflowError on them.
MAX_ID = 2**63 - 1


class ConversationFilter(RefusesBlankFilterSet):
    refuse_blank = ("contact", "channel", "status", "since")

    contact = django_filters.NumberFilter(
        method="filter_contact", min_value=1, max_value=MAX_ID, decimal_places=0,
        help_text="Only conversations linked to this contact id; an id no contact has is 400 invalid_value.",
    )
    channel = CaseInsensitiveChoiceFilter(choices=Conversation.Channel.choices, help_text="Only this channel.")
    status = CaseInsensitiveChoiceFilter(choices=Conversation.Status.choices, help_text="open or ended.")
    since = UtcIsoDateTimeFilter(
        field_name="started_at", lookup_expr="gte", help_text="Only conversations started at or after this ISO 8601 time."
    )
    linked = StrictBooleanFilter(
        field_name="contact", lookup_expr="isnull", exclude=True,
        help_text="true: linked to a contact; false: not linked (no contact could be identified yet).",
    )
    mine = StrictBooleanFilter(method="filter_mine", help_text="true: only conversations this agent held.")

    class Meta:
        model = Conversation
        fields = ["contact", "channel", "status", "since", "linked", "mine"]

    def filter_contact(self, queryset, name, value):
        from contacts.models import Contact
        from contacts.selectors import missing_contact_message
        from crm_hub.errors import FieldError, InputRejected

        if value is None:
            return queryset
        if not Contact.objects.filter(pk=int(value)).exists():
            # As an unknown tag or owner is refused on contacts: an empty list would read as "no conversations".
            raise InputRejected([FieldError("contact", "invalid_value", missing_contact_message(int(value)))])
        return queryset.filter(contact_id=int(value))

    def filter_mine(self, queryset, name, value):
        agent = getattr(self.request, "auth", None)
        if value is None or agent is None:
            return queryset
        return queryset.filter(agent=agent) if value else queryset.exclude(agent=agent)

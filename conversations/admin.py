"""Conversations in Django admin: read-only transcripts; writes happen through the services (API, intake)."""

from django.contrib import admin
from django.db.models import Count
from django.utils.html import format_html, format_html_join

from conversations.models import Conversation, Message

ADMIN_MESSAGES = 500


class MessageInline(admin.TabularInline):
    """The conversation's latest ADMIN_MESSAGES messages: all of a 10,000-message thread took 25 s and 14 MB."""

    model = Message
    extra = 0
    can_delete = False
    fields = ["sent_at", "role", "content", "external_id"]
    readonly_fields = fields
    ordering = ["sent_at", "id"]
    verbose_name_plural = f"Messages (the latest {ADMIN_MESSAGES}; GET /api/v1/conversations/<id> has them all)"

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        object_id = (request.resolver_match.kwargs.get("object_id") if request.resolver_match else None) or ""
        if str(object_id).isdigit():
            latest = Message.objects.filter(conversation_id=int(object_id)).order_by("-sent_at", "-id").values("pk")
            queryset = queryset.filter(pk__in=latest[:ADMIN_MESSAGES])
        return queryset

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class LinkedFilter(admin.SimpleListFilter):
    title = "linked to a contact"
    parameter_name = "linked"

    def lookups(self, request, model_admin):
        return [("yes", "Linked"), ("no", "Unlinked")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(contact__isnull=False)
        if self.value() == "no":
            return queryset.filter(contact__isnull=True)
        return queryset


def extraction_outcome(extraction: dict) -> str:
    """Return a one-line account of an extraction for lists: who ran, what was kept, dropped, failed."""
    if not extraction:
        return ""
    found = extraction.get("found") or {}
    kept = [k for k in found if k != "custom"] + [f"custom.{k}" for k in (found.get("custom") or {})]
    parts = [extraction.get("extractor", "?")]
    if extraction.get("fallback"):
        parts.append(f"fell back to {extraction['fallback']}")
    if extraction.get("error"):
        parts.append(f"error {extraction['error'].get('code')}")
    parts.append("found " + (", ".join(kept) or "nothing"))
    if extraction.get("dropped"):
        parts.append(f"{len(extraction['dropped'])} dropped")
    return "; ".join(parts)


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["__str__", "agent", "channel", "status", "contact", "message_total", "extraction_summary", "started_at"]
    list_filter = ["agent", "channel", "status", LinkedFilter]
    list_select_related = ["agent", "contact"]
    search_fields = ["external_id", "summary"]
    date_hierarchy = "started_at"
    inlines = [MessageInline]
    fields = [
        "agent", "external_id", "channel", "status", "started_at", "ended_at", "contact", "summary", "metadata",
        "extraction_details", "created_at", "updated_at",
    ]
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(message_total=Count("messages"))

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        # Viewing stays allowed (view permission); edits would bypass the services' history and checks.
        return False

    @admin.display(description="messages", ordering="message_total")
    def message_total(self, obj):
        return obj.message_total

    @admin.display(description="extraction")
    def extraction_summary(self, obj):
        return extraction_outcome(obj.extraction)

    @admin.display(description="extraction outcome")
    def extraction_details(self, obj):
        if not obj.extraction:
            return "No extraction ran."
        error = obj.extraction.get("error")
        dropped = obj.extraction.get("dropped") or []
        rows = format_html_join(
            "", "<li><code>{}</code> = <code>{}</code>: {}</li>",
            ((d.get("field"), d.get("value"), d.get("reason")) for d in dropped),
        )
        return format_html(
            "<p>{}</p>{}<p>Dropped:</p><ul>{}</ul>",
            extraction_outcome(obj.extraction),
            format_html("<p>Error: {}</p>", error.get("message")) if error else "",
            rows or format_html("<li>nothing</li>"),
        )

from django.contrib import admin

from conversations.models import Conversation, Message


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    can_delete = False
    fields = ["sent_at", "role", "content", "external_id"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["__str__", "agent", "channel", "status", "contact", "started_at"]
    list_filter = ["agent", "channel", "status"]
    raw_id_fields = ["contact"]
    inlines = [MessageInline]

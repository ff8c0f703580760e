from django.contrib import admin

from crm_hub.models import Agent


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ["name", "is_active", "token_prefix", "scopes", "rate_limit", "last_used_at", "revoked_at"]
    list_filter = ["is_active"]
    search_fields = ["name", "token_prefix"]
    readonly_fields = ["token_prefix", "token_created_at", "last_used_at", "revoked_at", "created_at"]

"""Agents in admin: a token is issued on create and on rotate, shown once in a message, stored hashed."""

from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html

from crm_hub import services
from crm_hub.errors import InputRejected
from crm_hub.models import Agent


class AgentAdminForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=Agent.Scope.choices,
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="What this agent may do; a call without the scope gets 403 naming it.",
    )

    class Meta:
        model = Agent
        fields = ["name", "description", "is_active", "scopes", "rate_limit"]


def _show_token(request, agent: Agent, token: str) -> None:
    messages.warning(
        request,
        format_html(
            "Token for <strong>{}</strong> (copy it now, it will not be shown again): <code>{}</code>",
            agent.name,
            token,
        ),
    )


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    form = AgentAdminForm
    list_display = ["name", "is_active", "token_prefix", "scopes", "rate_limit", "last_used_at", "revoked_at"]
    list_filter = ["is_active"]
    search_fields = ["name", "token_prefix"]
    readonly_fields = ["token_prefix", "token_created_at", "last_used_at", "revoked_at", "created_at"]
    actions = ["rotate_token", "revoke_token"]

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        try:
            agent, token = services.create_agent(
                name=obj.name, scopes=list(form.cleaned_data["scopes"]), description=obj.description,
                rate_limit=obj.rate_limit, is_active=obj.is_active,
            )
        except InputRejected as exc:
            # The form validated the name's uniqueness already; anything left is a scope or name rule.
            raise forms.ValidationError(str(exc)) from exc
        obj.pk = agent.pk
        obj.refresh_from_db()
        _show_token(request, agent, token)

    @admin.action(description="Issue a new token (the old one stops working)")
    def rotate_token(self, request, queryset):
        for agent in queryset:
            _show_token(request, agent, services.rotate_agent_token(agent=agent))

    @admin.action(description="Revoke the token")
    def revoke_token(self, request, queryset):
        for agent in queryset:
            services.revoke_agent_token(agent=agent)
        self.message_user(request, f"Revoked {queryset.count()} token(s).")

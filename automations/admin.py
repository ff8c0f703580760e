"""Admin for rules, teams, webhook endpoints and the delivery log.

Rules and teams are plain configuration (saved like tags and pipelines);
endpoints go through ``automations.webhooks`` because saving one checks the URL
against SSRF and creates or rotates its secret.
"""

from __future__ import annotations

import datetime as dt

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import NON_FIELD_ERRORS, PermissionDenied, ValidationError
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.text import capfirst

from automations import services, webhooks
from automations.models import (
    DeliveryAttempt,
    Rule,
    RuleRun,
    Team,
    TeamMember,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEventType,
)
from automations.ssrf import UnsafeURL, check_url
from contacts.models import Contact, Source
from contacts.selectors import search_contacts

FAILURE_NOTICE_DAYS = 7


class TeamMemberInline(admin.TabularInline):
    model = TeamMember
    extra = 1


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["name", "member_count", "turn"]
    readonly_fields = ["turn"]
    inlines = [TeamMemberInline]

    @admin.display(description="Members")
    def member_count(self, obj):
        return obj.memberships.count()


class RuleForm(forms.ModelForm):
    sources = forms.MultipleChoiceField(
        choices=Source.choices, required=False, widget=forms.CheckboxSelectMultiple,
        help_text="Only for changes from these sources; none ticked: any source.",
    )

    class Meta:
        model = Rule
        exclude: list[str] = []

    def clean(self):
        cleaned = super().clean()
        # Tags are many-to-many, so only the form sees them before the rule is saved.
        acts = (cleaned.get("assign_mode"), cleaned.get("set_stage"), cleaned.get("add_tags"), cleaned.get("task_title"),
                cleaned.get("webhook_event"))
        if not any(acts):
            raise forms.ValidationError("The rule does nothing: choose at least one action (owner, stage, tags, task or webhook).")
        return cleaned


class RuleListRowForm(forms.ModelForm):
    """One row of the rule list: its position and whether it is active.

    A rule can become invalid after it was saved (its team emptied, its endpoint disabled, its
    form deleted). Its errors name fields this row does not have, which crashed the whole list's
    save; they are shown on the row instead, and only rows that were changed are checked again.
    """

    class Meta:
        model = Rule
        fields = ["position", "active"]

    def _post_clean(self):
        if self.instance.pk and not self.has_changed():
            return
        super()._post_clean()

    def add_error(self, field, error):
        if field is None and isinstance(error, ValidationError) and hasattr(error, "error_dict"):
            kept: dict[str, list] = {}
            for name, errors in error.error_dict.items():
                if name in self.fields or name == NON_FIELD_ERRORS:
                    kept.setdefault(name, []).extend(errors)
                else:
                    label = capfirst(Rule._meta.get_field(name).verbose_name)
                    kept.setdefault(NON_FIELD_ERRORS, []).extend(
                        ValidationError(f"{label}: {message}") for e in errors for message in e.messages
                    )
            error = ValidationError(kept)
        super().add_error(field, error)


@admin.register(Rule)
class RuleAdmin(admin.ModelAdmin):
    form = RuleForm
    list_display = ["name", "position", "active", "trigger", "action_summary", "recent_failures", "try_link"]
    list_editable = ["position", "active"]
    list_filter = ["trigger", "active"]

    def get_changelist_form(self, request, **kwargs):
        return RuleListRowForm
    search_fields = ["name"]
    filter_horizontal = ["add_tags"]
    readonly_fields = ["try_link"]
    fieldsets = [
        (None, {"fields": ["name", "position", "active", "trigger", "try_link"]}),
        ("Conditions (empty ones always hold)", {
            "fields": ["sources", "form_id", "tag", "stage", "custom_field_key", "custom_field_value"],
        }),
        ("Assign owner", {"fields": ["assign_mode", "assign_user", "assign_team", "assign_only_if_unowned"]}),
        ("Starting stage", {"fields": ["set_stage", "stage_only_if_not_in_pipeline"]}),
        ("Tags", {"fields": ["add_tags"]}),
        ("Follow-up task", {"fields": ["task_title", "task_due_amount", "task_due_unit"]}),
        ("Webhook", {"fields": ["webhook_event", "webhook_endpoint"]}),
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("assign_user", "assign_team", "set_stage__pipeline")

    def get_urls(self):
        own = [path("<int:pk>/try/", self.admin_site.admin_view(self.try_view), name="automations_rule_try")]
        return own + super().get_urls()

    @admin.display(description="Actions")
    def action_summary(self, obj):
        parts = []
        if obj.assign_mode:
            parts.append(obj.get_assign_mode_display().lower())
        if obj.set_stage_id:
            parts.append(f"stage {obj.set_stage}")
        if obj.task_title:
            parts.append(f"task in {obj.task_due_amount} {obj.task_due_unit}")
        if obj.webhook_event:
            parts.append(f"webhook {obj.webhook_event}")
        return "; ".join(parts) or "tags only / nothing"

    @admin.display(description=f"Failures ({FAILURE_NOTICE_DAYS} days)")
    def recent_failures(self, obj):
        since = timezone.now() - dt.timedelta(days=FAILURE_NOTICE_DAYS)
        count = obj.runs.filter(status=RuleRun.Status.FAILED, created_at__gte=since).count()
        if not count:
            return "0"
        url = reverse("admin:automations_rulerun_changelist") + f"?rule__id__exact={obj.pk}&status__exact=failed"
        return format_html('<a href="{}" style="color:#b91c1c;font-weight:bold">{}</a>', url, count)

    @admin.display(description="What would happen")
    def try_link(self, obj):
        if not obj or not obj.pk:
            return "Save the rule first."
        return format_html('<a href="{}">Try on a contact</a>', reverse("admin:automations_rule_try", args=[obj.pk]))

    def changelist_view(self, request, extra_context=None):
        since = timezone.now() - dt.timedelta(days=FAILURE_NOTICE_DAYS)
        failed = services.failed_runs_since(since)
        count = failed.count()
        if count:
            last = failed.select_related("rule").first()
            messages.warning(
                request,
                f"{count} automation rule run(s) failed in the last {FAILURE_NOTICE_DAYS} days; the contacts were "
                f"saved without those rules' actions. Latest: {last.rule.name!r}: {last.error}",
            )
        return super().changelist_view(request, extra_context)

    def try_view(self, request, pk: int):
        rule = get_object_or_404(Rule, pk=pk)
        # admin_view only asks for staff; the page shows the rule and finds any contact by id or phone.
        if not (self.has_change_permission(request, rule) and request.user.has_perm("contacts.view_contact")):
            raise PermissionDenied
        form = TryRuleForm(request.POST or None)
        outcome = None
        if request.method == "POST" and form.is_valid():
            outcome = services.dry_run(rule=rule, contact=form.cleaned_data["contact"])
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"What would {rule.name!r} do?",
            "rule": rule,
            "form": form,
            "outcome": outcome,
        }
        return TemplateResponse(request, "admin/automations/rule/try.html", context)


class TryRuleForm(forms.Form):
    contact = forms.CharField(label="Sample contact", help_text="Its id, email, phone (any format) or name.")

    def clean_contact(self):
        text = self.cleaned_data["contact"].strip()
        contacts = Contact.objects.select_related("owner").order_by("pk")
        contact = contacts.filter(pk=int(text)).first() if text.isdigit() and len(text) < 12 else None
        if contact is None:
            contact = search_contacts(contacts, text).first()
        if contact is None:
            raise forms.ValidationError("No contact has this id, email, phone or name.")
        return contact


@admin.register(RuleRun)
class RuleRunAdmin(admin.ModelAdmin):
    list_display = ["created_at", "rule", "contact", "trigger", "status", "error"]
    list_filter = ["status", "trigger", "rule"]
    list_select_related = ["rule", "contact"]
    readonly_fields = [f.name for f in RuleRun._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class EndpointForm(forms.ModelForm):
    url = forms.URLField(max_length=500, assume_scheme="https", help_text=WebhookEndpoint._meta.get_field("url").help_text)
    events = forms.MultipleChoiceField(choices=WebhookEventType.choices, widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = WebhookEndpoint
        fields = ["url", "description", "events", "active"]

    def clean_url(self):
        url = self.cleaned_data["url"]
        try:
            check_url(url)
        except UnsafeURL as exc:
            raise forms.ValidationError(str(exc)) from exc
        return url


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = EndpointForm
    list_display = ["url", "active", "event_list", "failing_since", "disabled_notice", "created_at"]
    list_filter = ["active"]
    readonly_fields = ["failing_since", "disabled_at", "disabled_reason", "previous_secret_expires_at"]
    actions = ["rotate_secret"]

    @admin.display(description="Events")
    def event_list(self, obj):
        return ", ".join(obj.events or [])

    @admin.display(description="Disabled")
    def disabled_notice(self, obj):
        if not obj.disabled_at:
            return ""
        return format_html('<span style="color:#b91c1c">{}: {}</span>', f"{obj.disabled_at:%Y-%m-%d %H:%M}",
                           obj.disabled_reason)

    def _notify_disabled(self, request, queryset):
        for endpoint in queryset.filter(active=False, disabled_at__isnull=False):
            messages.error(
                request,
                f"Webhook endpoint {endpoint.url} was disabled on {endpoint.disabled_at:%Y-%m-%d %H:%M} UTC: "
                f"{endpoint.disabled_reason} Its pending events are kept; fix the receiver and tick Active to resume.",
            )

    def changelist_view(self, request, extra_context=None):
        if request.method == "GET":
            self._notify_disabled(request, WebhookEndpoint.objects.all())
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        if request.method == "GET":
            self._notify_disabled(request, WebhookEndpoint.objects.filter(pk=object_id))
        return super().change_view(request, object_id, form_url, extra_context)

    def save_model(self, request, obj, form, change):
        # The form already refused unsafe URLs and unknown events, so the services will not.
        data = form.cleaned_data
        if change:
            webhooks.update_endpoint(
                endpoint=obj, url=data["url"], events=data["events"], active=data["active"],
                description=data.get("description", ""),
            )
            obj.refresh_from_db()
            return
        created, secret = webhooks.create_endpoint(
            url=data["url"], events=data["events"], active=data["active"], description=data.get("description", ""),
        )
        obj.pk = created.pk
        obj.refresh_from_db()
        messages.warning(
            request, f"Signing secret for {created.url} (shown only now; store it in the receiver): {secret}"
        )

    @admin.action(description="Rotate the signing secret (old one keeps signing for a day)")
    def rotate_secret(self, request, queryset):
        for endpoint in queryset:
            secret = webhooks.rotate_secret(endpoint=endpoint)
            messages.warning(request, f"New signing secret for {endpoint.url} (shown only now): {secret}")


class AttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    fields = ["attempted_at", "status_code", "duration_ms", "response_snippet", "error"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["attempted_at", "id"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ["created_at", "event", "endpoint", "status", "attempts", "last_status_code", "next_attempt_at"]
    list_filter = ["status", "event", "endpoint"]
    list_select_related = ["endpoint"]
    search_fields = ["msg_id"]
    readonly_fields = [
        "endpoint", "event", "msg_id", "payload", "status", "attempts", "next_attempt_at", "last_status_code",
        "last_error", "delivered_at", "created_at",
    ]
    inlines = [AttemptInline]
    actions = ["redeliver"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Redeliver (same webhook-id)")
    def redeliver(self, request, queryset):
        deliveries = list(queryset.select_related("endpoint"))
        count = webhooks.redeliver(deliveries=deliveries)
        waiting = sorted({d.endpoint.url for d in deliveries if not d.endpoint.active})
        if waiting:
            # Only active endpoints are sent to: said, rather than a "queued" that never leaves.
            held = sum(1 for d in deliveries if not d.endpoint.active)
            messages.warning(request, f"{held} of the {count} event(s) go to disabled endpoints ({', '.join(waiting)}); "
                                      "they are sent once the endpoint is enabled again.")
            if count - held:
                messages.success(request, f"{count - held} event(s) queued for redelivery.")
        else:
            messages.success(request, f"{count} event(s) queued for redelivery.")


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(admin.ModelAdmin):
    """The delivery log: every attempt with its time, status code, duration and the start of the answer."""

    list_display = ["attempted_at", "delivery", "status_code", "duration_ms", "success", "error"]
    list_filter = ["success", "status_code"]
    list_select_related = ["delivery"]
    readonly_fields = [f.name for f in DeliveryAttempt._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

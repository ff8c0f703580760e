"""Forms in Django admin: browse forms, versions and submissions; open/close forms through the service.

Fields and settings are edited in the web builder (/forms/<id>/edit/), which
validates mappings and versions the fields; admin never saves a form directly.
"""

from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected
from django.contrib.admin.utils import unquote
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.html import format_html

from crm_hub.actors import Actor
from crm_hub.errors import InputRejected
from forms_app import services
from forms_app.models import Form, FormVersion, Submission
from forms_app.selectors import contact_url


class VersionInline(admin.TabularInline):
    model = FormVersion
    extra = 0
    can_delete = False
    fields = ["number", "field_count", "created_at"]
    readonly_fields = fields

    @admin.display(description="Fields")
    def field_count(self, obj):
        return len(obj.fields or [])

    def has_add_permission(self, request, obj=None):
        return False


_ANSWERED = "{names}: people answered it, so it is kept with its submissions; close it instead (Close selected forms)."


@admin.register(Form)
class FormAdmin(admin.ModelAdmin):
    list_display = ["title", "slug", "status", "views_count", "submission_total", "updated_at", "builder_link"]
    list_filter = ["status"]
    search_fields = ["title", "slug"]
    readonly_fields = [
        "title", "slug", "description", "success_message", "redirect_url", "status", "tag_names", "stage", "owner",
        "current_version", "views_count", "created_by", "created_at", "updated_at", "builder_link",
    ]
    exclude = ["tags"]
    inlines = [VersionInline]
    actions = ["open_forms", "close_forms"]

    def has_add_permission(self, request):
        return False

    # A form people answered is closed, not deleted: its submissions are the record of what they sent.
    def delete_view(self, request, object_id, extra_context=None):
        form = self.get_object(request, unquote(object_id))
        if form is not None and form.submissions.exists():
            self.message_user(request, _ANSWERED.format(names=f"“{form}”"), messages.ERROR)
            return redirect(reverse("admin:forms_app_form_change", args=[form.pk]))
        return super().delete_view(request, object_id, extra_context)

    def get_actions(self, request):
        actions = super().get_actions(request)
        if "delete_selected" in actions:
            # Same name: Django's confirmation page posts back to "delete_selected".
            actions["delete_selected"] = (FormAdmin.delete_unanswered, "delete_selected", "Delete selected forms nobody answered")
        return actions

    def delete_unanswered(self, request, queryset):
        answered = list(queryset.filter(submissions__isnull=False).distinct())
        if answered:
            self.message_user(request, _ANSWERED.format(names=", ".join(f"“{f}”" for f in answered)), messages.ERROR)
        rest = queryset.exclude(pk__in=[f.pk for f in answered])
        if rest.exists():
            return delete_selected(self, request, rest)
        return None

    @admin.display(description="Submissions")
    def submission_total(self, obj):
        return obj.submissions.count()

    @admin.display(description="Tags")
    def tag_names(self, obj):
        return ", ".join(t.name for t in obj.tags.all()) or "—"

    @admin.display(description="Builder")
    def builder_link(self, obj):
        return format_html('<a href="{}">Edit in the builder</a>', reverse("forms_app:edit", args=[obj.pk]))

    def _set_status(self, request, queryset, status):
        changed = 0
        for form in queryset:
            try:
                services.set_form_status(form=form, status=status, actor=Actor.for_user(request.user))
                changed += 1
            except InputRejected as exc:
                self.message_user(request, f"{form}: {exc}", messages.ERROR)
        self.message_user(request, f"{changed} form(s) updated.", messages.SUCCESS)

    @admin.action(description="Open selected forms", permissions=["change"])
    def open_forms(self, request, queryset):
        self._set_status(request, queryset, Form.Status.OPEN)

    @admin.action(description="Close selected forms", permissions=["change"])
    def close_forms(self, request, queryset):
        self._set_status(request, queryset, Form.Status.CLOSED)


@admin.register(Submission)
class SubmissionAdmin(admin.ModelAdmin):
    list_display = ["id", "form", "created_at", "status", "outcome", "contact_link"]
    list_filter = ["status", "outcome", "form", "created_at"]
    list_select_related = ["form", "contact"]
    date_hierarchy = "created_at"
    readonly_fields = ["form", "version", "contact_link", "answers", "status", "outcome", "ip_hash", "created_at"]
    exclude = ["contact"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # the contact's history points at it

    @admin.display(description="Contact")
    def contact_link(self, obj):
        if obj.contact is None:
            return "—"
        return format_html('<a href="{}">{}</a>', contact_url(obj.contact), obj.contact)

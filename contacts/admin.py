"""Django admin for staff: configuration (tags, pipelines, custom fields) and contact records.

Every write still goes through contacts.services, so admin edits get the same
normalization, dedup and history as the API.
"""

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.urls import reverse
from django.utils.html import format_html

from contacts import services
from contacts.models import (
    ChangeRequest,
    Contact,
    ContactFile,
    ContactStage,
    CustomField,
    HistoryEntry,
    Note,
    Pipeline,
    PossibleDuplicate,
    Source,
    Stage,
    StageChange,
    Tag,
    Task,
)
from contacts.selectors import search_contacts
from crm_hub.actors import Actor
from crm_hub.errors import InputRejected


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class NoteInline(ReadOnlyInline):
    model = Note
    fields = ["created_at", "source", "author", "agent", "preview"]
    readonly_fields = fields

    @admin.display(description="Note")
    def preview(self, obj):
        from contacts.sanitize import rich_text_to_plain

        return rich_text_to_plain(obj.body)[:200]


class TaskInline(ReadOnlyInline):
    model = Task
    fields = ["title", "due_at", "assignee", "status", "priority"]
    readonly_fields = fields


class FileInline(ReadOnlyInline):
    model = ContactFile
    fields = ["name", "size", "content_type", "uploaded_by", "created_at"]
    readonly_fields = fields


class StageInline(ReadOnlyInline):
    model = ContactStage
    fields = ["pipeline", "stage", "entered_at"]
    readonly_fields = fields


class HistoryInline(ReadOnlyInline):
    model = HistoryEntry
    fields = ["created_at", "action", "actor_label", "source", "summary", "changes"]
    readonly_fields = fields
    show_change_link = False
    ordering = ["-created_at", "-id"]
    max_num = 50


class TagFilter(admin.SimpleListFilter):
    title = "tag"
    parameter_name = "tag"

    def lookups(self, request, model_admin):
        return [(t.pk, t.name) for t in Tag.objects.all()]

    def queryset(self, request, queryset):
        return queryset.filter(tags__id=self.value()) if self.value() else queryset


class StageFilter(admin.SimpleListFilter):
    title = "pipeline stage"
    parameter_name = "stage"

    def lookups(self, request, model_admin):
        return [(s.pk, str(s)) for s in Stage.objects.select_related("pipeline")]

    def queryset(self, request, queryset):
        return queryset.filter(stage_memberships__stage_id=self.value()) if self.value() else queryset


class ContactAdminForm(forms.ModelForm):
    """Runs the service layer's validation so its errors show beside the fields."""

    class Meta:
        model = Contact
        fields = [
            "name", "phone", "email", "company", "position", "owner", "identity", "birthday", "zip_code",
            "country", "state", "city", "district", "street", "number", "complement", "custom",
        ]

    def clean(self):
        cleaned = super().clean()
        data = {f: cleaned.get(f) for f in services.STANDARD_FIELDS if f in cleaned}
        try:
            checked = services.clean_contact_input(data, custom=cleaned.get("custom") or None, actor=Actor())
        except InputRejected as exc:
            for error in exc.errors:
                name = error.field.split(".")[0]
                self.add_error(name if name in self.fields else None, error.message)
            return cleaned
        by_phone, by_email = services.find_contact_by_keys(
            phone_e164=checked.phone_e164, email_normalized=checked.email_normalized
        )
        for name, other in (("phone", by_phone), ("email", by_email)):
            if other is not None and other.pk != self.instance.pk:
                url = reverse("admin:contacts_contact_change", args=[other.pk])
                self.add_error(name, format_html('<a href="{}">{}</a> (#{}) already has this {}.', url, other, other.pk, name))
        return cleaned


@admin.register(Contact)
class ContactAdmin(admin.ModelAdmin):
    form = ContactAdminForm
    list_display = ["display", "phone_col", "email", "company", "source", "owner", "created_at"]
    list_filter = ["source", "owner", TagFilter, StageFilter, "created_at"]
    search_fields = ["name", "company", "email_normalized"]
    list_select_related = ["owner"]
    readonly_fields = ["source", "phone_e164", "email_normalized", "created_at", "updated_at", "last_activity_at"]
    fieldsets = [
        (None, {"fields": ["name", "phone", "email", "company", "position", "owner", "source"]}),
        ("Identity", {"fields": ["identity", "birthday"], "classes": ["collapse"]}),
        ("Address", {"fields": ["zip_code", "country", "state", "city", "district", "street", "number", "complement"], "classes": ["collapse"]}),
        ("Custom fields", {"fields": ["custom"]}),
        ("Keys and times", {"fields": ["phone_e164", "email_normalized", "created_at", "updated_at", "last_activity_at"], "classes": ["collapse"]}),
    ]
    inlines = [StageInline, NoteInline, TaskInline, FileInline, HistoryInline]
    show_full_result_count = False

    @admin.display(description="Name", ordering="name")
    def display(self, obj):
        return str(obj)

    @admin.display(description="Phone", ordering="phone_e164")
    def phone_col(self, obj):
        return obj.phone_display

    def get_search_results(self, request, queryset, search_term):
        if not search_term.strip():
            return queryset, False
        return search_contacts(queryset, search_term), False

    def save_model(self, request, obj, form, change):
        actor = Actor.for_user(request.user)
        data = {f: form.cleaned_data.get(f) for f in form.changed_data if f in services.WRITABLE_FIELDS}
        custom = form.cleaned_data.get("custom") if "custom" in form.changed_data else None
        try:
            if change:
                result = services.update_contact(
                    contact=Contact.objects.get(pk=obj.pk), data=data, custom=custom, actor=actor,
                    source=Source.MANUAL, protected_changes="apply",
                )
            else:
                data = {f: form.cleaned_data.get(f) for f in services.WRITABLE_FIELDS if form.cleaned_data.get(f) not in (None, "")}
                result = services.upsert_contact(
                    data=data, custom=form.cleaned_data.get("custom") or None, actor=actor, source=Source.MANUAL,
                    protected_changes="apply",
                )
        except InputRejected as exc:
            # The form already passed model validation; a service refusal here is a
            # custom-field or dedup rule. Show it and keep nothing.
            for error in exc.errors:
                messages.error(request, f"{error.field}: {error.message}")
            transaction.set_rollback(True)
            return
        obj.pk = result.contact.pk
        obj.refresh_from_db()

    def save_related(self, request, form, formsets, change):
        if form.instance.pk:
            super().save_related(request, form, formsets, change)


@admin.register(Tag)
class TagAdmin(admin.ModelAdmin):
    list_display = ["name", "swatch", "description"]
    search_fields = ["name", "description"]

    @admin.display(description="Colour")
    def swatch(self, obj):
        return format_html('<span style="display:inline-block;width:1em;height:1em;background:{}"></span> {}', obj.color, obj.color)


class StageAdminInline(admin.TabularInline):
    model = Stage
    extra = 1
    fields = ["name", "position", "color"]


@admin.register(Pipeline)
class PipelineAdmin(admin.ModelAdmin):
    list_display = ["name", "position", "description"]
    inlines = [StageAdminInline]


@admin.register(CustomField)
class CustomFieldAdmin(admin.ModelAdmin):
    list_display = ["label", "key", "type", "allow_for_ai", "required", "position"]
    list_filter = ["type", "allow_for_ai"]
    list_editable = ["position"]
    search_fields = ["key", "label"]

    def get_readonly_fields(self, request, obj=None):
        # Keys are immutable: values in every contact's JSON are stored under them.
        return ["key"] if obj else []


@admin.register(Note)
class NoteAdmin(admin.ModelAdmin):
    list_display = ["contact", "source", "author", "agent", "created_at"]
    list_filter = ["source", "created_at"]
    raw_id_fields = ["contact", "conversation"]
    readonly_fields = ["contact", "body", "source", "author", "agent", "conversation", "created_at"]

    def has_add_permission(self, request):
        return False


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ["title", "contact", "due_at", "assignee", "status", "priority"]
    list_filter = ["status", "priority", "assignee", "due_at"]
    search_fields = ["title", "contact__name"]
    raw_id_fields = ["contact", "conversation"]
    actions = ["mark_done"]

    def has_add_permission(self, request):
        return False

    def get_readonly_fields(self, request, obj=None):
        return ["contact", "source", "status", "completed_at", "created_by", "agent", "conversation", "created_at"]

    @admin.action(description="Mark selected tasks done")
    def mark_done(self, request, queryset):
        for task in queryset.filter(status=Task.Status.OPEN):
            services.complete_task(task=task, actor=Actor.for_user(request.user), source=Source.MANUAL)


@admin.register(ContactFile)
class ContactFileAdmin(admin.ModelAdmin):
    list_display = ["name", "contact", "size", "content_type", "uploaded_by", "created_at"]
    raw_id_fields = ["contact"]
    readonly_fields = ["contact", "download", "name", "size", "content_type", "uploaded_by", "agent", "source", "created_at"]
    exclude = ["file"]

    @admin.display(description="File")
    def download(self, obj):
        # Through the staff-only view: media is not served publicly.
        if not obj.pk:
            return "-"
        return format_html('<a href="{}">{}</a>', reverse("contacts:file", args=[obj.contact_id, obj.pk]), obj.name)

    def has_add_permission(self, request):
        return False


@admin.register(HistoryEntry)
class HistoryEntryAdmin(admin.ModelAdmin):
    list_display = ["created_at", "contact", "action", "actor_label", "source", "summary"]
    list_filter = ["action", "source", "created_at"]
    search_fields = ["summary", "actor_label"]
    list_select_related = ["contact"]
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(StageChange)
class StageChangeAdmin(HistoryEntryAdmin):
    list_display = ["changed_at", "contact", "pipeline", "from_stage", "to_stage"]
    list_filter = ["pipeline", "changed_at"]
    search_fields = []
    list_select_related = ["contact", "pipeline", "from_stage", "to_stage"]


@admin.register(PossibleDuplicate)
class PossibleDuplicateAdmin(admin.ModelAdmin):
    list_display = ["contact", "other", "reason", "source", "status", "created_at"]
    list_filter = ["status", "source"]
    raw_id_fields = ["contact", "other"]
    list_editable = ["status"]

    def has_add_permission(self, request):
        return False


@admin.register(ChangeRequest)
class ChangeRequestAdmin(admin.ModelAdmin):
    list_display = ["contact", "field", "old_value", "new_value", "status", "requested_by_agent", "created_at"]
    list_filter = ["status", "field", "source"]
    raw_id_fields = ["contact", "conversation"]
    actions = ["approve", "reject"]

    def has_add_permission(self, request):
        return False

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in ChangeRequest._meta.fields]

    @admin.action(description="Approve selected changes")
    def approve(self, request, queryset):
        done = 0
        for change in queryset.filter(status=ChangeRequest.Status.PENDING):
            try:
                services.approve_change_request(request=change, user=request.user)
                done += 1
            except InputRejected as exc:
                self.message_user(request, f"Contact #{change.contact_id}: {exc}", messages.ERROR)
        self.message_user(request, f"Approved {done} change(s).")

    @admin.action(description="Reject selected changes")
    def reject(self, request, queryset):
        done = 0
        for change in queryset.filter(status=ChangeRequest.Status.PENDING):
            services.reject_change_request(request=change, user=request.user)
            done += 1
        self.message_user(request, f"Rejected {done} change(s).")
from contacts.importing import admin as _importing_admin  # noqa: E402,F401  (issue 7: adds import/export to the Contact admin)

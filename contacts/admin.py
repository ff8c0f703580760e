"""Django admin for staff: configuration (tags, pipelines, custom fields) and contact records.

Every write still goes through contacts.services, so admin edits get the same
normalization, dedup and history as the API.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import models
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html

from contacts import services
from contacts.custom_fields import BadValue, clean_value, missing_required
from contacts.models import (
    CHOICE_TYPES,
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


NAME_PHONE_OR_EMAIL = "Give at least a name, a phone or an email."


def custom_changes(before: Any, after: Any) -> Any:
    """Return what an edit of the custom-values JSON changes: new or changed keys, and None for removed ones.

    Keys left as they were are not sent again, so a value the definitions no longer
    accept (a deleted field, a removed choice) never blocks an edit of something else.
    Anything but an object is returned as it is, for the service to name.
    """
    if after is None:
        after = {}  # an emptied box removes every value
    if not isinstance(after, dict) or not isinstance(before, dict):
        return after
    changes = {key: value for key, value in after.items() if key not in before or before[key] != value}
    changes.update({key: None for key in before if key not in after})
    return changes


class ContactAdminForm(forms.ModelForm):
    """Runs the service layer's validation so its errors show beside the fields."""

    # Errors the write itself refused with (see ContactAdmin.changeform_view), shown on the re-rendered form.
    service_errors: tuple = ()

    class Meta:
        model = Contact
        fields = [
            "name", "phone", "email", "company", "position", "owner", "identity", "birthday", "zip_code",
            "country", "state", "city", "district", "street", "number", "complement", "custom",
        ]

    def add_service_errors(self, errors) -> None:
        for error in errors:
            name = error.field.split(".")[0]
            self.add_error(name if name in self.fields else None, error.message)

    def clean(self):
        cleaned = super().clean()
        self.add_service_errors(self.service_errors)
        adding = self.instance.pk is None
        before = {} if adding else (Contact.objects.filter(pk=self.instance.pk).values_list("custom", flat=True).first() or {})
        self.custom_changes = custom_changes(before, cleaned.get("custom") if "custom" in cleaned else before)
        identifying = ("name", "phone", "email")
        if (adding or any(f in self.changed_data for f in identifying)) and not any(
            str(cleaned.get(f) or "").strip() for f in identifying
        ) and not self.errors.keys() & set(identifying):
            self.add_error(None, NAME_PHONE_OR_EMAIL)
        if "custom" in cleaned and "custom" not in self.errors:
            missing = missing_required(cleaned.get("custom"), list(CustomField.objects.filter(required=True)))
            if missing:
                self.add_error("custom", "Required custom fields are empty: " + ", ".join(
                    f'{d.label} ("{d.key}")' for d in missing
                ) + ". Give each a value to save.")
        data = {f: cleaned.get(f) for f in services.STANDARD_FIELDS if f in cleaned}
        try:
            checked = services.clean_contact_input(data, custom=self.custom_changes or None, actor=Actor())
        except InputRejected as exc:
            self.add_service_errors(exc.errors)
            return cleaned
        by_phone, by_email = services.find_contact_by_keys(
            phone_e164=checked.phone_e164, email_normalized=checked.email_normalized
        )
        for name, other in (("phone", by_phone), ("email", by_email)):
            if other is not None and other.pk != self.instance.pk:
                url = reverse("admin:contacts_contact_change", args=[other.pk])
                self.add_error(name, format_html('<a href="{}">{}</a> (#{}) already has this {}.', url, other, other.pk, name))
        return cleaned


class _WriteRefused(Exception):
    """The service refused an admin write the form had passed (a race, or a rule only the write checks)."""

    def __init__(self, errors):
        super().__init__(errors)
        self.errors = errors


def _cascaded_verbose_names(model: type[models.Model], seen: set | None = None) -> set[str]:
    """Return the verbose names of the models deleted with ``model`` through CASCADE, at any depth."""
    seen = set() if seen is None else seen
    names: set[str] = set()
    # Hidden relations too (related_name="+", as StageChange.pipeline): they cascade all the same.
    relations = [f for f in model._meta.get_fields(include_hidden=True) if f.auto_created and not f.concrete and not f.many_to_many]
    for relation in relations:
        if relation.on_delete is not models.CASCADE or relation.related_model in seen:
            continue
        seen.add(relation.related_model)
        names.add(str(relation.related_model._meta.verbose_name))
        names |= _cascaded_verbose_names(relation.related_model, seen)
    return names


class DeletesItsPartsMixin:
    """Deleting a record deletes its read-only parts (history, stage moves, ...) with it.

    Those parts' admins refuse deleting them one by one, which made Django refuse
    deleting the record at all ("your account doesn't have permission to delete
    history entry"); whoever may delete the record may delete what belongs to it.
    Protected objects (PROTECT foreign keys) still stop the deletion.
    """

    def get_deleted_objects(self, objs, request):
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        if self.has_delete_permission(request):
            perms_needed -= _cascaded_verbose_names(self.model)
        return deleted, counts, perms_needed, protected


@admin.register(Contact)
class ContactAdmin(DeletesItsPartsMixin, admin.ModelAdmin):
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

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        refused = getattr(request, "_contact_write_refused", None)
        if refused:
            form = type(form.__name__, (form,), {"service_errors": tuple(refused)})
        return form

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except _WriteRefused as refused:
            # The view's transaction rolled back; show the same form again with the refusal beside its fields.
            request._contact_write_refused = refused.errors
            return super().changeform_view(request, object_id, form_url, extra_context)

    def save_model(self, request, obj, form, change):
        actor = Actor.for_user(request.user)
        try:
            if change:
                data = {f: form.cleaned_data.get(f) for f in form.changed_data if f in services.WRITABLE_FIELDS}
                result = services.update_contact(
                    contact=Contact.objects.get(pk=obj.pk), data=data, custom=form.custom_changes or None, actor=actor,
                    source=Source.MANUAL, protected_changes="apply",
                )
            else:
                data = {f: form.cleaned_data.get(f) for f in services.WRITABLE_FIELDS if form.cleaned_data.get(f) not in (None, "")}
                result = services.upsert_contact(
                    data=data, custom=form.cleaned_data.get("custom") or None, actor=actor, source=Source.MANUAL,
                    protected_changes="apply",
                )
        except InputRejected as exc:
            raise _WriteRefused(exc.errors) from exc
        obj.pk = result.contact.pk
        obj.refresh_from_db()

    def delete_model(self, request, obj):
        self.delete_queryset(request, Contact.objects.filter(pk=obj.pk))

    def delete_queryset(self, request, queryset):
        services.erase_contacts(contact_ids=list(queryset.values_list("pk", flat=True)))


@admin.register(Tag)
class TagAdmin(admin.ModelAdmin):
    list_display = ["name", "swatch", "description"]
    search_fields = ["name", "description"]

    @admin.display(description="Colour")
    def swatch(self, obj):
        return format_html('<span style="display:inline-block;width:1em;height:1em;background:{}"></span> {}', obj.color, obj.color)


def _forms_using_stages(stages) -> list[str]:
    """Describe the forms that put contacts in one of ``stages`` (deleting it would silently unset theirs)."""
    from forms_app.models import Form

    return [
        format_html("Form “{}” ({}) puts its contacts in “{}”: pick another stage in the form builder first.",
                    form.title, form.get_status_display(), form.stage.name)
        for form in Form.objects.filter(stage__in=stages).select_related("stage").order_by("title", "id")
    ]


class StageFormSet(forms.BaseInlineFormSet):
    """Refuse two stages of one pipeline whose names differ only in case, and deleting a stage a form sets.

    The database's stage_unique_name_per_pipeline_ci answered the first with a 500: Django
    skips that constraint in the inline's forms because the pipeline is not one of their fields.
    """

    def clean(self):
        super().clean()
        seen: dict[str, str] = {}
        deleted = []
        for form in self.forms:
            if not getattr(form, "cleaned_data", None):
                continue
            if self._should_delete_form(form):
                if form.instance.pk:
                    deleted.append(form.instance)
                continue
            name = (form.cleaned_data.get("name") or "").strip()
            if not name:
                continue
            if name.lower() in seen:
                form.add_error(
                    "name", f"“{name}” and “{seen[name.lower()]}” differ only in case: stage names of a pipeline "
                    "are compared without case."
                )
            else:
                seen[name.lower()] = name
        if self.instance.pk:
            listed = [form.instance.pk for form in self.forms if form.instance.pk]
            for other in Stage.objects.filter(pipeline=self.instance).exclude(pk__in=listed):
                if other.name.lower() in seen:
                    raise forms.ValidationError(
                        f"This pipeline already has a stage “{other.name}” (stage names are compared without case)."
                    )
        if deleted:
            used = _forms_using_stages(deleted)
            if used:
                raise forms.ValidationError(used)


class StageAdminInline(admin.TabularInline):
    model = Stage
    formset = StageFormSet
    extra = 1
    fields = ["name", "position", "color"]


@admin.register(Pipeline)
class PipelineAdmin(DeletesItsPartsMixin, admin.ModelAdmin):
    list_display = ["name", "position", "description"]
    inlines = [StageAdminInline]

    def get_deleted_objects(self, objs, request):
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        protected = [*protected, *_forms_using_stages(Stage.objects.filter(pipeline__in=list(objs)))]
        return deleted, counts, perms_needed, protected


# --- Custom fields: what uses them --------------------------------------------------------


def _form_fields_filling(key: str):
    """Yield (form, field definition) for every form whose current version fills ``custom.<key>``."""
    from forms_app.models import Form

    target = f"custom.{key}"
    for form in Form.objects.exclude(current_version=None).select_related("current_version").order_by("title", "id"):
        for field in form.current_version.fields or []:
            if isinstance(field, dict) and field.get("maps_to") == target:
                yield form, field


def _rules_testing(key: str):
    from automations.models import Rule

    return Rule.objects.filter(custom_field_key=key).order_by("position", "id")


def _form_link(form) -> str:
    try:
        url = reverse("forms_app:edit", args=[form.pk])
    except NoReverseMatch:
        return format_html("“{}”", form.title)
    return format_html('“<a href="{}">{}</a>”', url, form.title)


def _rule_link(rule) -> str:
    return format_html('“<a href="{}">{}</a>”', reverse("admin:automations_rule_change", args=[rule.pk]), rule.name)


def custom_field_users(definition: CustomField) -> list[str]:
    """Describe every form and automation rule that reads or fills ``definition`` (HTML-safe)."""
    uses = [
        format_html("Form {} ({}) fills it from its field “{}”.", _form_link(form), form.get_status_display(),
                    field.get("label") or field.get("id"))
        for form, field in _form_fields_filling(definition.key)
    ]
    uses += [
        format_html("Automation rule {} ({}) tests its value.", _rule_link(rule), "active" if rule.active else "inactive")
        for rule in _rules_testing(definition.key)
    ]
    return uses


def _refused_answers(definition: CustomField, answers) -> list[str]:
    refused = []
    for answer in answers:
        try:
            clean_value(definition, answer)
        except BadValue:
            refused.append(answer[0] if isinstance(answer, list) else answer)
    return refused


def _form_answers(field: dict) -> list | None:
    """Every answer a choice or checkbox field of a form can send, as the submission maps it; None if open."""
    kind = field.get("type")
    choices = [str(c) for c in field.get("choices") or []]
    if kind == "checkbox":
        return [True, False]
    if kind == "single_choice":
        return choices
    if kind == "multiple_choice":
        return [[choice] for choice in choices]
    return None


def _form_conflicts(before: CustomField, after: CustomField) -> list[str]:
    """Describe each form field that could fill ``before`` but would send an answer ``after`` refuses."""
    from forms_app.services import custom_target_error  # the builder's own rule for a mapping

    conflicts = []
    for form, field in _form_fields_filling(after.key):
        label = field.get("label") or field.get("id")
        answers = _form_answers(field)
        if answers is not None and after.type == before.type:
            refused = [a for a in _refused_answers(after, answers) if a not in _refused_answers(before, answers)]
            if refused:
                conflicts.append(format_html(
                    "Form {} ({}) offers {} in its field “{}”, which fills this field: remove {} from the form "
                    "first, or keep the choice.",
                    _form_link(form), form.get_status_display(), ", ".join(f"“{a}”" for a in refused), label,
                    "them" if len(refused) > 1 else "it",
                ))
            continue
        kind, choices = field.get("type"), field.get("choices") or []
        problem = custom_target_error(kind, choices, after)
        if problem and not custom_target_error(kind, choices, before):
            conflicts.append(format_html(
                "Form {} ({}) fills this field from its field “{}”, which would no longer fit: {}",
                _form_link(form), form.get_status_display(), label, problem,
            ))
    return conflicts


def _rule_conflicts(before: CustomField, after: CustomField) -> list[str]:
    """Describe each rule whose condition ``before`` can meet and ``after`` never could."""
    conflicts = []
    for rule in _rules_testing(after.key):
        wanted = [rule.custom_field_value] if after.type == CustomField.Type.MULTIPLE_CHOICE else rule.custom_field_value
        was = [rule.custom_field_value] if before.type == CustomField.Type.MULTIPLE_CHOICE else rule.custom_field_value
        if _refused_answers(after, [wanted]) and not _refused_answers(before, [was]):
            conflicts.append(format_html(
                "Automation rule {} ({}) fires on the value “{}”, which this field would no longer allow: "
                "change or delete the rule first.",
                _rule_link(rule), "active" if rule.active else "inactive", rule.custom_field_value,
            ))
    return conflicts


class CustomFieldAdminForm(forms.ModelForm):
    """Refuse edits that would break what already uses the field.

    Changing the type while contacts hold values would leave values of the old type
    behind (sorting and exports read them by the new one); removing a choice, or
    changing the type, that a published form offers or a rule tests would make the
    form refuse its own answers and the rule stop firing, silently.
    """

    class Meta:
        model = CustomField
        fields = ["key", "label", "type", "choices", "bands", "required", "help_text", "allow_for_ai", "position"]

    def _post_clean(self):
        before = None
        if self.instance.pk is not None:
            before = CustomField.objects.filter(pk=self.instance.pk).first()
        super()._post_clean()  # validates the model and normalizes choices into self.instance
        if before is None or self.has_error("type") or self.has_error("choices"):
            return
        after = self.instance
        if after.type != before.type and Contact.objects.filter(custom__has_key=before.key).exists():
            self.add_error("type", (
                f"Contacts hold values for “{before.key}” as {before.get_type_display()}; they would not read as "
                f"{after.get_type_display()}. Create a new field instead, or clear the values first."
            ))
            return
        if after.type == before.type and (after.type not in CHOICE_TYPES or _folded(after.choices) >= _folded(before.choices)):
            return
        field = "choices" if after.type == before.type else "type"
        for problem in [*_form_conflicts(before, after), *_rule_conflicts(before, after)]:
            self.add_error(field, problem)


def _folded(choices) -> set[str]:
    return {str(c).strip().casefold() for c in choices or []}


@admin.register(CustomField)
class CustomFieldAdmin(admin.ModelAdmin):
    form = CustomFieldAdminForm
    list_display = ["label", "key", "type", "allow_for_ai", "required", "position"]
    list_filter = ["type", "allow_for_ai"]
    list_editable = ["position"]
    search_fields = ["key", "label"]

    def get_readonly_fields(self, request, obj=None):
        # Keys are immutable: values in every contact's JSON are stored under them.
        return ["key"] if obj else []

    def get_deleted_objects(self, objs, request):
        """Refuse deleting a field a form fills or a rule tests (for one field and for "delete selected").

        Such a form would refuse every submission ("There is no custom field ...") and
        such a rule would never fire again, without anyone being told.
        """
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        uses = []
        for definition in objs:
            found = custom_field_users(definition)
            if found:
                uses.append(format_html("Custom field “{}” ({}) is in use:", definition.label, definition.key))
                uses.append(found)
        if uses:
            messages.error(
                request,
                "A custom field that a form fills or an automation rule tests cannot be deleted: change those "
                "first (listed below).",
            )
        return deleted, counts, perms_needed, [*protected, *uses]


@admin.register(Note)
class NoteAdmin(admin.ModelAdmin):
    list_display = ["contact", "source", "author", "agent", "created_at"]
    list_filter = ["source", "created_at"]
    raw_id_fields = ["contact", "conversation"]
    readonly_fields = ["contact", "body", "source", "author", "agent", "conversation", "created_at"]

    def has_add_permission(self, request):
        return False

    # Deleting goes through the service so the contact's history says which note went and who removed it.
    def delete_model(self, request, obj):
        services.delete_notes(notes=[obj], actor=Actor.for_user(request.user), source=Source.MANUAL)

    def delete_queryset(self, request, queryset):
        services.delete_notes(notes=queryset, actor=Actor.for_user(request.user), source=Source.MANUAL)


class TaskAdminForm(forms.ModelForm):
    """Checks an edit with the rules a new task meets (services.clean_task_fields), errors beside the fields."""

    class Meta:
        model = Task
        fields = list(services.TASK_EDITABLE_FIELDS)

    def clean(self):
        cleaned = super().clean()
        values = {name: cleaned.get(name) for name in services.TASK_EDITABLE_FIELDS if name not in self.errors}
        _fields, errors = services.clean_task_fields({**self.initial, **values})
        assignee = cleaned.get("assignee")
        if assignee is not None and not assignee.is_active and "assignee" in self.changed_data:
            self.add_error("assignee", f"{assignee.get_username()} is inactive: assign the task to an active user.")
        for error in errors:
            if error.field not in self.errors:
                self.add_error(error.field if error.field in self.fields else None, error.message)
        return cleaned


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    form = TaskAdminForm
    list_display = ["title", "contact", "due_at", "assignee", "status", "priority"]
    list_filter = ["status", "priority", "assignee", "due_at"]
    search_fields = ["title", "contact__name"]
    raw_id_fields = ["contact", "conversation"]
    actions = ["mark_done"]

    def has_add_permission(self, request):
        return False

    def get_readonly_fields(self, request, obj=None):
        return ["contact", "source", "status", "completed_at", "created_by", "agent", "conversation", "created_at"]

    # Edits and deletes go through the services, so the contact's history records them.
    def save_model(self, request, obj, form, change):
        changes = {name: form.cleaned_data[name] for name in form.changed_data if name in services.TASK_EDITABLE_FIELDS}
        if changes:
            services.update_task(task=obj, changes=changes, actor=Actor.for_user(request.user), source=Source.MANUAL)

    def delete_model(self, request, obj):
        services.delete_tasks(tasks=[obj], actor=Actor.for_user(request.user), source=Source.MANUAL)

    def delete_queryset(self, request, queryset):
        services.delete_tasks(tasks=queryset, actor=Actor.for_user(request.user), source=Source.MANUAL)

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
    # Decided by the actions (merge, not a duplicate), which go through the services and record it in the
    # contacts' history; an editable status column changed it silently.
    readonly_fields = ["contact", "other", "reason", "source", "status", "created_at"]
    actions = ["merge_into_contact", "dismiss"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Merge: keep “contact”, merge “other” into it", permissions=["merge"])
    def merge_into_contact(self, request, queryset):
        pairs = queryset.filter(status=PossibleDuplicate.Status.OPEN).select_related("contact", "other")
        if request.POST.get("confirm") != "yes":
            # A merge deletes a contact for good: shown first, as Django's own delete action does.
            return TemplateResponse(request, "admin/contacts/possibleduplicate/merge_confirm.html", {
                **self.admin_site.each_context(request), "opts": self.model._meta, "pairs": pairs,
                "selected": request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME), "title": "Merge these contacts?",
            })
        merged = 0
        actor = Actor.for_user(request.user)
        for flag in queryset.filter(status=PossibleDuplicate.Status.OPEN).select_related("contact", "other"):
            # An earlier merge in this run may have taken one of the pair.
            if not (Contact.objects.filter(pk=flag.contact_id).exists() and Contact.objects.filter(pk=flag.other_id).exists()):
                continue
            try:
                services.merge_contacts(keep=flag.contact, other=flag.other, actor=actor, source=Source.MANUAL)
                merged += 1
            except InputRejected as exc:
                self.message_user(request, f"Contacts #{flag.contact_id} and #{flag.other_id}: {exc}", messages.ERROR)
        self.message_user(request, f"Merged {merged} pair(s).")

    def has_merge_permission(self, request) -> bool:
        # A merge deletes a contact (its parts move to the one kept).
        return request.user.has_perm("contacts.change_contact") and request.user.has_perm("contacts.delete_contact")

    @admin.action(description="Not a duplicate")
    def dismiss(self, request, queryset):
        actor = Actor.for_user(request.user)
        dismissed = sum(
            services.dismiss_possible_duplicate(flag=flag, actor=actor, source=Source.MANUAL)
            for flag in queryset.filter(status=PossibleDuplicate.Status.OPEN).select_related("contact")
        )
        self.message_user(request, f"Marked {dismissed} pair(s) as not duplicates.")


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

    # A pending request is decided (approve or reject, both recorded in the contact's history),
    # never deleted out of the way; decided ones are records and may be cleared.
    def has_delete_permission(self, request, obj=None):
        if obj is not None and obj.status == ChangeRequest.Status.PENDING:
            return False
        return super().has_delete_permission(request, obj)

    def delete_queryset(self, request, queryset):
        pending = queryset.filter(status=ChangeRequest.Status.PENDING).count()
        if pending:
            self.message_user(
                request, f"{pending} pending change(s) kept: approve or reject them instead of deleting.", messages.WARNING
            )
        queryset.exclude(status=ChangeRequest.Status.PENDING).delete()

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

"""Admin for imports: the Contact admin gains Import (upload, map, preview, confirm, progress) and Export.

Export is django-import-export's (CSV and XLSX, current filters applied) with a
formula-safe resource; import uses our batch engine, because the stock import
path runs per-row queries and cannot collapse duplicates inside a file.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html
from import_export.admin import ExportMixin
from import_export.formats.base_formats import CSV, XLSX
from import_export.signals import post_export

from contacts.admin import ContactAdmin
from contacts.exporting import csv_response, xlsx_response
from contacts.importing import services
from contacts.importing.mapping import target_choices
from contacts.importing.readers import UnreadableFile, detect_format, open_rows
from contacts.importing.resources import ContactExportResource
from contacts.models import Contact, ImportJob
from crm_hub.actors import Actor
from crm_hub.errors import InputRejected

SAMPLE_ROWS = 3


class UploadForm(forms.Form):
    file = forms.FileField(help_text="A .csv (comma, semicolon or tab separated; UTF-8, or Windows-1252 and UTF-16 as Excel saves them, detected) or .xlsx file with a header row.")
    mode = forms.ChoiceField(choices=ImportJob.Mode.choices, initial=ImportJob.Mode.CREATE_UPDATE)


class MappingForm(forms.Form):
    mode = forms.ChoiceField(choices=ImportJob.Mode.choices)

    def __init__(self, *args, headers: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.headers = headers
        choices = target_choices()
        for index, header in enumerate(headers):
            self.fields[f"col_{index}"] = forms.ChoiceField(choices=choices, required=False, label=header)

    def mapping(self) -> dict[str, str]:
        return {h: self.cleaned_data.get(f"col_{i}") or "" for i, h in enumerate(self.headers)}

    def columns(self):
        return [(header, self[f"col_{index}"]) for index, header in enumerate(self.headers)]


def _actor(request) -> Actor:
    return Actor.for_user(request.user)


class ContactImportExportAdmin(ExportMixin, ContactAdmin):
    resource_classes = [ContactExportResource]
    # The cells are neutralized by ContactExportResource and written by the web export's streamed
    # writers (_do_file_export); the formats only name the choices. The stock formula escape
    # (IMPORT_EXPORT_ESCAPE_FORMULAE_ON_EXPORT) only drops a leading "=" and turns every cell into text.
    formats = [CSV, XLSX]
    import_export_change_list_template = "admin/contacts/contact/change_list_import_export.html"

    def has_export_permission(self, request):
        # django-import-export lets every staff user export unless a permission code is set;
        # the file holds what the change list shows, so it needs the same permission.
        return self.has_view_permission(request)

    def _do_file_export(self, file_format, request, queryset, export_form=None):
        """Stream the file (CSV as it is written, XLSX from a write-only workbook) instead of building it in memory."""
        if not self.has_export_permission(request):
            raise PermissionDenied
        resource_class = self.choose_export_resource_class(export_form, request)
        resource = resource_class(**self.get_export_resource_kwargs(request, export_form=export_form))
        rows = resource.iter_rows(
            queryset,
            selected_fields=self.get_export_resource_fields_from_form(export_form),
            # Native cells (numbers, dates, empty cells) for XLSX; the widgets' text for CSV.
            native=file_format.is_binary(),
        )
        filename = self.get_export_filename(request, queryset, file_format)
        response = xlsx_response(rows, filename=filename) if file_format.is_binary() else csv_response(rows, filename=filename)
        post_export.send(sender=None, model=self.model)
        return response

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("import-contacts/", view(self.import_upload_view), name="contacts_contact_import_upload"),
            path("import-contacts/<int:job_id>/", view(self.import_map_view), name="contacts_contact_import_map"),
            path("import-contacts/<int:job_id>/progress/", view(self.import_progress_view), name="contacts_contact_import_progress"),
            path("import-contacts/<int:job_id>/progress.json", view(self.import_progress_json), name="contacts_contact_import_progress_json"),
            path("import-contacts/<int:job_id>/errors.csv", view(self.import_errors_view), name="contacts_contact_import_errors"),
            path("import-contacts/<int:job_id>/file/", view(self.import_file_view), name="contacts_contact_import_file"),
            path("import-contacts/<int:job_id>/cancel/", view(self.import_cancel_view), name="contacts_contact_import_cancel"),
            path("import-contacts/<int:job_id>/revert/", view(self.import_revert_view), name="contacts_contact_import_revert"),
            *super().get_urls(),
        ]

    def _check(self, request):
        if not self.has_add_permission(request):
            raise PermissionDenied

    def _context(self, request, **extra):
        return {**self.admin_site.each_context(request), "opts": self.model._meta, **extra}

    def import_upload_view(self, request):
        self._check(request)
        form = UploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                job = services.create_import_job(upload=form.cleaned_data["file"], actor=_actor(request), mode=form.cleaned_data["mode"])
            except InputRejected as exc:
                for error in exc.errors:
                    form.add_error("file" if error.field == "file" else None, error.message)
            else:
                return redirect("admin:contacts_contact_import_map", job_id=job.pk)
        return TemplateResponse(request, "admin/contacts/import_upload.html", self._context(request, form=form, title="Import contacts"))

    def import_map_view(self, request, job_id: int):
        self._check(request)
        job = get_object_or_404(ImportJob, pk=job_id)
        if job.status != ImportJob.Status.DRAFT:
            return redirect("admin:contacts_contact_import_progress", job_id=job.pk)
        try:
            with job.file.open("rb") as handle, open_rows(handle, detect_format(job.file_name)) as (headers, rows):
                samples = [row for _, row in zip(range(SAMPLE_ROWS), rows, strict=False)]
        except UnreadableFile as exc:
            # Found only past the header (a stray quote swallowing the rest): upload a fixed file.
            services.discard_draft(job)
            messages.error(request, f"{job.file_name} cannot be imported: {exc}")
            return redirect("admin:contacts_contact_import_upload")
        initial = {"mode": job.mode, **{f"col_{i}": job.mapping.get(h, "") for i, h in enumerate(headers)}}
        form = MappingForm(request.POST or None, headers=headers, initial=initial)
        preview = None
        if request.method == "POST" and form.is_valid():
            mapping, mode = form.mapping(), form.cleaned_data["mode"]
            try:
                if "_confirm" in request.POST:
                    job = services.confirm_import(job=job, mapping=mapping, mode=mode, actor=_actor(request))
                    if job.background:
                        messages.info(request, f"Import #{job.pk} runs in the background; this page shows its progress.")
                    return redirect("admin:contacts_contact_import_progress", job_id=job.pk)
                preview = services.preview_import(job=job, mapping=mapping, mode=mode, actor=_actor(request))
            except InputRejected as exc:
                if any(e.code == "invalid_state" for e in exc.errors):
                    # A second Confirm (a double click, a second tab): the import runs once; show it.
                    messages.info(request, f"Import #{job.pk} was already started; this page shows its progress.")
                    return redirect("admin:contacts_contact_import_progress", job_id=job.pk)
                for error in exc.errors:
                    form.add_error(None, f"{error.field}: {error.message}")
        columns = [
            (header, field, [row[i] if i < len(row) else "" for row in samples])
            for i, (header, field) in enumerate(form.columns())
        ]
        return TemplateResponse(
            request,
            "admin/contacts/import_map.html",
            self._context(request, job=job, form=form, columns=columns, preview=preview, title=f"Import {job.file_name}"),
        )

    def import_progress_view(self, request, job_id: int):
        self._check(request)
        job = services.check_stale(get_object_or_404(ImportJob, pk=job_id))
        return TemplateResponse(
            request,
            "admin/contacts/import_progress.html",
            self._context(
                request, job=job, progress=services.progress(job), title=f"Import #{job.pk}: {job.file_name}",
                json_url=reverse("admin:contacts_contact_import_progress_json", args=[job.pk]),
            ),
        )

    def import_progress_json(self, request, job_id: int):
        self._check(request)
        return JsonResponse(services.progress(services.check_stale(get_object_or_404(ImportJob, pk=job_id))))

    def import_errors_view(self, request, job_id: int):
        # Served through admin, not MEDIA_URL: the failed rows hold people's personal data.
        self._check(request)
        job = get_object_or_404(ImportJob, pk=job_id)
        if not job.error_file:
            raise Http404
        name = f"{job.file_name.rsplit('.', 1)[0]}-errors.csv"
        return FileResponse(job.error_file.open("rb"), as_attachment=True, filename=name, content_type="text/csv; charset=utf-8")

    def import_file_view(self, request, job_id: int):
        # The uploaded file, for the same reason and the same staff.
        self._check(request)
        job = get_object_or_404(ImportJob, pk=job_id)
        if not job.file:
            raise Http404
        return FileResponse(job.file.open("rb"), as_attachment=True, filename=job.file_name, content_type="application/octet-stream")

    def import_cancel_view(self, request, job_id: int):
        self._check(request)
        if request.method != "POST":
            raise Http404
        job = get_object_or_404(ImportJob, pk=job_id)
        try:
            job = services.cancel_import(job=job, actor=_actor(request))
        except InputRejected as exc:
            messages.error(request, str(exc.errors[0].message))
        else:
            if job.status == ImportJob.Status.CANCELLED:
                # Finished here (not started yet, or its worker had stopped): say what was undone.
                messages.success(request, " ".join(filter(None, [f"Import #{job.pk} was cancelled.", job.message])))
            else:
                messages.success(request, f"Import #{job.pk} is being cancelled; what it wrote is reverted.")
        return redirect("admin:contacts_contact_import_progress", job_id=job.pk)

    def import_revert_view(self, request, job_id: int):
        self._check(request)
        if request.method != "POST":
            raise Http404
        job = get_object_or_404(ImportJob, pk=job_id)
        try:
            job, report = services.start_revert(job=job, actor=_actor(request))
        except InputRejected as exc:
            messages.error(request, str(exc.errors[0].message))
        else:
            _tell_reverted(request, job, report)
        return redirect("admin:contacts_contact_import_progress", job_id=job.pk)


def _tell_reverted(request, job: ImportJob, report: services.UndoReport | None) -> None:
    if report is None:
        messages.success(request, f"Import #{job.pk} is being reverted on a worker; this page shows when it is done.")
        return
    text = f"Import #{job.pk} was reverted: {report.describe()}"
    if report.skipped:
        messages.warning(request, text)
    else:
        messages.success(request, text)


admin.site.unregister(Contact)
admin.site.register(Contact, ContactImportExportAdmin)


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    """Import history: who, when, file, mapping, counts, error file; revert from the progress page."""

    list_display = ["id", "file_name", "created_by", "created_at", "status", "mode", "rows_done",
                    "created_count", "updated_count", "skipped_count", "failed_count", "progress_link"]
    list_filter = ["status", "mode", "created_at"]
    search_fields = ["file_name"]
    list_select_related = ["created_by"]
    actions = ["revert_selected"]
    # Shown as links to the admin views (file_link, error_file_link) and as "finished" instead; an
    # excluded field is no form field, so nothing of the history can be edited.
    exclude = ["file", "error_file", "finished_at"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        # The import history is the audit trail (who imported what, and its undo log): kept.
        return False

    def get_readonly_fields(self, request, obj=None):
        # The files as links to admin views: media is not served publicly (personal data).
        files = {"file": "file_link", "error_file": "error_file_link", "finished_at": "finished"}
        return [files.get(f.name, f.name) for f in ImportJob._meta.fields] + ["progress_link"]

    def changelist_view(self, request, extra_context=None):
        # The history must not list as running an import whose worker was killed.
        services.fail_stale_jobs()
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        if object_id and str(object_id).isdigit():
            services.fail_stale_jobs(job_id=int(object_id))
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description="Finished at")
    def finished(self, obj):
        # Formatted as admin shows the other dates (the raw value printed microseconds and +00:00).
        return date_format(timezone.localtime(obj.finished_at), "DATETIME_FORMAT") if obj.finished_at else "-"

    @admin.display(description="Progress")
    def progress_link(self, obj):
        url = reverse("admin:contacts_contact_import_progress", args=[obj.pk])
        return format_html('<a href="{}">{}</a>', url, "details")

    @admin.display(description="File")
    def file_link(self, obj):
        if not obj.file:
            return "-"
        return format_html('<a href="{}">{}</a>', reverse("admin:contacts_contact_import_file", args=[obj.pk]), obj.file_name)

    @admin.display(description="Error file")
    def error_file_link(self, obj):
        if not obj.error_file:
            return "-"
        return format_html('<a href="{}">{}</a>', reverse("admin:contacts_contact_import_errors", args=[obj.pk]), "failed rows (CSV)")

    @admin.action(description="Revert selected imports")
    def revert_selected(self, request, queryset):
        for job in queryset:
            try:
                job, report = services.start_revert(job=job, actor=_actor(request))
                _tell_reverted(request, job, report)
            except InputRejected as exc:
                self.message_user(request, f"Import #{job.pk}: {exc.errors[0].message}", messages.ERROR)

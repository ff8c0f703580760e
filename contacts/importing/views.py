"""Web UI page for an import's progress (staff), and its JSON for polling."""

from django.contrib.admin.views.decorators import staff_member_required
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse

from contacts.importing import services
from contacts.models import ImportJob


@staff_member_required
def progress(request, job_id: int):
    job = services.check_stale(get_object_or_404(ImportJob, pk=job_id))
    return render(
        request,
        "contacts/import_progress.html",
        {"job": job, "progress": services.progress(job), "json_url": reverse("importing:progress_json", args=[job.pk])},
    )


@staff_member_required
def progress_json(request, job_id: int):
    return JsonResponse(services.progress(services.check_stale(get_object_or_404(ImportJob, pk=job_id))))

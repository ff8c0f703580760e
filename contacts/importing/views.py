"""Web UI page for an import's progress (whoever started it, or staff who may see imports), and its JSON."""

from django.http import JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse

from contacts.importing import services
from contacts.views import staff_required


def _visible_job(request, job_id: int):
    # A file's name and counts are the uploader's business, or an import admin's: others get a 404.
    return services.check_stale(get_object_or_404(services.visible_import_jobs(request.user), pk=job_id))


@staff_required
def progress(request, job_id: int):
    job = _visible_job(request, job_id)
    return render(
        request,
        "contacts/import_progress.html",
        {"job": job, "progress": services.progress(job), "json_url": reverse("importing:progress_json", args=[job.pk])},
    )


@staff_required
def progress_json(request, job_id: int):
    return JsonResponse(services.progress(_visible_job(request, job_id)))

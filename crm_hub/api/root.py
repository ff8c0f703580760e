"""What answers under /api/v1/ when no endpoint does: an index at the root, JSON 404s elsewhere.

Django's handler404 answers in JSON under /api/ only with DEBUG off; with DEBUG on (``make run``)
an agent's typo got the HTML debug page. These views answer the same in both.
"""

from __future__ import annotations

from django.http import JsonResponse
from django.urls import Resolver404, resolve, reverse
from django.views.decorators.csrf import csrf_exempt

from crm_hub.api.errors import error_body, error_item


def api_root(request):
    return JsonResponse({
        "docs": request.build_absolute_uri(reverse("api-docs")),
        "schema": request.build_absolute_uri(reverse("api-schema")),
        "authentication": "Authorization: Bearer <token> (manage.py create_agent NAME --scopes ...)",
    })


# Agents send no CSRF cookie: without the exemption a POST to a mistyped path got Django's HTML
# "CSRF verification failed" page instead of this JSON 404. Nothing here writes.
@csrf_exempt
def endpoint_not_found(request, unmatched: str = ""):
    message = "No such endpoint; the endpoints are listed at /api/v1/docs/."
    without_slash = request.path.rstrip("/")
    if without_slash != request.path:
        try:
            match = resolve(without_slash)
        except Resolver404:
            match = None
        if match is not None and match.func is not endpoint_not_found:
            message = f"No such endpoint: API paths have no trailing slash; use {without_slash}."
    return JsonResponse(error_body([error_item(None, "not_found", message)]), status=404)

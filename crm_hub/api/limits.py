"""413 for bodies over the limit, decided from Content-Length before anything reads the body; 411 without one."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse

from crm_hub.api.idempotency import API_PREFIX


def body_limit(request: HttpRequest) -> int:
    """JSON and forms: DATA_UPLOAD_MAX_MEMORY_SIZE; multipart: the file limit plus room for the other parts."""
    if request.META.get("CONTENT_TYPE", "").startswith("multipart/form-data"):
        return settings.CRM_MAX_UPLOAD_BYTES + settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def too_large(limit: int) -> JsonResponse:
    return JsonResponse(
        {"errors": [{"field": None, "code": "request_too_large", "message": f"The request body is over the limit of {limit:,} bytes."}]},
        status=413,
    )


class RequestSizeLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest):
        if request.path.startswith(API_PREFIX):
            if "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower() and not request.META.get("CONTENT_LENGTH"):
                # Django reads a body by its Content-Length: a chunked one read as empty, and the
                # answer blamed the fields ("give at least a name...") for what was never read.
                return JsonResponse({"errors": [{"field": None, "code": "length_required", "message": (
                    "Send the body with a Content-Length header; chunked transfer encoding is not accepted."
                )}]}, status=411)
            limit = body_limit(request)
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if length > limit:
                return too_large(limit)
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception):
        # A body without Content-Length can still trip Django's own limit while being read.
        if isinstance(exception, RequestDataTooBig) and request.path.startswith(API_PREFIX):
            return too_large(body_limit(request))
        return None

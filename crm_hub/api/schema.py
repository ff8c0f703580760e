"""OpenAPI pieces shared by every agent endpoint: the bearer scheme, the error envelope, the key header."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    inline_serializer,
)
from rest_framework import serializers


class AgentTokenScheme(OpenApiAuthenticationExtension):
    target_class = "crm_hub.api.auth.AgentTokenAuthentication"
    name = "AgentToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An agent token (manage.py create_agent). Send 'Authorization: Bearer <token>'.",
        }


IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description=(
        "Any unique string (a UUID) per logical request, kept 24 h. A retry with the same key and body replays the "
        "first answer with 'Idempotent-Replayed: true' and writes nothing; while the first is running: 409 "
        "idempotency_key_in_flight; with a different body: 422 idempotency_key_reused."
    ),
)

_ITEM = inline_serializer(
    "ErrorItem",
    {
        "field": serializers.CharField(allow_null=True, help_text="Dotted path, e.g. contacts.3.phone or custom.budget; null for the whole request."),
        "code": serializers.CharField(help_text="Machine code, e.g. required, invalid_phone, unknown_tag, missing_scope."),
        "message": serializers.CharField(help_text="What went wrong, for a person."),
        "allowed": serializers.ListField(child=serializers.CharField(), required=False, help_text="Permitted values, when the value comes from a list."),
        "scope": serializers.CharField(required=False, help_text="The missing scope (missing_scope only)."),
    },
)
ERRORS = inline_serializer(
    "Errors", {"errors": serializers.ListField(child=_ITEM, help_text="Every problem found; nothing was written.")}
)

_EXAMPLES = {
    400: ("Validation failed", {"errors": [
        {"field": "phone", "code": "invalid_phone", "message": "'12' is not a valid phone number."},
        {"field": "tags", "code": "unknown_tag", "message": "Tag 'vip!' does not exist; use one of the allowed tags.", "allowed": ["Lead", "VIP"]},
    ]}),
    401: ("Missing or bad token", {"errors": [{"field": "authorization", "code": "not_authenticated", "message": "The token is unknown, revoked, or its agent is inactive."}]}),
    403: ("Missing scope", {"errors": [{"field": None, "code": "missing_scope", "message": "This call needs the scope 'contacts:write'; ask an admin to add it to the agent.", "scope": "contacts:write"}]}),
    404: ("Not found", {"errors": [{"field": None, "code": "not_found", "message": "Not found."}]}),
    409: ("Same key still running", {"errors": [{"field": "Idempotency-Key", "code": "idempotency_key_in_flight", "message": "A request with this Idempotency-Key is still running; retry shortly to get its response."}]}),
    413: ("Body too large", {"errors": [{"field": None, "code": "request_too_large", "message": "The request body is over the limit of 2,097,152 bytes."}]}),
    415: ("Not JSON", {"errors": [{"field": None, "code": "unsupported_media_type", "message": "The body is JSON but was sent as form data; send it with 'Content-Type: application/json'."}]}),
    422: ("Key reused", {"errors": [{"field": "Idempotency-Key", "code": "idempotency_key_reused", "message": "This Idempotency-Key was used with a different request; use a new key for a new request."}]}),
    429: ("Throttled", {"errors": [{"field": None, "code": "throttled", "message": "Too many requests; retry in 12 s."}]}),
}
_DESCRIPTIONS = {
    400: "Refused input; every bad field is listed and nothing was written.",
    401: "Missing, unknown or revoked token.",
    403: "The token lacks a scope this call needs.",
    404: "No such contact (or tag, pipeline).",
    409: "A call with the same Idempotency-Key is still running.",
    413: "The body is over the size limit.",
    415: "The body's Content-Type is not JSON (or form data).",
    422: "The Idempotency-Key was used before with a different request.",
    429: "Too many calls for this token; see Retry-After.",
}
READ_ERRORS = (400, 401, 403, 404, 429)
WRITE_ERRORS = (400, 401, 403, 404, 409, 413, 422, 429)


def error_responses(*statuses: int) -> dict[int, OpenApiResponse]:
    return {
        status: OpenApiResponse(
            ERRORS,
            description=_DESCRIPTIONS[status],
            examples=[OpenApiExample(_EXAMPLES[status][0], value=_EXAMPLES[status][1], response_only=True, status_codes=[str(status)])],
        )
        for status in statuses
    }


def document_idempotency_key(result, generator, request, public):
    """Add the Idempotency-Key header, and the 413, 415 and 422 that middleware and parsers answer, to every POST/PUT/PATCH: the middleware honours it on all of them."""
    header = {
        "in": "header",
        "name": "Idempotency-Key",
        "required": False,
        "schema": {"type": "string"},
        "description": IDEMPOTENCY_KEY.description,
    }
    for item in result.get("paths", {}).values():
        for method, operation in item.items():
            if method not in ("post", "put", "patch"):
                continue
            parameters = operation.setdefault("parameters", [])
            if not any(p.get("name") == "Idempotency-Key" for p in parameters):
                parameters.append(dict(header))
            # The size limit and the key check are middleware, in front of every write.
            responses = operation.setdefault("responses", {})
            for status in (413, 415, 422):
                if str(status) not in responses and "Errors" in result.get("components", {}).get("schemas", {}):
                    title, example = _EXAMPLES[status]
                    responses[str(status)] = {
                        "description": _DESCRIPTIONS[status],
                        "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/Errors"},
                            "examples": {title.replace(" ", ""): {"value": example, "summary": title}},
                        }},
                    }
    return result

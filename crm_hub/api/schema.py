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
        "scopes": serializers.ListField(
            child=serializers.CharField(), required=False,
            help_text="Every scope the call lacks, the first being scope (missing_scope only).",
        ),
        "merged_into": serializers.IntegerField(required=False, help_text="The contact this id was merged into (not_found on a merged contact only)."),
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
    406: ("Not JSON", {"errors": [{"field": "format", "code": "not_acceptable", "message": "Format 'xml' is not available; this API answers in json.", "allowed": ["json"]}]}),
    411: ("No Content-Length", {"errors": [{"field": None, "code": "length_required", "message": "Send the body with a Content-Length header; chunked transfer encoding is not accepted."}]}),
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
    404: "No such contact (or tag, pipeline). A contact merged into another names it in merged_into.",
    406: "A format other than JSON was asked for (?format= or Accept).",
    411: "A body sent chunked, without Content-Length.",
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
    """Add the Idempotency-Key header, and the 411, 413, 415 and 422 that middleware and parsers answer, to every
    POST/PUT/PATCH (the middleware honours the key on all of them), and the 406 of ?format= to every GET."""
    header = {
        "in": "header",
        "name": "Idempotency-Key",
        "required": False,
        "schema": {"type": "string"},
        "description": IDEMPOTENCY_KEY.description,
    }
    for item in result.get("paths", {}).values():
        for method, operation in item.items():
            if method == "get" and "Errors" in result.get("components", {}).get("schemas", {}):
                title, example = _EXAMPLES[406]
                operation.setdefault("responses", {}).setdefault("406", {
                    "description": _DESCRIPTIONS[406],
                    "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Errors"},
                        "examples": {title.replace(" ", ""): {"value": example, "summary": title}},
                    }},
                })
            if method not in ("post", "put", "patch"):
                continue
            parameters = operation.setdefault("parameters", [])
            if not any(p.get("name") == "Idempotency-Key" for p in parameters):
                parameters.append(dict(header))
            # The size limit and the key check are middleware, in front of every write.
            responses = operation.setdefault("responses", {})
            for status in (411, 413, 415, 422):
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


# --- Post-processing: what drf-spectacular emits that strict OAS 3.0 readers get wrong ---------------

# OAS 3.0.3 honours ``nullable`` only beside a ``type`` in the same Schema Object, so the null branch
# carries both; ``enum: [null]`` keeps it from admitting any object.
_NULL_BRANCH = {"type": "object", "nullable": True, "enum": [None]}
# Values, not schemas: a payload that happens to hold "allOf" or "nullable" must be left as it is.
_DATA_KEYS = frozenset({"example", "examples", "default", "enum"})


def nullable_references(result, generator, request, public):
    """Turn every ``{allOf: [$ref], nullable: true}`` into ``oneOf: [$ref, null]``.

    drf-spectacular writes a nullable nested serializer that way, but the ``nullable`` there sits in a
    Schema Object without ``type``, which strict validators (openapi-core) ignore: a real ``null`` then
    fails against the referenced object.
    """
    _rewrite_nullable_refs(result.get("components", {}))
    _rewrite_nullable_refs(result.get("paths", {}))
    return result


def _rewrite_nullable_refs(node) -> None:
    if isinstance(node, list):
        for item in node:
            _rewrite_nullable_refs(item)
        return
    if not isinstance(node, dict):
        return
    if node.get("nullable") is True and "allOf" in node and "type" not in node and "oneOf" not in node:
        parts = node.pop("allOf")
        # The outer nullable stays: readers that do honour it there (Swagger UI, schemathesis) show null.
        node["oneOf"] = [parts[0] if len(parts) == 1 else {"allOf": parts}, dict(_NULL_BRANCH)]
    for key, value in node.items():
        if key not in _DATA_KEYS:
            _rewrite_nullable_refs(value)


STRICT_INPUT_DESCRIPTION = (
    "Keys not listed here are refused, not ignored: status 400 with code unknown_field, one error per "
    "unknown key, whose 'allowed' lists the keys accepted here."
)


def describe_strict_inputs(result, generator, request, public):
    """Replace StrictSerializer's docstring, which every input without its own inherits, with what it means to a client.

    That docstring is about how views call the class (``clean``, compiled plans), which /api/v1/docs/
    showed as the description of every request body.
    """
    from drf_spectacular.plumbing import get_doc

    # Imported here: the serializers import this module for the error responses.
    from contacts.api.serializers import StrictSerializer

    internal = get_doc(StrictSerializer)
    for name, component in result.get("components", {}).get("schemas", {}).items():
        # COMPONENT_SPLIT_REQUEST names request bodies "...Request"; a response has no keys to refuse.
        if name.endswith("Request") and component.get("type") == "object":
            # Every body, conversations' included, refuses keys it does not know: say so to validators
            # and generated clients, which otherwise take extra keys as allowed.
            component["additionalProperties"] = False
        if internal and component.get("description") == internal:
            if name.endswith("Request"):
                component["description"] = STRICT_INPUT_DESCRIPTION
            else:
                del component["description"]
    return result


def bound_integer_parameters(result, generator, request, public):
    """Give ``id`` path parameters ``minimum: 1`` and ``page_size`` the bounds its paginator applies.

    Ids are database keys, which start at 1. The lists' paginator (crm_hub.api.pagination) refuses a
    ``page_size`` outside 1 to its ``max_page_size``, which is read from the view's own paginator, since
    lists differ.
    """
    paginators = {}
    for path, _regex, method, callback in generator.endpoints or ():
        paginator = getattr(getattr(callback, "cls", None), "pagination_class", None)
        if paginator is not None:
            paginators[(path, method.lower())] = paginator
    for path, item in result.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict):
                continue
            for parameter in operation.get("parameters", []):
                schema = parameter.get("schema", {})
                if schema.get("type") != "integer":
                    continue
                if parameter.get("in") == "path" and parameter.get("name") == "id":
                    schema["minimum"] = 1
                elif parameter.get("in") == "query" and parameter.get("name") == "page_size":
                    paginator = paginators.get((path, method))
                    if paginator is None or getattr(paginator, "page_size_query_param", None) != "page_size":
                        continue
                    schema["minimum"] = 1
                    if paginator.max_page_size:
                        schema["maximum"] = paginator.max_page_size
                        parameter["description"] = (
                            f"Results per page: {paginator.page_size} by default, from 1 to {paginator.max_page_size} "
                            "(anything else is refused: 400 invalid_value)."
                        )
    return result


def document_conversation_enums(result, generator, request, public):
    """Document the fixed choices of a conversation's channel and status and a message's role in the outputs.

    The output serializers declare them as plain CharFields, but the model fields have choices and
    CHECK constraints (conversations/models.py), so no other value can come back.
    """
    from conversations.models import Conversation, Message

    schemas = result.get("components", {}).get("schemas", {})
    targets = {
        "Conversation": {"channel": ("ChannelEnum", Conversation.Channel), "status": ("ConversationStatusEnum", Conversation.Status)},
        "ConversationDetail": {"channel": ("ChannelEnum", Conversation.Channel), "status": ("ConversationStatusEnum", Conversation.Status)},
        "ConversationOutput": {"channel": ("ChannelEnum", Conversation.Channel), "status": ("ConversationStatusEnum", Conversation.Status)},
        "Message": {"role": ("RoleEnum", Message.Role)},
    }
    for component_name, fields in targets.items():
        properties = schemas.get(component_name, {}).get("properties", {})
        for field, (enum_name, choices) in fields.items():
            prop = properties.get(field)
            # Only a bare string: a serializer that already says more is left to say it.
            if not prop or prop.get("type") != "string" or "enum" in prop:
                continue
            enum = _enum_schema(choices)
            existing = schemas.get(enum_name)
            if existing is None:
                schemas[enum_name] = enum
            elif existing.get("enum") != enum["enum"]:
                # The name is taken by other values: say it in place rather than bend that enum.
                prop["enum"] = enum["enum"]
                continue
            del prop["type"]
            prop["allOf"] = [{"$ref": f"#/components/schemas/{enum_name}"}]
    return result


def _enum_schema(choices) -> dict:
    # The shape drf-spectacular gives its own enum components, so the docs render them alike.
    return {
        "enum": list(choices.values),
        "type": "string",
        "description": "\n".join(f"* `{value}` - {label}" for value, label in choices.choices),
    }

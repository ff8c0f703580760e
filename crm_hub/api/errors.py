"""One error envelope for every 4xx: ``{"errors": [{"field", "code", "message", "allowed"?}]}``."""

from __future__ import annotations

from collections.abc import Mapping

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import IntegrityError
from django.http import Http404
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from contacts.selectors import merged_into
from crm_hub.api.negotiation import FormatNotAvailable
from crm_hub.api.permissions import MissingScope
from crm_hub.errors import FieldError, InputRejected

# DRF's generic codes, renamed to the contract's vocabulary.
CODE_NAMES = {
    "invalid": "invalid_value",
    "null": "required",
    "blank": "required",
    "max_length": "invalid_value",
    "min_length": "invalid_value",
    "max_value": "invalid_value",
    "min_value": "invalid_value",
    "invalid_choice": "invalid_value",
    "not_a_list": "invalid_value",
    "not_a_dict": "invalid_value",
    "max_string_length": "invalid_value",
    "date": "invalid_value",
    "datetime": "invalid_value",
    "does_not_exist": "invalid_value",
    "incorrect_type": "invalid_value",
    "empty": "required",
    "unique": "already_exists",
}


class ContactMergedAway(exceptions.NotFound):
    """A 404 for a contact id that lives on in another contact: the answer names it (``merged_into``)."""

    def __init__(self, contact_id: int, merged_into: int):
        super().__init__(f"Contact #{contact_id} was merged into contact #{merged_into}; use #{merged_into}.")
        self.merged_into = merged_into


TOO_LARGE_CODES = frozenset({"file_too_large", "request_too_large"})


def flatten_validation_error(detail, codes, prefix: str = "") -> list[dict]:
    """Turn DRF's nested error dict/list into a flat list with dotted field paths."""
    items: list[dict] = []
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = "" if key == "non_field_errors" else str(key)
            path = f"{prefix}.{name}" if prefix and name else (prefix or name)
            items += flatten_validation_error(value, codes.get(key) if isinstance(codes, dict) else codes, path)
    elif isinstance(detail, list):
        if all(isinstance(d, (str, exceptions.ErrorDetail)) for d in detail):
            code_list = codes if isinstance(codes, list) else [codes] * len(detail)
            for message, code in zip(detail, code_list, strict=True):
                items.append(error_item(prefix, str(code or "invalid"), str(message)))
        else:
            code_list = codes if isinstance(codes, list) else [codes] * len(detail)
            for index, (value, code) in enumerate(zip(detail, code_list, strict=True)):
                if value:
                    items += flatten_validation_error(value, code, f"{prefix}.{index}" if prefix else str(index))
    else:
        items.append(error_item(prefix, str(codes or "invalid"), str(detail)))
    return items


def validated(serializer) -> dict:
    """``serializer.validated_data``, or InputRejected naming every problem.

    Where the value must come from a list (a ChoiceField, at any depth) the error carries
    ``allowed``, as the contract asks; DRF's own message only says the value is not valid. An
    unknown key's error lists the keys allowed beside it.
    """
    try:
        serializer.is_valid(raise_exception=True)
    except exceptions.ValidationError as exc:
        raise InputRejected(
            FieldError(item["field"], item["code"], item["message"], allowed_at(serializer, item["field"], item["code"]))
            for item in flatten_validation_error(exc.detail, exc.get_codes())
        ) from None
    return serializer.validated_data


def allowed_at(serializer, path: str | None, code: str) -> list[str] | None:
    """What may stand at ``path`` ("messages.0.role") in ``serializer``: a ChoiceField's choices, or for an
    unknown key the keys of the object that holds it."""
    if not path:
        return None
    if code == "unknown_field":
        holder = _field_at(serializer, path.rpartition(".")[0])
        fields = getattr(holder, "fields", None)
        return sorted(fields) if isinstance(fields, Mapping) else None
    field = _field_at(serializer, path)
    if not isinstance(field, serializers.ChoiceField):
        return None
    # A field that also takes other spellings (a message's "user" for visitor) lists them too.
    return list(getattr(field, "allowed_values", None) or [str(key) for key in field.choices])


def _field_at(serializer, path: str):
    """The field at ``path`` in ``serializer`` (the serializer itself for ""), or None."""
    field = serializer
    for part in filter(None, path.split(".")):
        if part.isdigit():
            if not isinstance(field, (serializers.ListField, serializers.ListSerializer)):
                return None
            field = field.child
            continue
        fields = getattr(field, "fields", None)
        if not isinstance(fields, Mapping) or part not in fields:
            return None
        field = fields[part]
    return field


def error_item(field: str | None, code: str, message: str) -> dict:
    return {"field": field or None, "code": CODE_NAMES.get(code, code), "message": message}


def error_body(errors: list[dict]) -> dict:
    """The envelope; Django's own 404/500 handlers render it too, for paths under /api/."""
    return {"errors": errors}


MAX_ERRORS = 100


def capped_errors(errors: list[dict], limit: int = MAX_ERRORS) -> list[dict]:
    """The first ``limit`` errors and a note of how many more (50,000 unknown custom keys in a 0.6 MB body
    answered 9 MB: each error lists what is allowed)."""
    if len(errors) <= limit:
        return errors
    hidden = len(errors) - limit
    return [*errors[:limit], {"field": None, "code": "too_many_errors",
                              "message": f"{hidden:,} more errors are not shown; fix these and send again."}]


def error_response(errors: list[dict], status_code: int, headers: dict | None = None) -> Response:
    return Response(error_body(capped_errors(errors)), status=status_code, headers=headers)


def api_exception_handler(exc, context):
    """Render every API error in the one envelope; 5xx are left to Django."""
    if isinstance(exc, InputRejected):
        errors = exc.as_list()
        auth = getattr(context.get("request"), "auth", None)
        if auth is not None and hasattr(auth, "has_scope") and not auth.has_scope("contacts:read"):
            # "Contact #210 already has this email" answers who holds an address: a read.
            for error in errors:
                if error["code"] == "already_exists":
                    error["message"] = f"Another contact already has this {error['field'] or 'value'}."
        # A file over the size limit is a body too large, as one over the request limit is (413), whatever
        # else is wrong with it: its type is not worth fixing before its size.
        too_large = any(e["code"] in TOO_LARGE_CODES for e in errors)
        return error_response(errors, status.HTTP_413_REQUEST_ENTITY_TOO_LARGE if too_large else status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, IntegrityError) and "foreign key" in str(exc).lower():
        # The record written to was deleted (merged into another, erased) between the lookup and the
        # commit: as if it had been gone a moment earlier, a 404, not a 500.
        item = error_item(None, "not_found", "The contact was merged or deleted meanwhile; look it up again.")
        pk = (context.get("kwargs") or {}).get("pk")
        into = merged_into(pk) if isinstance(pk, int) else None
        if into is not None:
            item.update(message=f"Contact #{pk} was merged into contact #{into} meanwhile; use #{into}.", merged_into=into)
        return error_response([item], status.HTTP_404_NOT_FOUND)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, exceptions.ValidationError):
        return error_response(flatten_validation_error(exc.detail, exc.get_codes()), status.HTTP_400_BAD_REQUEST)
    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    if isinstance(exc, MissingScope):
        item = {"field": None, "code": "missing_scope", "message": str(exc.detail), "scope": exc.scope, "scopes": exc.scopes}
    elif isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
        item = {"field": "authorization", "code": "not_authenticated", "message": str(exc.detail)}
    elif isinstance(exc, exceptions.UnsupportedMediaType):
        accepted = [p.media_type for p in getattr(context.get("view"), "parser_classes", ())] or ["application/json"]
        request = context.get("request")
        sent = getattr(request, "META", {}).get("CONTENT_TYPE", "") if request is not None else ""
        # Without the header DRF names its fallback, "text/plain", which the client never sent.
        said = str(exc.detail) if sent else "The request has no Content-Type header."
        item = {"field": None, "code": "unsupported_media_type",
                "message": f"{said} Send the body with " + " or ".join(f"'Content-Type: {a}'" for a in accepted) + "."}
    elif isinstance(exc, FormatNotAvailable):
        item = {"field": "format", "code": "not_acceptable", "message": str(exc.detail), "allowed": exc.available}
    elif isinstance(exc, ContactMergedAway):
        item = {"field": None, "code": "not_found", "message": str(exc.detail), "merged_into": exc.merged_into}
    elif isinstance(exc, exceptions.Throttled):
        item = {"field": None, "code": "throttled", "message": f"Too many requests; retry in {exc.wait and int(exc.wait + 0.999)} s."}
    else:
        code = exc.get_codes() if isinstance(exc.get_codes(), str) else "error"
        item = {"field": getattr(exc, "field", None), "code": code, "message": str(exc.detail)}
    response.data = {"errors": [item]}
    return response

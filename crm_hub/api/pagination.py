"""Cursor pagination for the agent API's lists: DRF's, with the list's query checked before it runs.

A list answers 400, naming the parameter, for a cursor it did not make, a
``page_size`` out of range and a parameter it does not know. DRF answered the
first with 404 and quietly replaced the other two: a mistyped filter
(``?emial=``) listed every contact, and the first one could be taken for the
caller, as with a filter sent empty (crm_hub.api.filters).
"""

from __future__ import annotations

import datetime as dt

from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import models
from django.utils import timezone
from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination

from crm_hub.errors import FieldError, InputRejected

MAX_BIGINT = 2**63 - 1
INVALID_CURSOR = "Not a cursor of this list: pass back the whole `next` or `previous` link of a page, or leave cursor out."
# DRF's ?format= override: JSON is the only format, and anything else answers 406 (crm_hub.api.negotiation).
ALWAYS_KNOWN = ("format",)


class CheckedCursorPagination(CursorPagination):
    """DRF's CursorPagination that checks the cursor's position before it reaches the database.

    A DRF cursor is base64 of ``o=<offset>&r=<reverse>&p=<position>``. The position is the value of the
    first ordering field only, as text (``str(instance.updated_at)``); ties on it, which the tie-breaker
    (``-id``) orders, are stepped over with the offset. DRF checks the base64, the offset and the direction
    but hands the position to the ORM as it is, so a cursor made by hand or cut short (``p=2026``, a date
    that does not exist, one out of range) was a 500 from the lookup. Here the position must parse as that
    field's type (a date-time: with its offset, within range in UTC); if it does not, the answer is the one a
    cursor that is not base64 at all gets: 400 ``invalid_value`` on ``cursor``.
    """

    def paginate_queryset(self, queryset, request, view=None):
        self._cursor_model = queryset.model
        self._refuse_unknown_parameters(request, view)
        return super().paginate_queryset(queryset, request, view)

    def _refuse_unknown_parameters(self, request, view) -> None:
        filterset = getattr(view, "filterset_class", None)
        known = [*(filterset.base_filters if filterset else ()), self.cursor_query_param, self.page_size_query_param,
                 *ALWAYS_KNOWN]
        errors = [
            FieldError(name, "unknown_field", f"{name!r} is not a parameter of this list.", known)
            for name in request.query_params if name not in known
        ]
        # ?tag=vip&tag=lead read as tag=lead alone (the last one wins): say so instead of guessing.
        errors += [
            FieldError(name, "invalid_value", f"{name} is given {len(values)} times; give it once.")
            for name, values in request.query_params.lists() if name in known and len(values) > 1
        ]
        if errors:
            raise InputRejected(errors)

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        text = raw.strip()
        size = int(text) if text.isascii() and text.isdigit() and len(text) < 10 else 0
        if not 1 <= size <= self.max_page_size:
            raise InputRejected([FieldError(
                self.page_size_query_param, "invalid_value",
                f"Expected a whole number from 1 to {self.max_page_size} (default {self.page_size}).",
            )])
        return size

    def decode_cursor(self, request):
        try:
            cursor = super().decode_cursor(request)
        except NotFound:
            raise self._invalid_cursor() from None
        # self.ordering is settled before DRF decodes the cursor (paginate_queryset).
        if cursor is not None and cursor.position is not None and not self._position_fits(cursor.position):
            raise self._invalid_cursor()
        return cursor

    def _invalid_cursor(self) -> InputRejected:
        return InputRejected([FieldError(self.cursor_query_param, "invalid_value", INVALID_CURSOR)])

    def _position_fits(self, position: str) -> bool:
        name = self.ordering[0].lstrip("-")
        model = self._cursor_model
        try:
            field = model._meta.pk if name == "pk" else model._meta.get_field(name)
        except FieldDoesNotExist:
            return True  # an annotation: nothing to check it against, as in DRF
        return position_fits(field, position)


def position_fits(field: models.Field, position: str) -> bool:
    """Whether ``position`` (a cursor's text) is a value of ``field`` the database can compare with."""
    try:
        value = field.to_python(position)
    except (ValidationError, ValueError, TypeError, OverflowError):
        return False
    if isinstance(field, models.DateTimeField):
        # Positions are written with their offset; a bare date or a naive time is no cursor of ours.
        if not isinstance(value, dt.datetime) or timezone.is_naive(value):
            return False
        try:
            value.astimezone(dt.UTC)  # the database compares in UTC: near year 1 or 9999 that overflows
        except OverflowError:
            return False
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_BIGINT:
        return False
    return True

"""Cursor pagination for the agent API's lists: DRF's, with a cursor the lists did not make answered 404."""

from __future__ import annotations

import datetime as dt

from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import models
from django.utils import timezone
from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination

MAX_BIGINT = 2**63 - 1


class CheckedCursorPagination(CursorPagination):
    """DRF's CursorPagination that checks the cursor's position before it reaches the database.

    A DRF cursor is base64 of ``o=<offset>&r=<reverse>&p=<position>``. The position is the value of the
    first ordering field only, as text (``str(instance.updated_at)``); ties on it, which the tie-breaker
    (``-id``) orders, are stepped over with the offset. DRF checks the base64, the offset and the direction
    but hands the position to the ORM as it is, so a cursor made by hand or cut short (``p=2026``, a date
    that does not exist, one out of range) was a 500 from the lookup. Here the position must parse as that
    field's type (a date-time: with its offset, within range in UTC); if it does not, the answer is the one a
    cursor that is not base64 at all gets: 404 "Invalid cursor".
    """

    def paginate_queryset(self, queryset, request, view=None):
        self._cursor_model = queryset.model
        return super().paginate_queryset(queryset, request, view)

    def decode_cursor(self, request):
        cursor = super().decode_cursor(request)
        # self.ordering is settled before DRF decodes the cursor (paginate_queryset).
        if cursor is not None and cursor.position is not None and not self._position_fits(cursor.position):
            raise NotFound(self.invalid_cursor_message)
        return cursor

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

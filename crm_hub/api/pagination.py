"""Cursor pagination for the agent API's lists: DRF's, with the list's query checked before it runs.

A list answers 400, naming the parameter, for a cursor it did not make, a
``page_size`` out of range and a parameter it does not know. DRF answered the
first with 404 and quietly replaced the other two: a mistyped filter
(``?emial=``) listed every contact, and the first one could be taken for the
caller, as with a filter sent empty (crm_hub.api.filters).
"""

from __future__ import annotations

import binascii
import datetime as dt
from base64 import b64decode, b64encode
from urllib import parse

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac
from rest_framework.pagination import CursorPagination
from rest_framework.utils.urls import replace_query_param

from crm_hub.errors import FieldError, InputRejected

MAX_BIGINT = 2**63 - 1
INVALID_CURSOR = "Not a cursor of this list: pass back the whole `next` or `previous` link of a page, or leave cursor out."
# The shape of a real cursor (its signature depends on SECRET_KEY, so this one is refused).
EXAMPLE_CURSOR = "bz0tdXBkYXRlZF9hdCZrPTIwMjYtMDUtMDFUMTQlM0EzMCUzQTAwJTJCMDAlM0EwMCZpPTQy.3f9c2a7d1e5b8c04"
# DRF's ?format= override: JSON is the only format, and anything else answers 406 (crm_hub.api.negotiation).
ALWAYS_KNOWN = ("format",)


class CheckedCursorPagination(CursorPagination):
    """Keyset pagination on (sort key, id), with DRF's cursor links and response shape.

    DRF's CursorPagination keeps only the sort key's value in its cursor and steps over ties
    with an offset. An import writes thousands of contacts with one ``updated_at``: past a
    thousand ties the offset walked in place, handing back the same page as ``next`` forever,
    and pages overlapped. Here a cursor is the (key, id) of the row it follows, and the next
    page is every row strictly after it in (key, id) order: each row comes exactly once,
    however many share a key.

    ``order`` picks the direction (``ordering_choices``). Newest first is the default; a sync
    walks oldest first (with ``updated_since``), so a row changed during the walk comes again
    at the end instead of jumping ahead of the cursor and being missed.

    A cursor the list did not make (cut short, edited, another order's) answers 400 on
    ``cursor``: it is signed (a cut one could still parse and point elsewhere), and its key
    must parse as that field's type before it reaches the database.
    """

    order_query_param = "order"
    ordering_choices: tuple[str, ...] = ()  # the default (self.ordering[0]) and its reverse
    sync_filter = ""  # the filter a sync walks with, oldest first (contacts: updated_since)
    example_path = ""  # for the schema's example links: "contacts"

    def paginate_queryset(self, queryset, request, view=None):
        self._cursor_model = queryset.model
        self._refuse_unknown_parameters(request, view)
        self.request = request
        self.page_size = self.get_page_size(request)
        self.base_url = request.build_absolute_uri()
        self.key = self._order(request)
        self.descending = self.key.startswith("-")
        self.field = self.key.lstrip("-")
        after = self._decode(request)
        self.came_back = after is not None and after[2]
        queryset = queryset.order_by(self.key, "-id" if self.descending else "id")
        if after is not None:
            value, pk, backwards = after
            later = self.descending != backwards  # rows after the cursor have smaller keys when walking down
            op = "lt" if later else "gt"
            queryset = queryset.filter(Q(**{f"{self.field}__{op}": value}) | Q(**{self.field: value, f"id__{op}": pk}))
            if backwards:
                queryset = queryset.reverse()
        rows = list(queryset[: self.page_size + 1])
        more = len(rows) > self.page_size
        rows = rows[: self.page_size]
        if self.came_back:
            rows.reverse()
            self.has_next, self.has_previous = bool(rows), more
        else:
            self.has_next, self.has_previous = more, after is not None
        self.page = rows
        return rows

    def _order(self, request) -> str:
        default = self.ordering[0]
        choices = self.ordering_choices or (default,)
        given = request.query_params.get(self.order_query_param)
        if given is None:
            return default
        if given not in choices:
            raise InputRejected([FieldError(self.order_query_param, "invalid_value", "Unknown order.", list(choices))])
        return given

    def _decode(self, request) -> tuple | None:
        raw = request.query_params.get(self.cursor_query_param)
        if raw is None:
            return None
        body, _dot, signature = raw.rpartition(".")
        if not body or not constant_time_compare(signature, _signature(body)):
            raise self._invalid_cursor()  # cut short or edited: it could point anywhere, so none is taken
        try:
            parts = parse.parse_qs(b64decode(body.encode("ascii"), validate=False).decode("ascii"), strict_parsing=True)
            key, pk, backwards = parts["k"][0], int(parts["i"][0]), parts.get("r", ["0"])[0] == "1"
        except (ValueError, KeyError, UnicodeError, binascii.Error):
            raise self._invalid_cursor() from None
        if parts.get("o", [""])[0] != self.key or not 0 < pk <= MAX_BIGINT or not self._position_fits(key):
            raise self._invalid_cursor()
        return self._field().to_python(key), pk, backwards

    def _encode(self, row, *, backwards: bool) -> str:
        value = getattr(row, self.field)
        text = value.isoformat() if isinstance(value, dt.datetime) else str(value)
        query = parse.urlencode({"o": self.key, "k": text, "i": row.pk, **({"r": "1"} if backwards else {})})
        body = b64encode(query.encode("ascii")).decode("ascii")
        return replace_query_param(self.base_url, self.cursor_query_param, f"{body}.{_signature(body)}")

    def get_next_link(self):
        return self._encode(self.page[-1], backwards=False) if self.has_next and self.page else None

    def get_previous_link(self):
        return self._encode(self.page[0], backwards=True) if self.has_previous and self.page else None

    def _refuse_unknown_parameters(self, request, view) -> None:
        filterset = getattr(view, "filterset_class", None)
        known = [*(filterset.base_filters if filterset else ()), self.cursor_query_param, self.page_size_query_param,
                 *([self.order_query_param] if self.ordering_choices else []), *ALWAYS_KNOWN]
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

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        if self.ordering_choices:
            key = self.ordering[0].lstrip("-")
            sync = (
                f" Walk a sync that way, with {self.sync_filter}: a record changed during the walk comes again at the "
                f"end. {self.sync_filter} is when a change was made, and a write commits a moment later (an import "
                f"batch about a second), so ask from a minute before the last {key} seen and skip what you have."
            ) if self.sync_filter else ""
            parameters.append({
                "name": self.order_query_param, "required": False, "in": "query",
                "description": f"{self.ordering[0]} (the default: newest first) or {key} (oldest first).{sync}",
                "schema": {"type": "string", "enum": list(self.ordering_choices)},
            })
        return parameters

    def get_paginated_response_schema(self, schema):
        # DRF's own example links point at /accounts/ (one with a stray quote): ours look like ours.
        paginated = super().get_paginated_response_schema(schema)
        base = f"https://crm.example/api/v1/{self.example_path}?{self.cursor_query_param}="
        paginated["properties"]["next"]["example"] = base + EXAMPLE_CURSOR
        paginated["properties"]["previous"]["example"] = None
        return paginated

    def _invalid_cursor(self) -> InputRejected:
        return InputRejected([FieldError(self.cursor_query_param, "invalid_value", INVALID_CURSOR)])

    def _field(self) -> models.Field:
        return self._cursor_model._meta.get_field(self.field)

    def _position_fits(self, position: str) -> bool:
        return position_fits(self._field(), position)


def _signature(body: str) -> str:
    return salted_hmac("crm_hub.api.cursor", body, algorithm="sha256").hexdigest()[:16]


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

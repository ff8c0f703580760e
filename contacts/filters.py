"""Filters, columns and sort keys of the contact list (django-filter), shared by the list, bulk actions and export."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import django_filters
from django import forms
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import (
    Case,
    Exists,
    F,
    FloatField,
    OuterRef,
    QuerySet,
    Subquery,
    TextField,
    Value,
    When,
)
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.db.models.functions import Cast, Lower
from django.db.models.lookups import Regex
from django.http import QueryDict

from contacts.models import Contact, ContactStage, ContactTag, CustomField, Source, Stage, Tag
from contacts.selectors import search_contacts

CUSTOM_PREFIX = "cf."
# Text a double precision can read: digits with an optional fraction, or one digit and an exponent,
# bounded so that neither overflow (1e999) nor underflow to zero (1e-400) makes PostgreSQL's cast
# fail (its regular expressions allow counts up to 255, hence the split ranges).
NUMERIC_TEXT = (
    r"^\s*[-+]?("
    r"[0-9]{1,255}[0-9]{0,53}(\.[0-9]{0,255}[0-9]{0,45})?"
    r"|\.[0-9]{1,255}[0-9]{0,45}"
    r"|[0-9](\.[0-9]{0,16})?[eE][-+]?([0-9]{1,2}|[12][0-9]{2}|30[0-7])"
    r")\s*$"
)
FILTERABLE_CUSTOM_TYPES = (CustomField.Type.SINGLE_CHOICE, CustomField.Type.MULTIPLE_CHOICE, CustomField.Type.BOOLEAN)


# --- Columns ------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    sort_expr: Any = None  # None: not sortable
    nullable: bool = False
    custom: CustomField | None = None


STANDARD_COLUMNS: tuple[Column, ...] = (
    Column("name", "Name", Lower("name")),
    Column("phone", "Phone", F("phone_e164")),
    Column("email", "Email", F("email_normalized")),
    Column("company", "Company", Lower("company")),
    Column("position", "Position", Lower("position")),
    Column("city", "City", Lower("city")),
    Column("state", "State", Lower("state")),
    Column("country", "Country", Lower("country")),
    Column("tags", "Tags", None, True),  # sort expression built per query (subquery)
    Column("stage", "Stage", None, True),
    Column("owner", "Owner", F("owner__username"), True),
    Column("source", "Source", F("source")),
    Column("created", "Created", F("created_at")),
    Column("updated", "Updated", F("updated_at")),
    Column("last_activity", "Last activity", F("last_activity_at"), True),
)
DEFAULT_COLUMNS: tuple[str, ...] = ("name", "phone", "email", "company", "tags", "stage", "owner", "source", "last_activity")
DEFAULT_SORT = "-created"


def available_columns(definitions: list[CustomField]) -> dict[str, Column]:
    """Return every column the user may pick, standard first, then custom fields in display order."""
    columns = {c.key: c for c in STANDARD_COLUMNS}
    for definition in definitions:
        key = CUSTOM_PREFIX + definition.key
        columns[key] = Column(key, definition.label, None, True, definition)
    return columns


def chosen_columns(requested: list[str], columns: dict[str, Column]) -> list[Column]:
    keys = [k for k in requested if k in columns] or [k for k in DEFAULT_COLUMNS if k in columns]
    if "name" in keys:
        keys.remove("name")
    return [columns["name"], *(columns[k] for k in dict.fromkeys(keys))]


def sort_expression(column: Column):
    """Return the ORDER BY expression of a column (subqueries for tags and stage, typed JSON for custom fields)."""
    if column.key == "tags":
        return Subquery(
            ContactTag.objects.filter(contact=OuterRef("pk")).order_by(Lower("tag__name")).values("tag__name")[:1]
        )
    if column.key == "stage":
        return Subquery(
            ContactStage.objects.filter(contact=OuterRef("pk"))
            .order_by("pipeline__position", "pipeline_id")
            .values("stage__position")[:1]
        )
    if column.custom is not None:
        if column.custom.type in (CustomField.Type.NUMBER, CustomField.Type.DECIMAL):
            return numeric_sort_value(column.custom.key)
        # Cast to text: comparisons on a bare key transform are JSON lookups, which read a
        # keyset cursor's value ("Pro", "2026-01-02") as JSON and fail.
        return Cast(KeyTextTransform(column.custom.key, "custom"), TextField())
    return column.sort_expr


def numeric_sort_value(key: str) -> Case:
    """Return a number or decimal field's value as a double, NULL where the stored value is no number.

    A field's type can change while contacts hold values of the old one ("lower" in a field that
    became a number): PostgreSQL refuses to cast such text and the whole list failed, and SQLite
    reads it as 0. Only text that is a number is cast, on both, so the rest sorts with the empties.
    """
    text = KeyTextTransform(key, "custom")
    return Case(
        When(Regex(text, NUMERIC_TEXT), then=Cast(text, FloatField())),
        default=Value(None, output_field=FloatField()),
        output_field=FloatField(),
    )


def parse_sort(raw: str, columns: dict[str, Column]) -> tuple[Column, bool, str]:
    """Return (column, descending, normalized sort string); unknown sorts fall back to newest first."""
    text = (raw or "").strip()
    descending = text.startswith("-")
    key = text.lstrip("-")
    if key not in columns:
        key, descending = DEFAULT_SORT.lstrip("-"), True
    return columns[key], descending, ("-" if descending else "") + key


# --- FilterSet ------------------------------------------------------------------------


class _UserChoice(forms.ModelChoiceField):
    def label_from_instance(self, obj) -> str:
        return obj.get_full_name() or obj.get_username()


def _custom_choices(definition: CustomField) -> list[tuple[str, str]]:
    if definition.type == CustomField.Type.BOOLEAN:
        return [("true", "Yes"), ("false", "No")]
    return [(str(c), str(c)) for c in definition.choices or []]


_FORM_CLASSES: dict[tuple, type] = {}


def owner_filter_problem(value: str) -> str | None:
    """Why ``value`` cannot be an owner filter ("me", "none" or a user's id), or None when it can."""
    if value in ("", "none", "me"):
        return None
    if value.isdigit() and len(value) < 19 and get_user_model().objects.filter(pk=int(value)).exists():
        return None
    return f"The owner filter must be me, none or a user; {value[:40]!r} is none of these."


class OwnerFilterField(forms.CharField):
    def validate(self, value):
        super().validate(value)
        if problem := owner_filter_problem(value or ""):
            # Ignored, a mistyped link listed (and exported) every contact as if it were one owner's.
            raise forms.ValidationError(problem, code="invalid")


class OwnerFilter(django_filters.CharFilter):
    field_class = OwnerFilterField


class ContactFilter(django_filters.FilterSet):
    """The contact list's filters. Custom choice and yes/no fields get a filter each (``cf_<key>``)."""

    q = django_filters.CharFilter(method="filter_search", label="Search")
    source = django_filters.MultipleChoiceFilter(choices=Source.choices, label="Source")
    owner = OwnerFilter(method="filter_owner", label="Owner")
    tag = django_filters.ModelMultipleChoiceFilter(
        queryset=Tag.objects.order_by(Lower("name")), method="filter_tag", label="Tag"
    )
    stage = django_filters.ModelChoiceFilter(
        queryset=Stage.objects.select_related("pipeline").order_by("pipeline__position", "pipeline_id", "position"),
        method="filter_stage",
        label="Stage",
    )
    created = django_filters.DateFromToRangeFilter(field_name="created_at", label="Created")
    updated = django_filters.DateFromToRangeFilter(field_name="updated_at", label="Updated")
    no_phone_or_email = django_filters.BooleanFilter(
        method="filter_unreachable", label="Has no phone and no email", widget=forms.CheckboxInput
    )

    class Meta:
        model = Contact
        fields: list[str] = []

    def __init__(self, data=None, queryset=None, *, request=None, prefix=None, custom_fields=None, owner_choices=None):
        # Same as FilterSet.__init__ (django-filter 26), with a shallow copy of the filters.
        if queryset is None:
            queryset = Contact.objects.all()
        self.is_bound = data is not None
        self.data = data or QueryDict()
        self.queryset = queryset
        self.request = request
        self.form_prefix = prefix
        self.filters = self._fresh_filters()
        for filter_ in self.filters.values():
            filter_.model = queryset.model
            filter_.parent = self
        self.custom_fields = [f for f in (custom_fields or []) if f.type in FILTERABLE_CUSTOM_TYPES]
        for definition in self.custom_fields:
            name = f"cf_{definition.key}"
            self.filters[name] = django_filters.ChoiceFilter(
                choices=_custom_choices(definition), label=definition.label, method=self._custom_method(definition)
            )
        if owner_choices is None:
            owner_choices = list(get_user_model().objects.filter(is_active=True, is_staff=True).order_by("username"))
        self.owner_choices = owner_choices

    @classmethod
    def _fresh_filters(cls) -> dict[str, django_filters.Filter]:
        # FilterSet.__init__ deep-copies every filter (and the querysets inside) per request. A
        # shallow copy is enough: per-request state is only model and parent, set afterwards, and
        # assigning ``method`` again binds the method proxy to the copy rather than the original.
        fresh = {}
        for name, base in cls.base_filters.items():
            clone = copy.copy(base)
            if clone.method is not None:
                clone.method = clone.method
            fresh[name] = clone
        return fresh

    def get_form_class(self):
        # django-filter builds a new Form class (and every form field) per request; the class is
        # stateless (each form deep-copies its fields), so one per set of custom filters serves all.
        signature = tuple((f.key, f.label, f.type, tuple(_custom_choices(f))) for f in self.custom_fields)
        form_class = _FORM_CLASSES.get(signature)
        if form_class is None:
            if len(_FORM_CLASSES) >= 32:
                _FORM_CLASSES.clear()
            form_class = _FORM_CLASSES[signature] = super().get_form_class()
        return form_class

    def filter_search(self, queryset: QuerySet[Contact], name: str, value: str) -> QuerySet[Contact]:
        return search_contacts(queryset, value)

    def filter_owner(self, queryset: QuerySet[Contact], name: str, value: str) -> QuerySet[Contact]:
        if value == "none":
            return queryset.filter(owner__isnull=True)
        if value == "me" and self.request is not None:
            return queryset.filter(owner=self.request.user)
        if value.isdigit():
            return queryset.filter(owner_id=int(value))
        return queryset

    def filter_tag(self, queryset: QuerySet[Contact], name: str, value) -> QuerySet[Contact]:
        # No tag chosen arrives as an empty queryset (``.none()``): testing it for truth would compile it.
        if value is None or (isinstance(value, QuerySet) and value.query.is_empty()) or not value:
            return queryset
        # EXISTS rather than a join: no duplicate rows, and the planner can stop at the first match.
        return queryset.filter(
            Exists(ContactTag.objects.filter(contact=OuterRef("pk"), tag__in=[t.pk for t in value]))
        )

    def filter_stage(self, queryset: QuerySet[Contact], name: str, value: Stage | None) -> QuerySet[Contact]:
        if value is None:
            return queryset
        return queryset.filter(Exists(ContactStage.objects.filter(contact=OuterRef("pk"), stage_id=value.pk)))

    def filter_unreachable(self, queryset: QuerySet[Contact], name: str, value: bool | None) -> QuerySet[Contact]:
        if not value:
            return queryset
        return queryset.filter(phone_e164="", email_normalized="", phone="", email="")

    @staticmethod
    def _custom_method(definition: CustomField):
        def method(queryset: QuerySet[Contact], name: str, value: str) -> QuerySet[Contact]:
            if value in (None, ""):
                return queryset
            return filter_custom_value(queryset, definition, value)

        return method


def filter_custom_value(queryset: QuerySet[Contact], definition: CustomField, value: str) -> QuerySet[Contact]:
    """Filter on one custom field value; on PostgreSQL through JSON containment, which the GIN index serves."""
    if definition.type == CustomField.Type.BOOLEAN:
        wanted: Any = value == "true"
    else:
        wanted = value
    if connection.vendor == "postgresql":
        stored = [wanted] if definition.type == CustomField.Type.MULTIPLE_CHOICE else wanted
        return queryset.filter(custom__contains={definition.key: stored})
    if definition.type == CustomField.Type.MULTIPLE_CHOICE:
        # SQLite has no JSON containment; match the quoted choice inside the stored JSON array text.
        return queryset.alias(_cf=KeyTextTransform(definition.key, "custom")).filter(_cf__contains=f'"{wanted}"')
    return queryset.alias(_cf=KeyTransform(definition.key, "custom")).filter(_cf=wanted)


def filter_is_active(params) -> bool:
    """Return whether any filter parameter (not columns, sort or paging) is set."""
    ignored = {"cols", "sort", "after", "before", "view", "page_size"}
    return any(key not in ignored and any(v.strip() for v in params.getlist(key)) for key in params)


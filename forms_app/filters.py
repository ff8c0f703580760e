"""Filters of the submissions list and its CSV export."""

import django_filters
from django import forms

from forms_app.models import Submission


class SubmissionFilter(django_filters.FilterSet):
    submitted_from = django_filters.DateFilter(
        field_name="created_at", lookup_expr="date__gte", label="From",
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    submitted_to = django_filters.DateFilter(
        field_name="created_at", lookup_expr="date__lte", label="To",
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    status = django_filters.ChoiceFilter(choices=Submission.Status.choices, empty_label="Any status")

    class Meta:
        model = Submission
        fields = ["submitted_from", "submitted_to", "status"]

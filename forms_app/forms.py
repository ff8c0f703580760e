"""Shape checks for the builder's settings; meaning is checked by forms_app.services."""

from __future__ import annotations

import json

from django import forms

from contacts.models import Tag
from forms_app import selectors


class StageChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj) -> str:
        return f"{obj.pipeline.name} → {obj.name}"


class OwnerChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj) -> str:
        return obj.get_full_name() or obj.get_username()


class FormSettingsForm(forms.Form):
    title = forms.CharField(max_length=120)
    slug = forms.CharField(
        max_length=80, required=False, label="Address",
        help_text="The public link is /f/<address>/. Leave empty to derive it from the title.",
    )
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    success_message = forms.CharField(
        max_length=500, required=False, widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Shown after a visitor submits. Leave empty for a friendly default.",
    )
    redirect_url = forms.CharField(
        max_length=200, required=False, label="Redirect URL",
        help_text="Optional: send visitors to this page instead of showing the message.",
    )
    tags = forms.ModelMultipleChoiceField(
        queryset=Tag.objects.order_by("name"), required=False, label="Tags to add",
        widget=forms.SelectMultiple(attrs={"size": 5}),
    )
    stage = StageChoiceField(
        queryset=selectors.stage_choices(), required=False, label="Pipeline stage to set", empty_label="Don't change",
    )
    owner = OwnerChoiceField(
        queryset=selectors.staff_users(), required=False, label="Owner (for contacts without one)",
        empty_label="Nobody",
    )
    fields_json = forms.CharField(widget=forms.HiddenInput, required=False)

    def clean_fields_json(self):
        raw = self.cleaned_data.get("fields_json") or "[]"
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            raise forms.ValidationError("The field list could not be read; reload the page.") from None
        if not isinstance(value, list):
            raise forms.ValidationError("The field list could not be read; reload the page.")
        return value

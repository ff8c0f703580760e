"""Filter pieces shared by the agent API's list endpoints."""

import datetime as dt

import django_filters
from django import forms
from django_filters.fields import IsoDateTimeField


class UtcIsoDateTimeField(IsoDateTimeField):
    def clean(self, value):
        parsed = super().clean(value)
        if parsed is not None:
            try:
                # Near year 1 or 9999 an offset pushes the time out of range once the database converts it to UTC.
                # In UTC: PostgreSQL refuses offsets past ±15:59 that Python accepts (+17:38 was a 500).
                parsed = parsed.astimezone(dt.UTC)
            except OverflowError:
                raise forms.ValidationError("Date-time out of range.", code="invalid") from None
        return parsed


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    """An ISO 8601 filter that answers 400 for a time the database cannot hold, not 500."""

    field_class = UtcIsoDateTimeField


class StrictBooleanField(forms.NullBooleanField):
    TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")

    def to_python(self, value):
        text = str(value).strip().lower() if value is not None else ""
        if text in self.TRUE:
            return True
        if text in self.FALSE:
            return False
        if text == "":
            return None
        raise forms.ValidationError("Expected true or false.", code="invalid")

    def validate(self, value):
        pass


class StrictBooleanFilter(django_filters.BooleanFilter):
    """true/false; anything else answers 400 instead of being ignored (which would list everything)."""

    field_class = StrictBooleanField

    def __init__(self, *args, **kwargs):
        # The default widgets turn any unknown text into None before the field sees it.
        kwargs.setdefault("widget", forms.TextInput)
        super().__init__(*args, **kwargs)


class CaseInsensitiveChoiceField(django_filters.fields.ChoiceField):
    """Takes a choice in any case ("API", "Chat"), as tags, stages and owners are matched."""

    def to_python(self, value):
        value = super().to_python(value)
        for choice, _label in self.choices:
            if isinstance(choice, str) and value and choice.casefold() == value.casefold():
                return choice
        return value


class CaseInsensitiveChoiceFilter(django_filters.ChoiceFilter):
    field_class = CaseInsensitiveChoiceField


class RefusesBlankFilterSet(django_filters.FilterSet):
    """A FilterSet whose ``refuse_blank`` parameters answer 400 when sent empty instead of being ignored.

    django-filter skips an empty value, so ``?phone=`` (an agent's unset variable) listed
    every contact, and the first one could be taken for the caller.
    """

    refuse_blank: tuple[str, ...] = ()

    def is_valid(self) -> bool:
        """Refuse bad parameters in the API's words: a choice lists what is allowed, a time shows its shape.

        django-filter's own "Select a valid choice" named nothing to pick from, and "Enter a valid
        date/time" did not say that an unencoded "+" in an offset arrives as a space.
        """
        from crm_hub.errors import FieldError, InputRejected

        if super().is_valid():
            return True
        errors = []
        for name, problems in self.form.errors.as_data().items():
            field = self.form.fields.get(name)
            sent = str(self.data.get(name, ""))
            for problem in problems:
                if problem.code == "invalid_choice" and isinstance(field, forms.ChoiceField):
                    allowed = [str(value) for value, _label in field.choices if value != ""]
                    errors.append(FieldError(name, "invalid_value", f"{sent!r} is not one of the allowed values.", allowed))
                elif isinstance(field, StrictBooleanField):
                    errors.append(FieldError(name, "invalid_value", f"{sent!r}: expected true or false.", ["true", "false"]))
                elif isinstance(field, forms.DateTimeField) and problem.code == "invalid":
                    hint = " (a '+' in the offset must be sent as %2B)" if " " in sent else ""
                    errors.append(FieldError(name, "invalid_value",
                                             f"Expected an ISO 8601 date-time such as 2026-05-01T14:30:00Z{hint}."))
                else:
                    errors.append(FieldError(name, "invalid_value", " ".join(problem.messages)))
        raise InputRejected(errors)

    def filter_queryset(self, queryset):
        from crm_hub.errors import FieldError, InputRejected

        blank = [name for name in self.refuse_blank if name in self.data and not str(self.data.get(name) or "").strip()]
        if blank:
            raise InputRejected([
                FieldError(name, "required", f"{name} is empty: give a value, or leave the parameter out.") for name in blank
            ])
        return super().filter_queryset(queryset)

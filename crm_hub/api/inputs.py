"""What every request body of the agent API has in common."""

from __future__ import annotations

from collections.abc import Mapping

from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail
from rest_framework.settings import api_settings


class RefusesUnknownKeys(serializers.Serializer):
    """Keys the endpoint does not know are refused (code ``unknown_field``), not dropped.

    Dropped silently, a typo ("extarct": true, "emial") wrote nothing of what the agent meant and
    answered 200. Raised as DRF's own error, so a nested key's path reads ``messages.3.sent_at`` and
    every bad item of a list is named; ``validated`` adds the keys that are allowed there.
    """

    def to_internal_value(self, data):
        if not isinstance(data, Mapping):
            # DRF says "Expected a dictionary, but got int": to a caller who sent an id, not which object.
            raise serializers.ValidationError({api_settings.NON_FIELD_ERRORS_KEY: [ErrorDetail(
                f"Expected an object with the fields {', '.join(sorted(self.fields))}; got {_json_type(data)}.", code="invalid",
            )]})
        unknown = [key for key in data if key not in self.fields]
        if not unknown:
            return super().to_internal_value(data)
        # The list is in the message too: an LLM agent reads the words, not always ``allowed``.
        fields = ", ".join(sorted(self.fields))
        errors = {
            str(key): [ErrorDetail(f"{key!r} is not a field here; the fields are {fields}.", code="unknown_field")]
            for key in unknown
        }
        try:
            # The known fields are still checked, so one answer names every problem the shapes show.
            super().to_internal_value({key: value for key, value in data.items() if key in self.fields})
        except serializers.ValidationError as exc:
            if isinstance(exc.detail, Mapping):
                errors = {**exc.detail, **errors}
        raise serializers.ValidationError(errors)


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    return "a list" if isinstance(value, list) else type(value).__name__

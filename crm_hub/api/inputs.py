"""What every request body of the agent API has in common."""

from __future__ import annotations

from collections.abc import Mapping

from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail


class RefusesUnknownKeys(serializers.Serializer):
    """Keys the endpoint does not know are refused (code ``unknown_field``), not dropped.

    Dropped silently, a typo ("extarct": true, "emial") wrote nothing of what the agent meant and
    answered 200. Raised as DRF's own error, so a nested key's path reads ``messages.3.sent_at`` and
    every bad item of a list is named; ``validated`` adds the keys that are allowed there.
    """

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            unknown = [key for key in data if key not in self.fields]
            if unknown:
                # The list is in the message too: an LLM agent reads the words, not always ``allowed``.
                fields = ", ".join(sorted(self.fields))
                raise serializers.ValidationError({
                    str(key): [ErrorDetail(f"{key!r} is not a field here; the fields are {fields}.", code="unknown_field")]
                    for key in unknown
                })
        return super().to_internal_value(data)

"""Content negotiation for the agent API: JSON is the one format, and asking for another says so."""

from __future__ import annotations

from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation


class FormatNotAvailable(NotAcceptable):
    def __init__(self, asked: str, available: list[str]):
        super().__init__(f"Format {asked!r} is not available; this API answers in {', '.join(available)}.")
        self.available = available


class JsonOnlyNegotiation(DefaultContentNegotiation):
    """DRF answers ``?format=xml`` with a bare 404, as if the path did not exist; here it is a 406 naming the formats."""

    def filter_renderers(self, renderers, format):
        matching = [r for r in renderers if r.format == format]
        if not matching:
            raise FormatNotAvailable(format, sorted({r.format for r in renderers}))
        return matching

"""Request body parsers for the agent API: DRF's, with clear 4xx answers where DRF's would be a 500 or a puzzle."""

from __future__ import annotations

import io

from rest_framework import parsers
from rest_framework.exceptions import ParseError, UnsupportedMediaType


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            # json raises RecursionError, not ValueError, for a few thousand nested brackets.
            raise ParseError("JSON parse error - the body is nested too deeply.") from None


class FormParser(parsers.FormParser):
    def parse(self, stream, media_type=None, parser_context=None):
        body = stream.read() if stream is not None else b""
        if body.lstrip()[:1] in (b"{", b"["):
            # curl -d sends JSON as form data unless told otherwise; read as a form, the whole
            # body would become one unknown field name.
            raise UnsupportedMediaType(
                media_type,
                detail="The body is JSON but was sent as form data; send it with 'Content-Type: application/json'.",
            )
        return super().parse(io.BytesIO(body), media_type, parser_context)

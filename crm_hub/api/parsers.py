"""Request body parsers for the agent API: DRF's, with clear 4xx answers where DRF's would be a 500 or a puzzle."""

from __future__ import annotations

from rest_framework import parsers
from rest_framework.exceptions import ParseError

from crm_hub.errors import FieldError, InputRejected
from crm_hub.unstorable import MESSAGES, unstorable_text


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            # json raises RecursionError, not ValueError, for a few thousand nested brackets.
            raise ParseError("JSON parse error - the body is nested too deeply.") from None
        # Values are the fields' business (each refuses such text at its own path). A key is not:
        # it reaches error messages and JSON columns as it is, and a lone surrogate cannot even
        # be encoded into the answer that would name it.
        found = unstorable_text(data, keys_only=True)
        if found:
            path, code = found
            raise InputRejected([FieldError(path or None, code, f"An object key holds text that cannot be stored. {MESSAGES[code]}")])
        return data

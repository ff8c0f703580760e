"""Request body parsers for the agent API: DRF's, with clear 4xx answers where DRF's would be a 500 or a puzzle."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError

from crm_hub.errors import FieldError, InputRejected

_SURROGATE = re.compile("[\ud800-\udfff]")


def _bad_key(value: Any, path: str = "") -> FieldError | None:
    """The first object key in ``value`` that holds NUL or a lone surrogate, as an error at its object's path.

    Values are the fields' business (each refuses such text with its own path). A key
    is not: it reaches error messages and JSON columns as it is, and a lone surrogate
    cannot even be encoded into the answer that would name it.
    """
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and ("\x00" in key or _SURROGATE.search(key)):
                code = "null_characters_not_allowed" if "\x00" in key else "surrogate_characters_not_allowed"
                where = f"an object key in {path}" if path else "an object key"
                return FieldError(path or None, code, f"{where.capitalize()} holds a null character or a lone surrogate.")
            found = _bad_key(item, f"{path}.{key}" if path else key)
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _bad_key(item, f"{path}.{index}" if path else str(index))
            if found:
                return found
    return None


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            # json raises RecursionError, not ValueError, for a few thousand nested brackets.
            raise ParseError("JSON parse error - the body is nested too deeply.") from None
        problem = _bad_key(data)
        if problem:
            raise InputRejected([problem])
        return data

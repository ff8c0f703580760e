"""Text no database can store: one check for the API's parser, the conversation services and extraction."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# The codes DRF's CharField gives the same refusal, so text is judged alike whichever endpoint brings it.
NUL_CODE = "null_characters_not_allowed"
SURROGATE_CODE = "surrogate_characters_not_allowed"
MESSAGES = {
    NUL_CODE: "Null characters are not allowed.",
    SURROGATE_CODE: "Lone surrogate characters (U+D800 to U+DFFF) are not allowed.",
}
_SURROGATE = re.compile("[\ud800-\udfff]")


def unstorable_text(value: Any, path: str = "", *, keys_only: bool = False) -> tuple[str, str] | None:
    """Return (path, code) of the first text in ``value`` no database can store, or None.

    Looks into objects (keys too) and lists; ``keys_only`` skips the values (the fields
    refuse those themselves, with their own paths). PostgreSQL refuses NUL in text and
    jsonb, and a lone surrogate cannot be encoded for any database: stored unchecked,
    either is a 500, not a 400.
    """
    if isinstance(value, str):
        if keys_only:
            return None
        if "\x00" in value:
            return path, NUL_CODE
        if _SURROGATE.search(value):
            return path, SURROGATE_CODE
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            # A bad key is reported at its object: a path holding it could not be rendered in the answer either.
            found = unstorable_text(key, path) or unstorable_text(
                item, f"{path}.{key}" if path else str(key), keys_only=keys_only
            )
            if found:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = unstorable_text(item, f"{path}.{index}" if path else str(index), keys_only=keys_only)
            if found:
                return found
    return None

"""The one validation error type every write path raises and every surface renders."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class FieldError:
    field: str  # dotted path: "phone", "custom.budget", "contacts.3.email"
    code: str  # machine code: required, invalid_phone, unknown_tag, ...
    message: str  # for a person
    allowed: list[str] | None = None  # the permitted values, where the value comes from a list

    def as_dict(self) -> dict:
        data = asdict(self)
        if data["allowed"] is None:
            del data["allowed"]
        return data


class InputRejected(Exception):
    """Raised before anything is written; carries every bad field, not just the first."""

    def __init__(self, errors: Iterable[FieldError]):
        self.errors: list[FieldError] = list(errors)
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in self.errors))

    def prefixed(self, prefix: str) -> InputRejected:
        """Return the same errors with their field paths under ``prefix``."""
        return InputRejected(
            replace(e, field=f"{prefix}.{e.field}" if e.field else prefix) for e in self.errors
        )

    def as_list(self) -> list[dict]:
        return [e.as_dict() for e in self.errors]

    @property
    def fields(self) -> list[str]:
        return [e.field for e in self.errors]

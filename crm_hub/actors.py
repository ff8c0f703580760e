"""Who made a change: a staff user, an agent token, or the system (rule, form, import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from crm_hub.models import Agent


@dataclass(frozen=True)
class Actor:
    user: AbstractBaseUser | None = None
    agent: Agent | None = None
    # For changes no person or agent made directly: "automation rule 3", "form contact-us".
    system: str = ""

    @classmethod
    def for_user(cls, user) -> Actor:
        return cls(user=user if user is not None and user.is_authenticated else None)

    @classmethod
    def for_agent(cls, agent) -> Actor:
        return cls(agent=agent)

    @classmethod
    def for_system(cls, what: str) -> Actor:
        return cls(system=what)

    @property
    def kind(self) -> str:
        if self.agent is not None:
            return "agent"
        if self.user is not None:
            return "user"
        return "system"

    @property
    def is_staff_user(self) -> bool:
        return self.user is not None and bool(getattr(self.user, "is_staff", False))

    @property
    def is_agent(self) -> bool:
        return self.agent is not None

    @property
    def label(self) -> str:
        if self.agent is not None:
            return f"agent {self.agent.name}"
        if self.user is not None:
            return self.user.get_full_name() or self.user.get_username()
        return self.system or "system"

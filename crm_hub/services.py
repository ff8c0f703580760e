"""Writes for agent tokens: create, rotate and revoke. Tokens are shown once, stored hashed."""

from __future__ import annotations

import hashlib
import secrets

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from crm_hub.errors import FieldError, InputRejected
from crm_hub.models import Agent, rate_limit_validator

TOKEN_PREFIX_LENGTH = 12


def hash_token(raw_token: str) -> str:
    # Tokens carry 256 bits of randomness, so a fast hash is enough (no password stretching).
    return hashlib.sha256(raw_token.encode()).hexdigest()


def _new_token() -> str:
    return "crm_" + secrets.token_urlsafe(32)


def _validate_scopes(scopes: list[str]) -> list[str]:
    allowed = [s.value for s in Agent.Scope]
    unknown = [s for s in scopes if s not in allowed]
    if unknown:
        raise InputRejected(
            [FieldError("scopes", "invalid_value", f"Unknown scope(s): {', '.join(unknown)}.", allowed)]
        )
    return sorted(set(scopes))


@transaction.atomic
def create_agent(
    *, name: str, scopes: list[str], description: str = "", rate_limit: str = "600/min", is_active: bool = True
) -> tuple[Agent, str]:
    """Create an agent and return it with its raw token (the only time the token is seen)."""
    name = name.strip()
    if not name:
        raise InputRejected([FieldError("name", "required", "An agent needs a name.")])
    if Agent.objects.filter(name=name).exists():
        raise InputRejected([FieldError("name", "invalid_value", f"An agent named {name!r} exists.")])
    try:
        rate_limit_validator(rate_limit)
    except ValidationError as exc:
        raise InputRejected([FieldError("rate_limit", "invalid_value", exc.messages[0])]) from None
    agent = Agent(
        name=name, description=description, scopes=_validate_scopes(scopes), rate_limit=rate_limit,
        is_active=is_active,
    )
    raw = _apply_new_token(agent)
    agent.save()
    return agent, raw


def _apply_new_token(agent: Agent) -> str:
    raw = _new_token()
    agent.token_hash = hash_token(raw)
    agent.token_prefix = raw[:TOKEN_PREFIX_LENGTH]
    agent.token_created_at = timezone.now()
    agent.revoked_at = None
    return raw


@transaction.atomic
def rotate_agent_token(*, agent: Agent) -> str:
    """Replace the agent's token; the old one stops working at once."""
    raw = _apply_new_token(agent)
    agent.save(update_fields=["token_hash", "token_prefix", "token_created_at", "revoked_at"])
    return raw


@transaction.atomic
def revoke_agent_token(*, agent: Agent) -> None:
    agent.token_hash = ""
    agent.revoked_at = timezone.now()
    agent.save(update_fields=["token_hash", "revoked_at"])

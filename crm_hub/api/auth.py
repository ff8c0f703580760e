"""Bearer-token authentication for agents: tokens are looked up by hash, never stored in clear."""

from __future__ import annotations

import datetime as dt
import functools

from django.db import connection
from django.utils import timezone
from rest_framework import authentication, exceptions

from crm_hub import rawsql
from crm_hub.models import Agent
from crm_hub.services import hash_token

# Writing last_used_at on every call would add a write per request; once a minute is enough to see activity.
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


class AgentUser:
    """What ``request.user`` is for an agent call: authenticated, never staff."""

    is_authenticated = True
    is_anonymous = False
    is_staff = False
    is_superuser = False
    is_active = True

    def __init__(self, agent: Agent):
        self.agent = agent
        self.pk = None
        self.id = None

    def __str__(self) -> str:
        return f"agent:{self.agent.name}"

    def get_username(self) -> str:
        return f"agent:{self.agent.name}"


def agent_for_token(http_request, raw_token: str) -> Agent | None:
    """Return the active agent holding ``raw_token``; looked up once per request and remembered on it.

    The idempotency middleware authenticates before DRF does; both use this, so a call costs one lookup.
    """
    cached = getattr(http_request, "_crm_agent_lookup", None)
    if cached is not None and cached[0] == raw_token:
        return cached[1]
    rows = rawsql.fetch(_agent_by_token_sql(connection.vendor), [hash_token(raw_token)])
    agent = rawsql.columns(Agent).instance(rows[0]) if rows else None
    http_request._crm_agent_lookup = (raw_token, agent)
    return agent


@functools.cache
def _agent_by_token_sql(vendor: str) -> str:
    # Every API call runs this; built once rather than by the ORM per request.
    return (
        f"SELECT {rawsql.columns(Agent).select_list(rawsql.table(Agent))} FROM {rawsql.table(Agent)} "
        f"WHERE {rawsql.column(Agent, 'token_hash')} = %s AND {rawsql.column(Agent, 'token_hash')} <> '' AND {rawsql.column(Agent, 'is_active')} "
        f"AND {rawsql.column(Agent, 'revoked_at')} IS NULL"
    )


def bearer_token(http_request) -> str | None:
    """Return the token of an ``Authorization: Bearer <token>`` header, or None."""
    parts = http_request.META.get("HTTP_AUTHORIZATION", "").split()
    if len(parts) == 2 and parts[0].lower() == "bearer":
        return parts[1]
    return None


class AgentTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        parts = header.split()
        if parts[0].lower() != self.keyword.lower():
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Send the header as 'Authorization: Bearer <token>'.")
        agent = agent_for_token(request._request, parts[1])
        if agent is None:
            raise exceptions.AuthenticationFailed("The token is unknown, revoked, or its agent is inactive.")
        now = timezone.now()
        if agent.last_used_at is None or now - agent.last_used_at > LAST_USED_RESOLUTION:
            Agent.objects.filter(pk=agent.pk).update(last_used_at=now)
            agent.last_used_at = now
        return AgentUser(agent), agent

    def authenticate_header(self, request):
        return self.keyword

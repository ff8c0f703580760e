"""Per-token throttling: each agent's own ``rate_limit`` (e.g. "600/min")."""

from __future__ import annotations

from rest_framework.throttling import SimpleRateThrottle

from crm_hub.models import Agent


class AgentRateThrottle(SimpleRateThrottle):
    scope = "agent"

    def get_rate(self):
        # The rate is per agent, so it is resolved in allow_request, not from settings.
        return None

    def allow_request(self, request, view):
        agent = request.auth if isinstance(request.auth, Agent) else None
        if agent is None or not agent.rate_limit:
            return True
        self.rate = agent.rate_limit
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)

    def get_cache_key(self, request, view):
        return f"throttle_agent_{request.auth.pk}"


class AccessCheckThrottle(SimpleRateThrottle):
    """A separate, tight budget for POST access/check so it cannot be used to walk the contact list."""

    scope = "access_check"

    def get_rate(self):
        from django.conf import settings

        return settings.CRM_ACCESS_CHECK_RATE

    def get_cache_key(self, request, view):
        agent = request.auth if isinstance(request.auth, Agent) else None
        return f"throttle_access_check_{agent.pk}" if agent else None

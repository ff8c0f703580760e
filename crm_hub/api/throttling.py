"""Per-token throttling: each agent's own ``rate_limit`` (e.g. "600/min")."""

from __future__ import annotations

import logging
import time

from django.core.cache import cache
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle

from crm_hub.models import Agent

logger = logging.getLogger(__name__)
DEFAULT_RATE = Agent._meta.get_field("rate_limit").default


class AgentRateThrottle(BaseThrottle):
    """A sliding-window counter per agent: two integers in the cache, whatever the rate.

    DRF's SimpleRateThrottle keeps a list of every request time in the window and writes it
    back on each call; at an agent's "6000/min" that is thousands of floats pickled per request
    (and sent over the network with a Redis cache). Here the previous window's count is weighted
    by how much of it still overlaps the last ``duration`` seconds.
    """

    # Set on the Django request when the budget was already counted for it, before DRF's own check
    # (the idempotency middleware's hook admits a request before it runs an LLM call).
    ADMITTED = "_crm_rate_admitted"

    def allow_request(self, request, view):
        if getattr(getattr(request, "_request", request), self.ADMITTED, False):
            return True
        agent = request.auth if isinstance(request.auth, Agent) else None
        return self.allow_agent(agent)

    def admit_early(self, http_request, agent) -> bool:
        """Count the request against the agent's budget now; DRF's later check then lets it through."""
        if not self.allow_agent(agent):
            return False
        setattr(http_request, self.ADMITTED, True)
        return True

    def allow_agent(self, agent) -> bool:
        if agent is None or not agent.rate_limit:
            return True
        # DRF's own parser ("600/min" -> (600, 60)); it reads nothing from the throttle instance.
        try:
            limit, duration = SimpleRateThrottle.parse_rate(None, agent.rate_limit)
        except (KeyError, ValueError):
            # Written around the validators (shell, SQL): the default rate, not a 500 on every call.
            logger.error("agent %s has an unreadable rate_limit %r; using %s", agent.pk, agent.rate_limit, DEFAULT_RATE)
            limit, duration = SimpleRateThrottle.parse_rate(None, DEFAULT_RATE)
        now = time.time()
        window = int(now // duration)
        current_key, previous_key = f"throttle_agent_{agent.pk}_{window}", f"throttle_agent_{agent.pk}_{window - 1}"
        counts = cache.get_many([current_key, previous_key])
        current, previous = counts.get(current_key, 0), counts.get(previous_key, 0)
        into_window = (now % duration) / duration
        if previous * (1 - into_window) + current >= limit:
            self._wait = self._seconds_until_allowed(limit, duration, current, previous, into_window)
            return False
        if not cache.add(current_key, 1, timeout=2 * duration):
            try:
                cache.incr(current_key)
            except ValueError:  # expired between add and incr
                cache.add(current_key, 1, timeout=2 * duration)
        return True

    @staticmethod
    def _seconds_until_allowed(limit: int, duration: int, current: int, previous: int, into_window: float) -> float:
        if current >= limit or previous == 0:
            return (1 - into_window) * duration  # the next window starts with this one as "previous"
        # previous * (1 - t) + current < limit  =>  t > 1 - (limit - current) / previous
        return max(0.0, (1 - (limit - current) / previous) - into_window) * duration or 1.0

    def wait(self):
        return getattr(self, "_wait", None)


class AccessCheckThrottle(SimpleRateThrottle):
    """A separate, tight budget for POST access/check so it cannot be used to walk the contact list."""

    scope = "access_check"

    def get_rate(self):
        from django.conf import settings

        return settings.CRM_ACCESS_CHECK_RATE

    def get_cache_key(self, request, view):
        agent = request.auth if isinstance(request.auth, Agent) else None
        return f"throttle_access_check_{agent.pk}" if agent else None

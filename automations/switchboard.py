"""Which triggers have active rules and which events have subscribers, cached.

Every contact write calls ``run_rules`` and ``emit_event`` several times; most
CRMs have no rule for most triggers. Answering "nothing to do" from the cache
keeps the agent write path at its fixed statement budget. Saving or deleting a
Rule or WebhookEndpoint clears the cache (signals here are cache invalidation,
not business flow); ``SWITCHBOARD_TTL_SECONDS`` bounds staleness for processes
that do not share a cache (locmem), and changes made with ``QuerySet.update``.
"""

from __future__ import annotations

from django.conf import settings
from django.core.cache import cache
from django.db.models.signals import post_delete, post_save

CACHE_KEY = "automations:switchboard:v1"


def _ttl() -> int:
    return getattr(settings, "CRM_AUTOMATION_SWITCHBOARD_TTL_SECONDS", 30)


def _load() -> dict[str, frozenset[str]]:
    from automations.models import Rule, WebhookEndpoint

    triggers = frozenset(Rule.objects.filter(active=True).values_list("trigger", flat=True).distinct())
    events: set[str] = set()
    for subscribed in WebhookEndpoint.objects.filter(active=True).values_list("events", flat=True):
        events.update(subscribed or [])
    return {"triggers": triggers, "events": frozenset(events)}


def _state() -> dict[str, frozenset[str]]:
    state = cache.get(CACHE_KEY)
    if state is None:
        state = _load()
        cache.set(CACHE_KEY, state, _ttl())
    return state


def trigger_has_rules(trigger: str) -> bool:
    return trigger in _state()["triggers"]


def event_has_subscribers(event: str) -> bool:
    return event in _state()["events"]


def clear(**_kwargs) -> None:
    cache.delete(CACHE_KEY)


def connect() -> None:
    from automations.models import Rule, WebhookEndpoint

    for model in (Rule, WebhookEndpoint):
        post_save.connect(clear, sender=model, dispatch_uid=f"switchboard-save-{model.__name__}")
        post_delete.connect(clear, sender=model, dispatch_uid=f"switchboard-delete-{model.__name__}")

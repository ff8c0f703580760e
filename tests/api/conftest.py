import pytest
from django.core.cache import cache

from tests.api.factories import ALL_SCOPES, AgentClient, make_agent, make_taxonomy


@pytest.fixture(autouse=True)
def _fresh_cache():
    # Throttle counters live in the cache; each test starts with a clean budget.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def taxonomy(db):
    return make_taxonomy()


@pytest.fixture
def bot(db):
    agent, token = make_agent("writer-bot")
    return AgentClient(token)


@pytest.fixture
def bot_agent(bot):
    from crm_hub.models import Agent

    return Agent.objects.get(name="writer-bot")


@pytest.fixture
def full_bot(db):
    _agent, token = make_agent("full-bot", scopes=ALL_SCOPES)
    return AgentClient(token)

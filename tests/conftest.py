"""Shared fixtures. Tests run on SQLite by default and on PostgreSQL when DATABASE_URL names it."""

import os

import pytest

from crm_hub.actors import Actor

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Throttle counters and the automations switchboard must not leak from one test into the next."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def staff_user(db):
    from tests.contacts.factories import UserFactory

    return UserFactory(is_staff=True, username="staffer")


@pytest.fixture
def signed_in(client, staff_user):
    """The test client signed in as staff_user (a sales user)."""
    client.force_login(staff_user)
    return client


@pytest.fixture
def staff_actor(staff_user):
    return Actor.for_user(staff_user)


@pytest.fixture
def agent(db):
    from crm_hub.services import create_agent

    agent, _token = create_agent(name="test-bot", scopes=["contacts:read", "contacts:write"])
    return agent


@pytest.fixture
def agent_actor(agent):
    return Actor.for_agent(agent)


def pytest_sessionfinish(session, exitstatus):
    """In CI (CRM_FAIL_ON_SKIP=1) a skipped test fails the run: PostgreSQL, Redis and browser tests must run."""
    if os.environ.get("CRM_FAIL_ON_SKIP") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        names = ", ".join(report.nodeid for report in skipped[:20])
        if reporter:
            reporter.write_line(f"CRM_FAIL_ON_SKIP: {len(skipped)} test(s) were skipped: {names}", red=True)
        session.exitstatus = 1

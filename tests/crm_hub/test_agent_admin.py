import re

import pytest
from django.urls import reverse

from crm_hub.models import Agent
from crm_hub.services import hash_token
from tests.contacts.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(username="root", is_superuser=True))
    return client


def shown_token(response) -> str:
    text = " ".join(str(m) for m in response.context["messages"])
    return re.findall(r"<code>(crm_[^<]+)</code>", text)[-1]


def test_creating_an_agent_in_admin_shows_its_token_once_and_stores_the_hash(admin_client):
    response = admin_client.post(
        reverse("admin:crm_hub_agent_add"),
        {"name": "web-bot", "description": "", "is_active": "on", "scopes": ["contacts:read", "notes:write"],
         "rate_limit": "120/min"},
        follow=True,
    )
    token = shown_token(response)
    agent = Agent.objects.get(name="web-bot")
    assert agent.token_hash == hash_token(token) and agent.scopes == ["contacts:read", "notes:write"]
    again = admin_client.get(reverse("admin:crm_hub_agent_change", args=[agent.pk]))
    assert token not in again.content.decode()


def test_rotate_and_revoke_actions(admin_client):
    admin_client.post(reverse("admin:crm_hub_agent_add"),
                      {"name": "bot", "is_active": "on", "scopes": ["contacts:read"], "rate_limit": "600/min"})
    agent = Agent.objects.get()
    old_hash = agent.token_hash
    response = admin_client.post(reverse("admin:crm_hub_agent_changelist"),
                                 {"action": "rotate_token", "_selected_action": [agent.pk]}, follow=True)
    agent.refresh_from_db()
    assert agent.token_hash == hash_token(shown_token(response)) != old_hash
    admin_client.post(reverse("admin:crm_hub_agent_changelist"), {"action": "revoke_token", "_selected_action": [agent.pk]})
    agent.refresh_from_db()
    assert agent.token_hash == "" and agent.revoked_at is not None


def test_bad_rate_limit_is_refused_beside_the_field(admin_client):
    response = admin_client.post(reverse("admin:crm_hub_agent_add"),
                                 {"name": "bot", "is_active": "on", "scopes": [], "rate_limit": "lots"})
    assert "rate_limit" in response.context["adminform"].form.errors
    assert not Agent.objects.exists()


def test_an_agent_created_inactive_stays_inactive(admin_client):
    admin_client.post(reverse("admin:crm_hub_agent_add"), {"name": "paused", "scopes": [], "rate_limit": "600/min"})
    agent = Agent.objects.get(name="paused")
    assert agent.is_active is False and agent.token_hash

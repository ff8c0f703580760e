import io

import pytest
from django.core.management import CommandError, call_command

from crm_hub.errors import InputRejected
from crm_hub.models import Agent
from crm_hub.services import create_agent, hash_token, revoke_agent_token, rotate_agent_token

pytestmark = pytest.mark.django_db


def test_create_agent_command_prints_token_once_on_last_line_and_stores_only_its_hash():
    out = io.StringIO()
    call_command("create_agent", "voice-bot", "--scopes", "contacts:read,contacts:write,notes:write", stdout=out)
    token = out.getvalue().strip().splitlines()[-1]
    agent = Agent.objects.get(name="voice-bot")
    assert token.startswith("crm_") and len(token) > 40
    assert agent.token_hash == hash_token(token) and token not in agent.token_hash
    assert agent.token_prefix == token[:12]
    assert agent.scopes == ["contacts:read", "contacts:write", "notes:write"]


def test_create_agent_refuses_unknown_scope_listing_allowed():
    with pytest.raises(InputRejected) as caught:
        create_agent(name="x", scopes=["contacts:read", "admin:all"])
    assert caught.value.errors[0].code == "invalid_value"
    assert "identity:read" in caught.value.errors[0].allowed
    with pytest.raises(CommandError):
        call_command("create_agent", "y", "--scopes", "nope", stdout=io.StringIO())


def test_rotate_replaces_token_and_revoke_clears_it():
    agent, first = create_agent(name="bot", scopes=["contacts:read"])
    second = rotate_agent_token(agent=agent)
    agent.refresh_from_db()
    assert first != second and agent.token_hash == hash_token(second)
    revoke_agent_token(agent=agent)
    agent.refresh_from_db()
    assert agent.token_hash == "" and agent.revoked_at is not None


@pytest.mark.parametrize("rate", ["5/fortnight", "0/min", "abc", "10 per min"])
def test_create_agent_refuses_an_unreadable_rate_limit(rate):
    with pytest.raises(CommandError, match="N/sec, N/min, N/hour or N/day"):
        call_command("create_agent", "limited", "--rate-limit", rate, stdout=io.StringIO())
    assert not Agent.objects.exists()


def test_an_agent_whose_rate_was_stored_unreadable_is_throttled_at_the_default_not_refused(client):
    agent, token = create_agent(name="legacy", scopes=["contacts:read"])
    Agent.objects.filter(pk=agent.pk).update(rate_limit="5/fortnight")  # around the validators
    response = client.get("/api/v1/contacts", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200

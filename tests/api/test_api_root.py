"""What an agent gets at /api/v1/ itself and at paths no endpoint has, with DEBUG on or off."""

import pytest
from django.test import override_settings

from tests.api.factories import AgentClient, make_agent

pytestmark = pytest.mark.django_db


def test_the_api_root_points_at_the_docs_and_the_schema(client):
    body = client.get("/api/v1/").json()
    assert body["docs"].endswith("/api/v1/docs/") and body["schema"].endswith("/api/v1/schema/")


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("method, path", [("get", "nope"), ("get", "contacts/abc"), ("post", "contacts/upsert/x")])
def test_an_unknown_path_is_a_json_404(method, path, debug):
    _agent, token = make_agent("lost")
    with override_settings(DEBUG=debug):
        response = getattr(AgentClient(token), method)(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["errors"][0]["code"] == "not_found"


@pytest.mark.parametrize("method, path", [("get", "contacts/"), ("post", "contacts/upsert/")])
def test_a_trailing_slash_is_named_as_the_mistake(method, path):
    _agent, token = make_agent("slashed")
    with override_settings(DEBUG=True):
        response = getattr(AgentClient(token), method)(path)
    assert response.status_code == 404
    assert response.json()["errors"][0]["message"].endswith(f"use /api/v1/{path.rstrip('/')}.")

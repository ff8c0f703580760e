"""Builders for agent API tests: agents with tokens, a small taxonomy, JSON calls."""

from __future__ import annotations

import json

from django.test import Client

from contacts.models import CustomField, Pipeline, Stage, Tag
from crm_hub.services import create_agent

ALL_SCOPES = [
    "contacts:read", "contacts:write", "notes:write", "tasks:write", "files:write", "conversations:write",
    "identity:read",
]
WRITER_SCOPES = ["contacts:read", "contacts:write", "notes:write", "tasks:write", "files:write", "conversations:write"]


def make_agent(name: str = "bot", scopes=None, rate_limit: str = "10000/min"):
    return create_agent(name=name, scopes=list(WRITER_SCOPES if scopes is None else scopes), rate_limit=rate_limit)


class AgentClient:
    """Django's test client with the agent's bearer token and JSON bodies."""

    def __init__(self, token: str | None, client: Client | None = None):
        self.client = client or Client()
        self.headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}

    def _send(self, method: str, path: str, body=None, key: str | None = None, **extra):
        headers = dict(self.headers, **extra)
        if key is not None:
            headers["HTTP_IDEMPOTENCY_KEY"] = key
        call = getattr(self.client, method)
        if body is None:
            return call(f"/api/v1/{path}", **headers)
        return call(f"/api/v1/{path}", data=json.dumps(body), content_type="application/json", **headers)

    def get(self, path: str, params=None, **extra):
        return self.client.get(f"/api/v1/{path}", params or {}, **dict(self.headers, **extra))

    def post(self, path, body=None, key=None, **extra):
        return self._send("post", path, body if body is not None else {}, key, **extra)

    def patch(self, path, body=None, key=None, **extra):
        return self._send("patch", path, body if body is not None else {}, key, **extra)

    def put(self, path, body=None, key=None, **extra):
        return self._send("put", path, body if body is not None else {}, key, **extra)

    def delete(self, path, **extra):
        return self.client.delete(f"/api/v1/{path}", **dict(self.headers, **extra))


def make_taxonomy() -> dict:
    lead = Tag.objects.create(name="Lead")
    vip = Tag.objects.create(name="VIP")
    sales = Pipeline.objects.create(name="Sales", position=0)
    new = Stage.objects.create(pipeline=sales, name="New", position=0)
    qualified = Stage.objects.create(pipeline=sales, name="Qualified", position=1)
    support = Pipeline.objects.create(name="Support", position=1)
    Stage.objects.create(pipeline=support, name="Open", position=0)
    budget = CustomField.objects.create(
        key="budget", label="Budget", type=CustomField.Type.NUMBER, allow_for_ai=True,
    )
    intent = CustomField.objects.create(
        key="intent", label="Intent score", type=CustomField.Type.DECIMAL, allow_for_ai=True,
        bands=[{"min": 0, "max": 0.4, "label": "Cold"}, {"min": 0.4, "max": 0.7, "label": "Warm"},
               {"min": 0.7, "max": 1, "label": "Hot"}],
    )
    internal = CustomField.objects.create(
        key="credit_limit", label="Credit limit", type=CustomField.Type.NUMBER, allow_for_ai=False,
    )
    return {"lead": lead, "vip": vip, "sales": sales, "new": new, "qualified": qualified, "support": support,
            "budget": budget, "intent": intent, "internal": internal}

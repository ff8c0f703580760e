"""Races on real transactions: PostgreSQL only (SQLite serializes writers anyway)."""

import threading

import pytest
from django.db import connection
from rest_framework.test import APIClient

from contacts.models import Contact, Note
from conversations.models import Conversation, Message
from crm_hub.services import create_agent

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL (DATABASE_URL=postgres://...)"),
]

URL = "/api/v1/conversations"
THREADS = 8


def run_concurrently(token, call):
    """Run ``call(client)`` from THREADS threads at once; return the responses."""
    barrier = threading.Barrier(THREADS)
    results = [None] * THREADS

    def worker(index):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        barrier.wait()
        try:
            results[index] = call(client)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_starts_with_the_same_ids_make_one_conversation_and_store_messages_once():
    _agent, token = create_agent(name="race-bot", scopes=["contacts:read", "conversations:write"])
    body = {"external_id": "race", "messages": [{"role": "visitor", "content": "hi", "external_id": "m1"},
                                                {"role": "visitor", "content": "there", "external_id": "m2"}]}
    responses = run_concurrently(token, lambda c: c.post(URL, body, format="json"))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * (THREADS - 1) + [201]
    assert Conversation.objects.count() == 1
    assert Message.objects.count() == 2
    assert sum(r.json()["messages_added"] for r in responses) == 2


def test_concurrent_ends_with_intake_write_once():
    _agent, token = create_agent(name="end-bot", scopes=["contacts:read", "contacts:write", "notes:write", "conversations:write"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    conversation_id = client.post(URL, {"external_id": "e"}, format="json").json()["conversation"]["id"]
    body = {"summary": "done", "intake": {"contact": {"name": "Ana", "phone": "561 555 0192"}, "note": "Wants a demo"}}
    responses = run_concurrently(token, lambda c: c.post(f"{URL}/{conversation_id}/end", body, format="json"))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [409] * (THREADS - 1)
    assert Contact.objects.count() == 1 and Note.objects.count() == 1

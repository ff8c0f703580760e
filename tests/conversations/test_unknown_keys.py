"""Conversation endpoints refuse keys they do not know, as the contact endpoints do: a typo never ends a conversation."""

import pytest

from contacts.models import Contact, Note
from conversations.models import Conversation

pytestmark = pytest.mark.django_db


@pytest.fixture
def bot(api):
    class Bot:
        def post(self, path, body):
            return api.post(f"/api/v1/{path}", body, format="json")

    return Bot()


def codes(response):
    return [(e["field"], e["code"]) for e in response.json()["errors"]]


def start(bot, body=None):
    response = bot.post("conversations", body or {"messages": [{"role": "visitor", "content": "I'm Tom, 561 555 0177"}]})
    assert response.status_code == 201, response.content
    return response.json()["conversation"]["id"]


def test_a_typo_in_end_is_refused_and_the_conversation_stays_open(bot):
    conversation_id = start(bot)
    for body, field in (({"extarct": True}, "extarct"),
                        ({"intak": {"contact": {"name": "Lost", "phone": "+1 404 563 0001"}, "note": "x"}}, "intak")):
        response = bot.post(f"conversations/{conversation_id}/end", body)
        assert response.status_code == 400, response.content
        assert codes(response) == [(field, "unknown_field")]
    assert Conversation.objects.get().status == "open"
    assert bot.post(f"conversations/{conversation_id}/end", {"extract": True}).status_code == 200
    assert Contact.objects.count() == 1 and not Note.objects.filter(body__contains="x").exists()


def test_unknown_keys_in_start_and_messages_are_named_with_their_path(bot):
    response = bot.post("conversations", {"external_id": "x", "bogus": 1})
    assert response.status_code == 400 and codes(response) == [("bogus", "unknown_field")]
    conversation_id = start(bot)
    response = bot.post(f"conversations/{conversation_id}/messages",
                        {"messages": [{"role": "visitor", "content": "hi"},
                                      {"role": "visitor", "content": "hi", "timestamp": "2020-01-01"}]})
    assert response.status_code == 400
    assert codes(response) == [("messages.1.timestamp", "unknown_field")]
    assert "sent_at" in response.json()["errors"][0]["message"]  # says which fields there are
    assert "sent_at" in response.json()["errors"][0]["allowed"]
    assert Conversation.objects.count() == 1

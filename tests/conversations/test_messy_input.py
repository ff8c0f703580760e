"""Messy text and dates in conversation writes: NUL, lone surrogates and out-of-range times get a 400, never a 500.

Bodies are sent as JSON text with ``\\u0000`` and ``\\ud800`` escapes, as an agent's JSON library writes them.
SQLite stores NUL without complaint (PostgreSQL refuses it), so the tests assert the 400 and that nothing
was written rather than relying on the database to fail.
"""

from __future__ import annotations

import pytest

from contacts.models import Contact, HistoryEntry, Note
from conversations import services
from conversations.models import Conversation, Message
from crm_hub.actors import Actor
from crm_hub.errors import InputRejected
from tests.api.factories import AgentClient, make_agent

pytestmark = pytest.mark.django_db

NUL = "nul \x00 here"
SURROGATE = "lone \ud800 surrogate"
# Within range as written, out of range once converted to UTC (or, near year 1, below it).
LATE = "9999-12-31T23:59:59-05:00"
EARLY = "0001-01-01T00:00:00+14:00"


@pytest.fixture
def bot():
    _agent, token = make_agent("messy-bot")
    return AgentClient(token)


def errors(response) -> list[tuple[str, str]]:
    return [(e["field"], e["code"]) for e in response.json()["errors"]]


def intake(bot, conversation: dict, key: str | None = None):
    body = {"contact": {"name": "Ana Souza", "phone": "+15615550192"}, "conversation": {"external_id": "x", **conversation}}
    return bot.post("intake", body, key=key)


def assert_nothing_written():
    assert Contact.objects.count() == 0
    assert Conversation.objects.count() == 0
    assert Message.objects.count() == 0
    assert HistoryEntry.objects.count() == 0


# --- POST intake: the transcript ---------------------------------------------------------------


@pytest.mark.parametrize(("message", "expected"), [
    ({"role": "visitor", "content": NUL}, ("conversation.messages.0.content", "null_characters_not_allowed")),
    ({"role": "visitor", "content": SURROGATE}, ("conversation.messages.0.content", "surrogate_characters_not_allowed")),
    ({"role": "visitor", "content": "hi", "external_id": "m\x00"},
     ("conversation.messages.0.external_id", "null_characters_not_allowed")),
    ({"role": "visitor", "content": "hi", "external_id": "m\udfff"},
     ("conversation.messages.0.external_id", "surrogate_characters_not_allowed")),
    ({"role": "visitor", "content": "hi", "sent_at": LATE}, ("conversation.messages.0.sent_at", "overflow")),
    ({"role": "visitor", "content": "hi", "sent_at": EARLY}, ("conversation.messages.0.sent_at", "overflow")),
])
def test_intake_with_unstorable_message_is_refused_by_field_and_writes_nothing(bot, message, expected):
    response = intake(bot, {"messages": [{"role": "agent", "content": "Hello!"}, message]})
    assert response.status_code == 400, response.content
    field, code = expected
    assert errors(response) == [(field.replace(".0.", ".1."), code)]
    assert_nothing_written()


# transaction=True: no test transaction around the request, as in production.
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("metadata, expected", [
    ({"k": NUL}, ("conversation.metadata", "invalid_value")),
    ({"k": SURROGATE}, ("conversation.metadata", "invalid_value")),
    # A bad key is refused as the body is read, at the object that holds it.
    ({"nested": [{"k\x00": 1}]}, ("conversation.metadata.nested.0", "null_characters_not_allowed")),
])
def test_intake_with_unstorable_metadata_is_refused_and_writes_nothing(bot, metadata, expected):
    response = intake(bot, {"metadata": metadata, "messages": [{"role": "visitor", "content": "hi"}]})
    assert response.status_code == 400, response.content
    assert errors(response) == [expected]
    assert_nothing_written()


@pytest.mark.django_db(transaction=True)
def test_intake_with_unstorable_metadata_and_idempotency_key_is_a_400(bot):
    response = intake(bot, {"metadata": {"k": NUL}}, key="k-1")
    assert response.status_code == 400, response.content
    assert errors(response) == [("conversation.metadata", "invalid_value")]
    assert_nothing_written()


def test_refused_intake_leaves_no_conversation_for_a_retry_to_find(bot):
    assert intake(bot, {"messages": [{"role": "visitor", "content": SURROGATE}]}).status_code == 400
    fixed = intake(bot, {"messages": [{"role": "visitor", "content": "lone surrogate removed"}]})
    assert fixed.status_code == 201
    conversation = bot.get(f"conversations/{fixed.json()['conversation_id']}")
    assert conversation.status_code == 200
    assert [m["content"] for m in conversation.json()["messages"]] == ["lone surrogate removed"]


def test_message_sent_late_in_year_9999_utc_is_kept_and_reads_back(bot):
    response = intake(bot, {"messages": [{"role": "visitor", "content": "hi", "sent_at": "9999-12-31T23:59:59Z"}]})
    assert response.status_code == 201, response.content
    detail = bot.get(f"conversations/{response.json()['conversation_id']}")
    assert detail.status_code == 200
    assert detail.json()["messages"][0]["sent_at"] == "9999-12-31T23:59:59Z"


def test_out_of_range_sent_at_gets_the_same_answer_on_every_endpoint(bot):
    message = {"role": "visitor", "content": "hi", "sent_at": LATE}
    started = bot.post("conversations", {"external_id": "s", "messages": [message]})
    opened = bot.post("conversations", {"external_id": "a"}).json()["conversation"]["id"]
    appended = bot.post(f"conversations/{opened}/messages", {"messages": [message]})
    through_intake = intake(bot, {"messages": [message]})
    assert errors(started) == [("messages.0.sent_at", "overflow")]
    assert errors(appended) == [("messages.0.sent_at", "overflow")]
    assert errors(through_intake) == [("conversation.messages.0.sent_at", "overflow")]
    assert Message.objects.count() == 0


# --- POST conversations/{id}/end with an intake --------------------------------------------------


@pytest.mark.parametrize("body", [
    {"intake": {"contact": {"name": SURROGATE}}},
    {"intake": {"contact": {"name": "Ana"}, "note": SURROGATE}},
    {"intake": {"contact": {"name": "Ana", "city": NUL}}},
    {"intake": {"contact": {"name": "Ana"}, "task": {"title": SURROGATE, "due_at": "2026-06-01T10:00:00Z"}}},
    {"summary": "fine", "intake": {"contact": {"name": "Ana"}, "tags": [SURROGATE]}},
])
def test_end_with_unstorable_intake_text_is_refused_and_the_conversation_stays_open(bot, body):
    conversation_id = bot.post("conversations", {"external_id": "e"}).json()["conversation"]["id"]
    response = bot.post(f"conversations/{conversation_id}/end", body)
    assert response.status_code == 400, response.content
    assert errors(response) == [("intake", "invalid_value")]
    assert "intake." in response.json()["errors"][0]["message"]  # the message says where
    conversation = Conversation.objects.get(pk=conversation_id)
    assert conversation.status == Conversation.Status.OPEN and conversation.contact_id is None
    assert Contact.objects.count() == 0 and Note.objects.count() == 0


def test_end_with_unstorable_summary_is_refused(bot):
    conversation_id = bot.post("conversations", {"external_id": "e"}).json()["conversation"]["id"]
    response = bot.post(f"conversations/{conversation_id}/end", {"summary": SURROGATE})
    assert response.status_code == 400
    assert Conversation.objects.get(pk=conversation_id).status == Conversation.Status.OPEN


# --- Other entry points: start and append, and callers of the services that are not the API ----------


@pytest.mark.parametrize(("body", "expected"), [
    ({"metadata": {"k": SURROGATE}}, ("metadata", "invalid_value")),
    ({"metadata": {"list": ["ok", NUL]}}, ("metadata", "invalid_value")),
    ({"external_id": SURROGATE}, ("external_id", "surrogate_characters_not_allowed")),
    ({"messages": [{"role": "visitor", "content": SURROGATE}]}, ("messages.0.content", "surrogate_characters_not_allowed")),
    ({"started_at": LATE}, ("started_at", "overflow")),
])
def test_start_with_unstorable_input_is_refused(bot, body, expected):
    response = bot.post("conversations", {"external_id": "s", **body})
    assert response.status_code == 400, response.content
    assert errors(response) == [expected]
    assert Conversation.objects.count() == 0


def test_append_with_surrogate_is_refused(bot):
    conversation_id = bot.post("conversations", {"external_id": "a"}).json()["conversation"]["id"]
    response = bot.post(f"conversations/{conversation_id}/messages", {"messages": [{"role": "user", "content": SURROGATE}]})
    assert response.status_code == 400
    assert Message.objects.count() == 0


@pytest.fixture
def bot_actor(bot):
    from crm_hub.models import Agent

    return Actor.for_agent(Agent.objects.get(name="messy-bot"))


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"messages": [{"role": "visitor", "content": NUL}]}, ("messages.0.content", "null_characters_not_allowed")),
    ({"messages": [{"role": "visitor", "content": "hi", "sent_at": LATE}]}, ("messages.0.sent_at", "overflow")),
    ({"metadata": {"k": SURROGATE}}, ("metadata", "invalid_value")),
    ({"external_id": "x\x00"}, ("external_id", "invalid_value")),
    ({"started_at": EARLY}, ("started_at", "overflow")),
])
def test_service_callers_other_than_the_api_are_refused_too(bot_actor, kwargs, expected):
    with pytest.raises(InputRejected) as caught:
        services.start_conversation(actor=bot_actor, **kwargs)
    assert [(e.field, e.code) for e in caught.value.errors] == [expected]
    assert Conversation.objects.count() == 0


def test_get_or_create_refuses_unstorable_metadata_before_writing(bot_actor):
    with pytest.raises(InputRejected) as caught:
        services.get_or_create_conversation(agent=bot_actor.agent, external_id="g", metadata={"a": {"b": SURROGATE}})
    assert [(e.field, e.code) for e in caught.value.errors] == [("metadata", "invalid_value")]
    assert "metadata.a.b" in caught.value.errors[0].message
    assert Conversation.objects.count() == 0

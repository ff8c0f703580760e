import datetime as dt

import pytest
from django.db import IntegrityError
from django.utils import timezone

from contacts.models import Contact, HistoryEntry, Note, Source, Task
from contacts.services import upsert_contact
from conversations.models import Conversation, Message
from crm_hub.actors import Actor
from tests.contacts.factories import (
    ContactFactory,
    CustomFieldFactory,
    PipelineFactory,
    StageFactory,
    TagFactory,
)
from tests.conversations.factories import ConversationFactory, MessageFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/conversations"


def start(api, **body):
    return api.post(URL, body, format="json")


def end(api, conversation_id, **body):
    return api.post(f"{URL}/{conversation_id}/end", body, format="json")


def codes(response):
    return [(e["field"], e["code"]) for e in response.json()["errors"]]


# --- create-or-fetch and messages --------------------------------------------------------------


def test_same_external_id_twice_is_one_conversation(api):
    first = start(api, external_id="chat-1", channel="whatsapp", messages=[{"role": "visitor", "content": "Hi", "external_id": "m1"}])
    again = start(api, external_id="chat-1", channel="sms", messages=[{"role": "visitor", "content": "Hi", "external_id": "m1"}])
    assert first.status_code == 201 and first.json()["created"] is True and first.json()["messages_added"] == 1
    assert again.status_code == 200 and again.json()["created"] is False and again.json()["messages_added"] == 0
    assert first.json()["conversation"]["id"] == again.json()["conversation"]["id"]
    assert Conversation.objects.count() == 1
    conversation = Conversation.objects.get()
    assert conversation.channel == "whatsapp"  # taken only at creation
    assert conversation.messages.count() == 1


def test_external_id_is_unique_per_agent_not_globally(make_client):
    one, two = make_client(), make_client()
    a = start(one, external_id="chat-1").json()["conversation"]["id"]
    b = start(two, external_id="chat-1").json()["conversation"]["id"]
    assert a != b
    assert Conversation.objects.count() == 2


def test_message_resent_with_same_external_id_is_stored_once(api):
    conversation_id = start(api, external_id="chat-2").json()["conversation"]["id"]
    body = {"messages": [{"role": "visitor", "content": "call me", "external_id": "m1"},
                         {"role": "agent", "content": "sure", "external_id": "m2"}]}
    first = api.post(f"{URL}/{conversation_id}/messages", body, format="json")
    resent = api.post(f"{URL}/{conversation_id}/messages", body, format="json")
    mixed = api.post(f"{URL}/{conversation_id}/messages", {"messages": [
        {"role": "visitor", "content": "call me", "external_id": "m1"},
        {"role": "visitor", "content": "thanks", "external_id": "m3"},
    ]}, format="json")
    assert first.status_code == 201 and len(first.json()["added"]) == 2 and first.json()["duplicates"] == 0
    assert resent.status_code == 200 and resent.json()["added"] == [] and resent.json()["duplicates"] == 2
    assert mixed.status_code == 201 and [m["external_id"] for m in mixed.json()["added"]] == ["m3"]
    assert all(isinstance(m["id"], int) for m in first.json()["added"] + mixed.json()["added"])
    assert Message.objects.filter(conversation_id=conversation_id).count() == 3
    assert mixed.json()["conversation"]["message_count"] == 3


def test_chat_completion_roles_are_taken_and_a_bad_role_lists_the_allowed_ones(api):
    started = start(api, external_id="chat-roles", messages=[
        {"role": "user", "content": "Hi, I'm Eve"}, {"role": "assistant", "content": "Hi Eve"},
    ])
    assert started.status_code == 201
    assert list(Message.objects.order_by("id").values_list("role", flat=True)) == ["visitor", "agent"]
    refused = start(api, external_id="chat-roles-2", messages=[{"role": "robot", "content": "x"}])
    assert refused.status_code == 400
    error = refused.json()["errors"][0]
    assert (error["field"], error["code"]) == ("messages.0.role", "invalid_value")
    assert error["allowed"] == ["visitor", "agent", "staff", "system", "tool", "user", "assistant"]
    assert not Conversation.objects.filter(external_id="chat-roles-2").exists()


def test_database_refuses_a_second_message_with_the_same_external_id():
    message = MessageFactory(external_id="m1")
    with pytest.raises(IntegrityError):
        MessageFactory(conversation=message.conversation, external_id="m1")


def test_every_channel_and_role_passes_the_database_checks():
    for channel in Conversation.Channel.values:
        conversation = ConversationFactory(channel=channel)
    for role in Message.Role.values:
        MessageFactory(conversation=conversation, role=role)
    with pytest.raises(IntegrityError):
        ConversationFactory(status="ended", ended_at=None)


def test_bad_messages_are_refused_with_their_index(api):
    response = start(api, external_id="x", messages=[{"role": "visitor", "content": "ok"}, {"role": "robot", "content": ""}])
    assert response.status_code == 400
    fields = [f for f, _ in codes(response)]
    assert "messages.1.role" in fields and "messages.1.content" in fields
    assert Conversation.objects.count() == 0


def test_start_with_contact_id_links_and_records_history(api):
    contact = ContactFactory(name="Ana")
    response = start(api, external_id="c", contact_id=contact.pk)
    assert response.status_code == 201
    assert response.json()["conversation"]["contact_id"] == contact.pk
    entry = contact.history.get(action=HistoryEntry.Action.CONVERSATION)
    assert "linked" in entry.summary and entry.actor_agent == api.agent


def test_start_with_unknown_contact_or_nul_text_is_refused(api):
    assert codes(start(api, contact_id=10**12)) == [("contact_id", "not_found")]
    assert codes(start(api, metadata={"k": "a\x00b"})) == [("metadata", "invalid_value")]
    assert Conversation.objects.count() == 0


# --- end, with and without intake -------------------------------------------------------------


@pytest.fixture
def taxonomy():
    TagFactory(name="lead")
    stage = StageFactory(name="New", pipeline=PipelineFactory(name="Sales"))
    return stage


def test_end_with_intake_writes_one_contact_note_and_task_all_linked(api, taxonomy):
    conversation_id = start(api, external_id="chat-3", messages=[{"role": "visitor", "content": "I want a quote"}]).json()["conversation"]["id"]
    response = end(api, conversation_id, summary="Wants a quote for 20 seats.", intake={
        "contact": {"name": "Marcus Reed", "phone": "(561) 555-0192"},
        "tags": ["lead"], "pipeline": "Sales", "stage": "New",
        "task": {"title": "Send quote", "due_at": "2026-05-02T10:00:00Z"},
    })
    assert response.status_code == 200, response.json()
    body = response.json()
    conversation = Conversation.objects.get(pk=conversation_id)
    contact, note, task = Contact.objects.get(), Note.objects.get(), Task.objects.get()
    assert conversation.status == "ended" and conversation.ended_at is not None
    assert conversation.summary == "Wants a quote for 20 seats."
    assert conversation.contact == contact and note.contact == contact and task.contact == contact
    assert note.conversation == conversation and task.conversation == conversation
    assert "20 seats" in note.body  # the summary became the note, as the intake had none
    assert body["contact"]["id"] == contact.pk and body["created"] is True
    assert body["note_id"] == note.pk and body["task_id"] == task.pk
    assert body["completeness"]["clean"] is True
    assert body["conversation"]["status"] == "ended" and body["conversation"]["linked"] is True
    summaries = list(contact.history.filter(action="conversation").values_list("summary", flat=True))
    assert any("linked" in s for s in summaries) and any(s.endswith("ended") for s in summaries)
    assert contact.history.filter(conversation=conversation).count() >= 5


def test_failing_intake_leaves_the_conversation_open_and_writes_nothing(api, taxonomy):
    conversation_id = start(api, external_id="chat-4").json()["conversation"]["id"]
    history_before = HistoryEntry.objects.count()
    response = end(api, conversation_id, summary="x", intake={
        "contact": {"name": "Marcus", "phone": "555"},
        "tags": ["nope"],
        "task": {"title": "Call", "due_at": "2026-05-02T10:00:00Z"},
    })
    assert response.status_code == 400
    assert set(codes(response)) == {("intake.contact.phone", "invalid_phone"), ("intake.tags", "unknown_tag")}
    conversation = Conversation.objects.get(pk=conversation_id)
    assert conversation.status == "open" and conversation.ended_at is None and conversation.summary == ""
    assert (Contact.objects.count(), Note.objects.count(), Task.objects.count()) == (0, 0, 0)
    assert HistoryEntry.objects.count() == history_before
    # Fixed, the same end goes through.
    fixed = end(api, conversation_id, intake={"contact": {"name": "Marcus", "phone": "561 555 0192"}})
    assert fixed.status_code == 200 and Contact.objects.count() == 1


def test_unknown_intake_keys_and_intake_with_extract_are_refused(api):
    conversation_id = start(api, external_id="chat-5").json()["conversation"]["id"]
    response = end(api, conversation_id, intake={"contact": {"name": "A"}, "conversation": {"external_id": "z"}}, extract=True)
    assert set(codes(response)) == {("intake.conversation", "unknown_field"), ("extract", "invalid_value")}
    assert codes(end(api, conversation_id, extract=True, extractor="llm")) == [("extractor", "invalid_value")]
    assert Conversation.objects.get(pk=conversation_id).status == "open"


def test_ended_conversation_takes_no_new_messages_and_no_second_end(api):
    conversation_id = start(api, external_id="chat-6", messages=[{"role": "visitor", "content": "hi", "external_id": "m1"}]).json()["conversation"]["id"]
    assert end(api, conversation_id, summary="done").status_code == 200
    again = end(api, conversation_id, summary="again")
    assert again.status_code == 409 and codes(again) == [(None, "conversation_ended")]
    late = api.post(f"{URL}/{conversation_id}/messages", {"messages": [{"role": "visitor", "content": "one more"}]}, format="json")
    assert late.status_code == 409
    # A retry of something already stored is still answered, not refused.
    retry = api.post(f"{URL}/{conversation_id}/messages", {"messages": [{"role": "visitor", "content": "hi", "external_id": "m1"}]}, format="json")
    assert retry.status_code == 200 and retry.json()["duplicates"] == 1
    assert start(api, external_id="chat-6", messages=[{"role": "visitor", "content": "new"}]).status_code == 409
    assert Conversation.objects.get(pk=conversation_id).summary == "done"


def test_end_without_contact_records_nothing_on_contacts(api):
    conversation_id = start(api, external_id="chat-7").json()["conversation"]["id"]
    response = end(api, conversation_id)
    assert response.status_code == 200 and response.json()["contact"] is None
    assert HistoryEntry.objects.count() == 0


# --- visibility and scopes ---------------------------------------------------------------------


def test_agents_read_every_conversation_but_write_only_their_own(make_client):
    owner, other = make_client(), make_client()
    conversation_id = start(owner, external_id="mine").json()["conversation"]["id"]
    assert other.get(f"{URL}/{conversation_id}").status_code == 200
    assert other.post(f"{URL}/{conversation_id}/messages", {"messages": [{"role": "agent", "content": "hi"}]}, format="json").status_code == 404
    assert end(other, conversation_id).status_code == 404
    assert Conversation.objects.get(pk=conversation_id).status == "open"


def test_scopes_and_token_are_checked(make_client):
    reader = make_client(scopes=["contacts:read"])
    writer = make_client(scopes=["conversations:write"])
    denied = start(reader, external_id="x")
    assert denied.status_code == 403 and denied.json()["errors"][0]["code"] == "missing_scope"
    assert writer.get(URL).status_code == 403
    assert start(writer, external_id="x").status_code == 201
    anonymous = make_client()
    anonymous.credentials()
    assert anonymous.get(URL).status_code == 401


# --- reading -------------------------------------------------------------------------------------


def test_detail_returns_messages_in_order(api):
    conversation_id = start(api, external_id="d", messages=[
        {"role": "visitor", "content": "second", "sent_at": "2026-05-01T10:01:00Z"},
        {"role": "agent", "content": "first", "sent_at": "2026-05-01T10:00:00Z"},
    ]).json()["conversation"]["id"]
    body = api.get(f"{URL}/{conversation_id}").json()
    assert [m["content"] for m in body["messages"]] == ["first", "second"]
    assert body["message_count"] == 2
    assert api.get(f"{URL}/{10**12}").status_code == 404


def test_list_filters_by_contact_channel_status_since_and_linked(api):
    ana, bob = ContactFactory(name="Ana"), ContactFactory(name="Bob")
    now = timezone.now()
    old = ConversationFactory(contact=ana, channel="sms", started_at=now - dt.timedelta(days=3))
    recent = ConversationFactory(contact=ana, channel="whatsapp", started_at=now - dt.timedelta(hours=1),
                                 status="ended", ended_at=now)
    ConversationFactory(contact=bob, channel="sms", started_at=now)
    unlinked = ConversationFactory(contact=None, channel="voice", started_at=now - dt.timedelta(days=1))

    def ids(query):
        response = api.get(URL, query)
        assert response.status_code == 200, response.json()
        return [c["id"] for c in response.json()["results"]]

    assert ids({"contact": ana.pk}) == [recent.pk, old.pk]
    assert ids({"contact": ana.pk, "channel": "sms"}) == [old.pk]
    assert ids({"contact": ana.pk, "status": "ended"}) == [recent.pk]
    assert ids({"contact": ana.pk, "since": (now - dt.timedelta(days=1)).isoformat()}) == [recent.pk]
    assert ids({"linked": "false"}) == [unlinked.pk]
    assert unlinked.pk not in ids({"linked": "true"})
    assert api.get(URL, {"status": "closed"}).status_code == 400
    own = ConversationFactory(agent=api.agent, contact=ana, started_at=now - dt.timedelta(days=5))
    assert ids({"mine": "true"}) == [own.pk]
    assert own.pk not in ids({"mine": "false"})


def test_list_is_cursor_paginated(api):
    now = timezone.now()
    made = [ConversationFactory(started_at=now - dt.timedelta(minutes=i)) for i in range(5)]
    page = api.get(URL, {"page_size": 2}).json()
    seen = [c["id"] for c in page["results"]]
    while page["next"]:
        page = api.get(page["next"]).json()
        seen += [c["id"] for c in page["results"]]
    assert seen == [c.pk for c in made]


def test_list_query_count_does_not_grow_with_rows(api, django_assert_max_num_queries):
    for _ in range(15):
        MessageFactory(conversation=ConversationFactory(contact=ContactFactory()))
    with django_assert_max_num_queries(4):
        response = api.get(URL)
    assert len(response.json()["results"]) == 15 and response.json()["results"][0]["message_count"] == 1


def test_recent_for_contact_returns_newest_first_and_only_that_contact(agent):
    from conversations.selectors import recent_for_contact

    ana, bob = ContactFactory(), ContactFactory()
    now = timezone.now()
    made = [ConversationFactory(contact=ana, started_at=now - dt.timedelta(hours=i)) for i in range(7)]
    ConversationFactory(contact=bob, started_at=now + dt.timedelta(hours=1))
    MessageFactory(conversation=made[0])
    recent = list(recent_for_contact(ana))
    assert [c.pk for c in recent] == [c.pk for c in made[:5]]
    assert recent[0].message_count == 1 and recent[1].message_count == 0
    assert [c.pk for c in recent_for_contact(ana.pk, limit=2)] == [made[0].pk, made[1].pk]


def test_contact_conversations_over_the_api_after_intake(api):
    contact = upsert_contact(data={"name": "Marcus", "phone": "+15615550192"}, actor=Actor.for_agent(api.agent),
                             source=Source.API).contact
    for n in range(2):
        conversation_id = start(api, external_id=f"c{n}").json()["conversation"]["id"]
        end(api, conversation_id, intake={"contact": {"phone": "561-555-0192"}})
    listed = api.get(URL, {"contact": contact.pk}).json()["results"]
    assert len(listed) == 2 and all(c["contact_id"] == contact.pk and c["status"] == "ended" for c in listed)


def test_custom_values_in_end_response_carry_their_band_label(api):
    CustomFieldFactory(key="intent_score", type="number", allow_for_ai=True, bands=[
        {"min": 0, "max": 0.4, "label": "Low intent"}, {"min": 0.4, "max": 0.7, "label": "Warm"},
        {"min": 0.7, "max": 1.0, "label": "High intent"},
    ])
    conversation_id = start(api, external_id="band").json()["conversation"]["id"]
    response = end(api, conversation_id, intake={"contact": {"name": "Ana"}, "custom": {"intent_score": 0.82}})
    assert response.json()["contact"]["custom"] == {"intent_score": {"value": 0.82, "band": "High intent"}}


def test_schema_documents_the_conversation_endpoints():
    from rest_framework.test import APIClient

    schema = APIClient().get("/api/v1/schema/", HTTP_ACCEPT="application/json").json()
    paths = schema["paths"]
    for path in ("/api/v1/conversations", "/api/v1/conversations/{id}", "/api/v1/conversations/{id}/messages",
                 "/api/v1/conversations/{id}/end"):
        assert path in paths
    end_op = paths["/api/v1/conversations/{id}/end"]["post"]
    assert {"400", "404", "409"} <= set(end_op["responses"])
    assert end_op["requestBody"]["content"]["application/json"]["examples"]
    components = schema["components"]["schemas"]
    # Request bodies are split into "<Name>Request" components (COMPONENT_SPLIT_REQUEST).
    for name in ("StartInputRequest", "EndInputRequest", "MessageInputRequest", "ConversationDetail", "EndResponse"):
        for prop, spec in components[name]["properties"].items():
            assert spec.get("description") or "$ref" in spec or "allOf" in spec, f"{name}.{prop} has no help text"


@pytest.mark.parametrize("query", [
    {"contact": str(10**30)}, {"contact": "-5"}, {"contact": "NaN"}, {"since": "garbage"},
    {"since": "0001-01-01T00:00:00+14:00"}, {"since": "9999-12-31T23:59:59-12:00"}, {"cursor": "zzz"},
    {"linked": "maybe"}, {"mine": "sometimes"},
])
def test_odd_list_queries_get_a_4xx_in_the_envelope(api, query):
    response = api.get(URL, query)
    assert 400 <= response.status_code < 500 and response.json()["errors"]


@pytest.mark.parametrize("body", [
    {"contact_id": 10**30}, {"external_id": "a\x00"}, {"messages": [{"role": "visitor", "content": "a\x00"}]},
    {"started_at": "0001-01-01T00:00:00+14:00"}, {"messages": "x"}, {"metadata": []}, {"channel": None},
])
def test_odd_start_bodies_get_a_400(api, body):
    response = start(api, **body)
    assert response.status_code == 400 and response.json()["errors"]
    assert Conversation.objects.count() == 0


@pytest.mark.parametrize(("intake", "field"), [
    ({"contact": {"name": "a\x00"}}, "intake"),
    ({"contact": "x"}, "intake.contact"),
    ({"contact": {"name": "A"}, "task": "x"}, "intake.task"),
    ({"contact": {"name": "A"}, "tags": "x"}, "intake.tags"),
    ({"contact": {"name": "A"}, "pipeline": {"a": 1}}, "intake.pipeline"),
    ({"contact": {"name": "A"}, "note": 5}, "intake.note"),
    ({"contact": {"name": "A", "custom": [1]}}, "intake.contact.custom"),
    ({"contact": {"name": "A", "owner": "staffer"}}, "intake.contact.owner"),
])
def test_malformed_intake_is_refused_by_field_and_the_conversation_stays_open(api, intake, field):
    conversation_id = start(api, external_id="m").json()["conversation"]["id"]
    response = end(api, conversation_id, intake=intake)
    assert response.status_code == 400 and field in [f for f, _ in codes(response)]
    assert Conversation.objects.get(pk=conversation_id).status == "open" and Contact.objects.count() == 0

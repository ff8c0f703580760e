"""Agent API, seventh outside-in round."""

import pytest

from contacts.models import Contact

pytestmark = pytest.mark.django_db


def test_batch_items_for_one_person_are_applied_in_input_order(bot, taxonomy):
    bot.post("contacts/upsert", {"phone": "+1 617 555 7003", "name": "Pat Orig", "email": "pat@orig.com", "company": "Orig"})
    response = bot.post("contacts/batch-upsert", {"contacts": [
        {"phone": "+1 617 555 7003", "company": "First"},
        {"phone": "(617) 555-7003", "email": "pat1@new.com", "company": "Second"},
        {"phone": "617 555 7003", "email": "pat2@new.com", "company": "Third"},
        {"name": "Someone Else", "phone": "+1 617 555 7004", "company": "Other"},
    ]})
    assert response.status_code == 200, response.json()
    results = response.json()["results"]
    assert [r["contact"]["company"] for r in results] == ["First", "Second", "Third", "Other"]
    assert Contact.objects.get(phone_e164="+16175557003").company == "Third"  # the last word wins
    assert Contact.objects.count() == 2


def test_a_replay_does_not_hand_a_stored_answer_to_an_agent_that_lost_the_scope_it_needed():
    from crm_hub.models import Agent
    from tests.api.factories import AgentClient, make_agent

    agent, token = make_agent("idem", scopes=["contacts:read", "contacts:write", "identity:read"])
    api = AgentClient(token)
    body = {"phone": "5615550192", "company": "IdemCo", "identity": "123-45-6789"}
    first = api.post("contacts/upsert", body, key="scope-key-1")
    assert first.status_code == 201 and first.json()["contact"]["identity"] == "123-45-6789"
    assert api.post("contacts/upsert", body, key="scope-key-1")["Idempotent-Replayed"] == "true"
    Agent.objects.filter(pk=agent.pk).update(scopes=["contacts:read", "contacts:write"])
    replayed = api.post("contacts/upsert", body, key="scope-key-1")
    assert replayed.status_code == 403
    error = replayed.json()["errors"][0]
    assert (error["code"], error["scope"]) == ("missing_scope", "identity:read")
    assert "123-45-6789" not in replayed.content.decode()
    Agent.objects.filter(pk=agent.pk).update(scopes=["contacts:read", "contacts:write", "identity:read", "notes:write"])
    assert api.post("contacts/upsert", body, key="scope-key-1").status_code == 201  # more scopes: the same answer


def test_control_characters_are_refused_naming_the_field_and_the_character(bot, taxonomy):
    response = bot.post("contacts/upsert", {"name": "Bell\u0007 Man\u001b[31m", "email": "ctrl@example.com",
                                            "street": "Main\u0001St", "company": "\u202eevil"})
    assert response.status_code == 400
    errors = {e["field"]: e["message"] for e in response.json()["errors"]}
    assert set(errors) == {"name", "street", "company"}
    assert "U+0007" in errors["name"] and "U+0001" in errors["street"] and "U+202E" in errors["company"]
    assert not Contact.objects.exists()
    # Tabs and line breaks are whitespace, and right-to-left text is text.
    fine = bot.post("contacts/upsert", {"name": "Ana\tLima", "street": "Rua 1\nApto 2", "company": "שלום עולם"})
    assert fine.status_code == 201 and fine.json()["contact"]["name"] == "Ana Lima"


def test_an_unknown_key_does_not_hide_the_other_fields_bad_shapes(bot, taxonomy):
    response = bot.post("intake", {"contact": {"name": "X"}, "bogus": 1,
                                   "task": {"title": "Call", "due_at": "2030-01-01T10:00:00Z", "priority": "urgent"}})
    assert response.status_code == 400
    fields = {(e["field"], e["code"]) for e in response.json()["errors"]}
    assert {("bogus", "unknown_field"), ("task.priority", "invalid_value")} <= fields


def test_a_repeated_intake_does_not_store_its_transcript_twice(bot, taxonomy):
    from conversations.models import Message

    body = {"contact": {"phone": "+1 786 557 0001", "name": "Conv Person"}, "note": "sum",
            "conversation": {"external_id": "wa-123", "channel": "whatsapp",
                             "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}}
    assert bot.post("intake", body).status_code in (200, 201)
    assert bot.post("intake", body).status_code in (200, 201)
    assert list(Message.objects.order_by("id").values_list("content", flat=True)) == ["hi", "hello"]
    # A longer transcript later adds only what is new, repeats included.
    body["conversation"]["messages"] += [{"role": "user", "content": "hi"}]
    bot.post("intake", body)
    assert list(Message.objects.order_by("id").values_list("content", flat=True)) == ["hi", "hello", "hi"]


def test_an_intake_for_a_linked_conversation_naming_no_key_goes_to_the_linked_contact(bot, taxonomy):
    from conversations.models import Conversation

    known = bot.post("contacts/upsert", {"name": "Conv Linked", "phone": "+1 561 555 0395"}).json()["contact"]["id"]
    conversation_id = bot.post("conversations", {"external_id": "linked-e", "contact_id": known}).json()["conversation"]["id"]
    response = bot.post("intake", {"contact": {"name": "Conv Linked", "company": "NewCo"}, "note": "summary",
                                   "conversation": {"external_id": "linked-e"}})
    assert response.status_code == 200, response.json()
    assert response.json()["contact"]["id"] == known
    assert Contact.objects.count() == 1 and Contact.objects.get().company == "NewCo"
    assert Conversation.objects.get(pk=conversation_id).contact_id == known


@pytest.mark.parametrize("value", ["https://x.com/a\u001bb", "a\u202ab", "a\u2066b\u2069"])
def test_control_and_direction_characters_are_refused_in_custom_values_of_any_type(bot, value):
    from contacts.models import CustomField

    CustomField.objects.create(key="site", label="Site", type=CustomField.Type.URL, allow_for_ai=True)
    CustomField.objects.create(key="nickname", label="Nickname", type=CustomField.Type.TEXT, allow_for_ai=True)
    for key in ("site", "nickname"):
        response = bot.post("contacts/upsert", {"email": "x@example.com", "custom": {key: value}})
        assert response.status_code == 400 and response.json()["errors"][0]["field"] == f"custom.{key}"
    assert bot.post("contacts/upsert", {"name": value.replace("https://x.com/", ""), "email": "y@example.com"}).status_code == 400


def test_a_batch_items_unknown_key_lists_what_is_allowed(bot, taxonomy):
    result = bot.post("contacts/batch-upsert", {"contacts": [{"phone": "4155550101", "foo": 1}]}).json()["results"][0]
    error = result["errors"][0]
    assert (error["field"], error["code"]) == ("contacts.0.foo", "unknown_field") and "phone" in error["allowed"]


def test_filters_take_a_source_in_any_case_and_list_true_false(bot, taxonomy):
    bot.post("contacts/upsert", {"name": "Api Person", "email": "api@example.com"})
    assert [c["name"] for c in bot.get("contacts", {"source": "API"}).json()["results"]] == ["Api Person"]
    refused = bot.get("conversations", {"linked": "maybe"}).json()["errors"][0]
    assert refused["allowed"] == ["true", "false"]


def test_an_unknown_key_is_named_with_every_bad_value_of_the_rest(bot, taxonomy):
    response = bot.post("contacts/upsert", {"name": "X", "phone": "123", "custom": {"nope": 1}, "bar": 2})
    fields = {(e["field"], e["code"]) for e in response.json()["errors"]}
    assert {("bar", "unknown_field"), ("phone", "invalid_phone"), ("custom.nope", "unknown_field")} <= fields
    intake = bot.post("intake", {"contact": {"name": "Y", "phone": "555", "fax": "1"}, "tags": ["nope"]})
    fields = {(e["field"], e["code"]) for e in intake.json()["errors"]}
    assert {("contact.fax", "unknown_field"), ("contact.phone", "invalid_phone"), ("tags", "unknown_tag")} <= fields
    assert Contact.objects.count() == 0
    # A body with only an unknown key still says just that.
    only = bot.post("contacts/upsert", {"name": "Fine", "bar": 2}).json()["errors"]
    assert [(e["field"], e["code"]) for e in only] == [("bar", "unknown_field")] and Contact.objects.count() == 0

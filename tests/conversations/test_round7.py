"""Found from outside (round 7): what extraction keeps, drops and says about it."""

import pytest

from contacts.models import Contact
from conversations.extraction import extract_with_rules
from conversations.models import Conversation
from tests.contacts.factories import CustomFieldFactory
from tests.conversations.test_extraction import end_extract, transcript

pytestmark = pytest.mark.django_db


def test_an_llm_number_given_as_a_name_is_dropped_as_an_agent_write_refuses_it(api, fake_llm):
    fake_llm.reply_json({"contact": {"name": 123, "phone": 5615550166, "email": None}, "custom": {}})
    conversation_id = transcript(api, "call me on 561 555 0166")
    answer = end_extract(api, conversation_id)
    contact = Contact.objects.get()
    assert (contact.name, contact.phone_e164) == ("", "+15615550166")  # a phone may come as digits
    dropped = {d["field"]: d for d in Conversation.objects.get(pk=conversation_id).extraction["dropped"]}
    assert dropped["name"]["value"] == "123" and dropped["name"]["reason"].startswith("invalid_value")
    assert "name" not in answer["extraction"]["found"]


@pytest.mark.parametrize("text", ["reach me at +44 7700 900123", "my number is 07700 900123", "call me 555-0000"])
def test_a_phone_that_does_not_parse_is_dropped_with_a_reason(api, text):
    conversation_id = transcript(api, text)
    end_extract(api, conversation_id, extractor="rules")
    dropped = Conversation.objects.get(pk=conversation_id).extraction["dropped"]
    assert [(d["field"], d["reason"]) for d in dropped] == [("phone", "invalid_phone: not a valid phone number")]
    assert not Contact.objects.exists()


@pytest.mark.parametrize("text", ["Invoice 2026-11-22, order number 12345678", "see ticket 555-0000-12 please"])
def test_numbers_not_given_as_phones_are_not_called_invalid_phones(text):
    assert extract_with_rules([text], definitions=[]).dropped == []


def test_a_second_phone_is_left_out_for_being_second_not_for_being_someone_elses():
    found = extract_with_rules(["numbers: 561 555 0192, 561 555 0193"], definitions=[])
    assert found.contact["phone"] == "+15615550192"
    assert [d["reason"] for d in found.dropped] == ["another phone was found first; only one is kept"]


def test_a_plan_the_visitor_names_is_not_taken_as_their_name():
    plan = CustomFieldFactory(key="product_interest", label="Product", type="single_choice",
                              choices=["Basic", "Pro"], allow_for_ai=True)
    found = extract_with_rules(["Hello, I am Pro at this. pat@p.io"], definitions=[plan])
    assert found.custom == {"product_interest": "Pro"} and "name" not in found.contact
    assert found.dropped[0]["field"] == "name"
    assert extract_with_rules(["I am Ana Lima, interested in Pro"], definitions=[plan]).contact["name"] == "Ana Lima"


def test_a_repeated_create_or_fetch_with_its_first_messages_stores_them_once(api):
    from conversations.models import Message
    from tests.conversations.test_api import start

    first = [{"role": "visitor", "content": "hi"}, {"role": "agent", "content": "hello"}]
    start(api, external_id="turns", messages=first)
    start(api, external_id="turns", messages=first)
    start(api, external_id="turns", messages=[*first, {"role": "visitor", "content": "price?"}])
    assert list(Message.objects.order_by("id").values_list("content", flat=True)) == ["hi", "hello", "price?"]


def test_an_intake_sent_to_the_linked_contact_says_it_was_matched_by_the_conversation(api):
    from tests.contacts.factories import ContactFactory
    from tests.conversations.test_api import end, start

    known = ContactFactory(name="Linked", phone="+15615550230", phone_e164="+15615550230")
    conversation_id = start(api, external_id="linked-1", contact_id=known.pk).json()["conversation"]["id"]
    answer = end(api, conversation_id, intake={"note": "to linked"}).json()
    assert answer["contact"]["id"] == known.pk and answer["matched_by"] == "conversation"
    other_id = start(api, external_id="linked-2", contact_id=known.pk).json()["conversation"]["id"]
    by_phone = end(api, other_id, intake={"contact": {"phone": "(561) 555-0230"}, "note": "x"}).json()
    assert by_phone["matched_by"] == "phone"


def test_a_wrong_role_lists_the_spellings_that_are_taken(api):
    from tests.conversations.test_api import start

    conversation_id = start(api, external_id="roles").json()["conversation"]["id"]
    response = api.post(f"/api/v1/conversations/{conversation_id}/messages",
                        {"messages": [{"role": "bot", "content": "hi"}]}, format="json")
    assert response.status_code == 400
    allowed = response.json()["errors"][0]["allowed"]
    assert {"visitor", "agent", "user", "assistant"} <= set(allowed)

"""Found from outside (round 6): create-or-fetch never moves a linked conversation; LLM replies with a blank
name or without the nested shape still end the conversation with what they found."""

import pytest

from contacts.models import Contact, Note
from conversations.models import Conversation
from tests.contacts.factories import ContactFactory
from tests.conversations.test_api import end, start
from tests.conversations.test_extraction import end_extract, transcript

pytestmark = pytest.mark.django_db


def test_a_repeated_create_or_fetch_does_not_pull_the_conversation_back(api):
    first = ContactFactory(name="First", phone="+15615550100", phone_e164="+15615550100")
    conversation_id = start(api, external_id="e1", contact_id=first.pk).json()["conversation"]["id"]
    response = end(api, conversation_id, summary="Wants a quote",
                   intake={"contact": {"name": "New Person", "phone": "+1 561 555 2301"}})
    assert response.status_code == 200, response.json()
    new_id = response.json()["contact"]["id"]
    again = start(api, external_id="e1", contact_id=first.pk)
    assert again.status_code == 200
    assert again.json()["conversation"]["contact_id"] == new_id
    assert Conversation.objects.get(pk=conversation_id).contact_id == new_id
    assert Note.objects.get().contact_id == new_id


def test_create_or_fetch_still_links_a_conversation_that_has_no_contact(api):
    contact = ContactFactory(name="Later", phone="+15615550101", phone_e164="+15615550101")
    conversation_id = start(api, external_id="e2").json()["conversation"]["id"]
    assert start(api, external_id="e2", contact_id=contact.pk).json()["conversation"]["contact_id"] == contact.pk
    assert Conversation.objects.get(pk=conversation_id).contact_id == contact.pk


@pytest.mark.parametrize("blank", ["  ", "\n", "\u200b", "\t \u00a0"])
def test_an_llm_blank_name_ends_the_conversation_unlinked(api, fake_llm, blank):
    fake_llm.reply_json({"contact": {"name": blank, "phone": None, "email": None}, "custom": {}})
    conversation_id = transcript(api, "just browsing, thanks")
    end_extract(api, conversation_id)
    conversation = Conversation.objects.get(pk=conversation_id)
    assert conversation.status == "ended" and conversation.contact is None
    assert Contact.objects.count() == 0


def test_an_llm_reply_without_the_contact_object_is_read_as_one(api, fake_llm):
    fake_llm.reply_json({"name": "Priya Shah", "phone": "561 555 0177", "email": "priya@example.org"})
    conversation_id = transcript(api, "This is Priya, call me on 561 555 0177, priya@example.org")
    end_extract(api, conversation_id)
    contact = Contact.objects.get()
    assert (contact.name, contact.phone_e164, contact.email_normalized) == ("Priya Shah", "+15615550177", "priya@example.org")
    assert Conversation.objects.get(pk=conversation_id).contact == contact


def test_the_old_contacts_timeline_says_where_its_conversation_went(api, client, staff_user):
    first = ContactFactory(name="First", phone="+15615550102", phone_e164="+15615550102")
    conversation_id = start(api, external_id="moved-1", contact_id=first.pk).json()["conversation"]["id"]
    end(api, conversation_id, intake={"contact": {"name": "Other", "phone": "+1 561 555 2302"}, "note": "x"})
    client.force_login(staff_user)
    html = client.get(f"/contacts/{first.pk}/").content.decode()
    assert "moved to contact #" in html


def test_a_transcript_full_of_addresses_reads_a_bounded_number_and_counts_the_rest():
    """8,000 addresses were each read, compared with every other and stored as a drop (22 s, 14,000 entries)."""
    from conversations.extraction import MAX_DROPPED, extract_with_rules

    texts = [" ".join(f"a{i}_{j}@x{j % 7}.com" for j in range(800)) for i in range(10)]
    result = extract_with_rules(texts, definitions=[])
    assert len(result.dropped) == MAX_DROPPED and result.dropped_more == 8000 - 1 - MAX_DROPPED
    assert result.as_record()["dropped_more"] == result.dropped_more


def test_listing_the_conversations_of_a_contact_that_does_not_exist_is_refused(api):
    response = api.get("/api/v1/conversations", {"contact": 999999})
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "contact" and "no contact #999999" in response.json()["errors"][0]["message"]
    contact = ContactFactory(name="Real")
    assert api.get("/api/v1/conversations", {"contact": contact.pk}).json()["results"] == []


@pytest.mark.parametrize("text, phone", [
    ("my number is 0044 7400 123457", "+447400123457"),
    ("0033 6 12 34 56 70", "+33612345670"),
    ("Direct: 0055 11 96123 4560", "+5511961234560"),
    ("0049 (0)1512 3456780", "+4915123456780"),
    ("+52 1 222 123 4560", "+522221234560"),
    ("011 52 1 222 123 4560", "+522221234560"),
    ("order 2026-05-01 10:30, ref 123456", None),
])
def test_the_extractor_reads_the_phones_every_write_path_reads(text, phone):
    from conversations.extraction import extract_with_rules

    assert extract_with_rules([text], definitions=[]).contact.get("phone") == phone

"""Ending a linked conversation with an intake that names nobody else writes to the linked contact."""

import pytest

from contacts.models import Contact, Note
from conversations.models import Conversation
from tests.contacts.factories import ContactFactory, TagFactory
from tests.conversations.test_api import codes, end, start

pytestmark = pytest.mark.django_db


@pytest.fixture
def linked(api):
    TagFactory(name="lead")
    contact = ContactFactory(name="Ana Reed", phone="+15615550192", phone_e164="+15615550192")
    conversation_id = start(api, external_id="linked-1", contact_id=contact.pk).json()["conversation"]["id"]
    return contact, conversation_id


@pytest.mark.parametrize("intake", [
    {"note": "Talked about pricing", "tags": ["lead"]},
    {"contact": {}, "note": "Talked about pricing", "tags": ["lead"]},
    {"contact": {"company": "Reed & Co"}, "note": "Talked about pricing", "tags": ["lead"]},
])
def test_an_intake_without_phone_or_email_goes_to_the_linked_contact(api, linked, intake):
    contact, conversation_id = linked
    response = end(api, conversation_id, intake=intake)
    assert response.status_code == 200, response.json()
    assert Contact.objects.count() == 1
    assert response.json()["contact"]["id"] == contact.pk
    assert Conversation.objects.get(pk=conversation_id).contact_id == contact.pk
    assert Note.objects.get().contact_id == contact.pk
    assert list(contact.tags.values_list("name", flat=True)) == ["lead"]


def test_a_name_given_for_a_linked_contact_is_written_to_it_not_to_a_new_one(api, linked):
    contact, conversation_id = linked
    response = end(api, conversation_id, intake={"contact": {"name": "Ana B. Reed"}, "note": "x"})
    assert response.status_code == 200, response.json()
    assert Contact.objects.count() == 1
    contact.refresh_from_db()
    assert contact.name == "Ana B. Reed"


def test_an_intake_with_another_phone_still_goes_where_the_phone_says(api, linked):
    contact, conversation_id = linked
    response = end(api, conversation_id, intake={"contact": {"name": "Bo", "phone": "+15615550193"}, "note": "x"})
    assert response.status_code == 200
    assert response.json()["contact"]["id"] != contact.pk


def test_an_unlinked_conversation_needs_a_contact_in_its_intake(api):
    conversation_id = start(api, external_id="free-1").json()["conversation"]["id"]
    response = end(api, conversation_id, intake={"note": "talked"})
    assert response.status_code == 400
    assert codes(response) == [("intake.contact", "required")]
    assert Conversation.objects.get(pk=conversation_id).status == "open"


def test_a_linked_contact_without_phone_or_email_is_named_as_the_problem(api):
    keyless = ContactFactory(name="Only A Name")
    conversation_id = start(api, external_id="keyless-1", contact_id=keyless.pk).json()["conversation"]["id"]
    response = end(api, conversation_id, intake={"contact": {"name": "Only A Name"}, "note": "x"})
    assert response.status_code == 400
    assert codes(response) == [("intake.contact", "no_contact_key")]
    assert Contact.objects.count() == 1 and Note.objects.count() == 0
    assert Conversation.objects.get(pk=conversation_id).status == "open"

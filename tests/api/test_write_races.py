"""Writers that lose a race for a phone, an email or a tag get an answer, not a 500 (PostgreSQL)."""

import threading
import time

import pytest
from django.db import connection, connections, transaction

from contacts.models import Contact, HistoryEntry, PossibleDuplicate, Source
from tests.api.factories import AgentClient, make_agent, make_taxonomy
from tests.api.test_concurrency_api import run_in_threads
from tests.contacts.factories import ContactFactory

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL"),
]

PHONE = "+15615550142"


def _hold_phone_then_commit(contact_pk: int, started: threading.Event, hold_seconds: float = 0.7):
    """In another connection, give ``contact_pk`` the phone and commit only after a pause."""

    def run():
        try:
            with transaction.atomic():
                Contact.objects.filter(pk=contact_pk).update(phone=PHONE, phone_e164=PHONE)
                started.set()
                time.sleep(hold_seconds)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    assert started.wait(10)
    return thread


@pytest.mark.parametrize("key", [None, "race-key"])
def test_an_intake_that_loses_the_phone_to_a_concurrent_writer_goes_to_that_contact(key):
    """The intake matches the email holder, sets the phone, and meets the other writer's row in the index."""
    make_taxonomy()
    _agent, token = make_agent("racer")
    by_email = ContactFactory(name="Lena", email="lena@example.com", email_normalized="lena@example.com")
    holder = ContactFactory(name="Holder", source=Source.API)
    thread = _hold_phone_then_commit(holder.pk, threading.Event())
    response = AgentClient(token).post(
        "intake", {"contact": {"name": "Lena", "phone": PHONE, "email": "lena@example.com"}, "note": "Called back"},
        key=key,
    )
    thread.join(10)
    assert response.status_code == 200, response.content
    assert response.json()["contact"]["id"] == holder.pk
    assert response.json()["possible_duplicates"] == [by_email.pk]
    by_email.refresh_from_db()
    assert by_email.phone_e164 == ""
    assert PossibleDuplicate.objects.filter(contact=holder, other=by_email).count() == 1


def test_an_edit_that_loses_the_phone_to_a_concurrent_writer_says_who_holds_it():
    _agent, token = make_agent("editor")
    holder, edited = ContactFactory(name="Holder"), ContactFactory(name="Edited")
    thread = _hold_phone_then_commit(holder.pk, threading.Event())
    response = AgentClient(token).patch(f"contacts/{edited.pk}", {"phone": "(561) 555-0142", "company": "Reed"})
    thread.join(10)
    assert response.status_code == 400, response.content
    assert response.json()["errors"] == [
        {"field": "phone", "code": "already_exists", "message": f"Contact #{holder.pk} already has this phone."}
    ]
    edited.refresh_from_db()
    assert (edited.phone_e164, edited.company) == ("", "")


def test_ten_concurrent_edits_giving_one_phone_to_ten_contacts_leave_it_with_one():
    _agent, token = make_agent("editors")
    contacts = [ContactFactory(name=f"C{i}") for i in range(10)]

    def call(index):
        return AgentClient(token).patch(f"contacts/{contacts[index].pk}", {"phone": PHONE}).status_code

    results, errors = run_in_threads(10, call)
    assert errors == []
    assert sorted(results) == [200] + [400] * 9
    assert Contact.objects.filter(phone_e164=PHONE).count() == 1


def test_twenty_concurrent_calls_adding_one_tag_record_it_once():
    make_taxonomy()
    _agent, token = make_agent("taggers")
    contact = ContactFactory(name="Ada")

    def call(_index):
        response = AgentClient(token).post(f"contacts/{contact.pk}/tags", {"tags": ["VIP", " vip"]})
        return response.status_code, response.json()["added"]

    results, errors = run_in_threads(20, call)
    assert errors == []
    assert {status for status, _ in results} == {200}
    assert sorted(results, key=lambda r: len(r[1]))[-1][1] == ["VIP"]
    assert sum(bool(added) for _, added in results) == 1
    assert HistoryEntry.objects.filter(contact=contact, action="tag_added").count() == 1


def test_an_intake_and_an_end_of_one_conversation_at_once_do_not_deadlock():
    """end locks the conversation, then the contact; an intake naming the conversation now does the same."""
    from conversations.models import Conversation, Message

    _agent, token = make_agent("ender", scopes=["contacts:read", "contacts:write", "notes:write", "conversations:write"])
    for round_number in range(4):
        external_id, phone = f"race-{round_number}", f"+1561555{round_number:04d}"
        api = AgentClient(token)
        started = api.post("conversations", {"external_id": external_id,
                                             "messages": [{"role": "visitor", "content": "hi"}]})
        conversation_id = started.json()["conversation"]["id"]

        def call(index, conversation_id=conversation_id, external_id=external_id, phone=phone):
            client = AgentClient(token)
            if index % 2:
                return client.post(f"conversations/{conversation_id}/end",
                                   {"summary": "s", "intake": {"contact": {"phone": phone, "name": "End Race"}}}).status_code
            return client.post("intake", {"contact": {"phone": phone, "name": "End Race"}, "note": "x",
                                          "conversation": {"external_id": external_id,
                                                           "messages": [{"role": "visitor", "content": "hi"}]}}).status_code

        results, errors = run_in_threads(4, call)
        assert errors == []
        assert all(code in (200, 201, 409) for code in results), results
        assert Contact.objects.filter(phone_e164=phone).count() == 1
        assert Conversation.objects.get(pk=conversation_id).status == "ended"
        assert Message.objects.filter(conversation_id=conversation_id).count() == 1


def test_intakes_and_ends_of_one_conversation_for_an_existing_contact_do_not_deadlock():
    """The intake's first read used to lock the contact before its conversation, against end's order."""
    from conversations.models import Conversation

    _agent, token = make_agent("ender2", scopes=["contacts:read", "contacts:write", "notes:write", "conversations:write"])
    for round_number in range(4):
        external_id, phone = f"known-{round_number}", f"+1561556{round_number:04d}"
        api = AgentClient(token)
        api.post("contacts/upsert", {"name": "Known Caller", "phone": phone})
        started = api.post("conversations", {"external_id": external_id,
                                             "messages": [{"role": "visitor", "content": "hi"}]})
        conversation_id = started.json()["conversation"]["id"]

        def call(index, conversation_id=conversation_id, external_id=external_id, phone=phone):
            client = AgentClient(token)
            if index % 2:
                return client.post(f"conversations/{conversation_id}/end",
                                   {"intake": {"contact": {"phone": phone, "name": "Known Caller"}, "note": "n"}}).status_code
            return client.post("intake", {"contact": {"phone": phone, "name": "Known Caller"}, "note": "n",
                                          "conversation": {"external_id": external_id}}).status_code

        results, errors = run_in_threads(8, call)
        assert errors == []
        assert all(code in (200, 201, 409) for code in results), results
        assert Contact.objects.filter(phone_e164=phone).count() == 1
        assert Conversation.objects.get(pk=conversation_id).status == "ended"

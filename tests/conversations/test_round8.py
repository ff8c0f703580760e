"""Found from outside (round 8): transcripts, retries and ordering of a conversation's messages."""

import datetime as dt

import pytest

from conversations.models import Conversation, Message
from tests.conversations.test_api import codes

pytestmark = pytest.mark.django_db

URL = "/api/v1/conversations"


def post(api, body):
    return api.post(URL, body, format="json")


def test_a_message_with_a_new_external_id_is_stored_even_when_its_text_repeats_the_first(api):
    post(api, {"external_id": "turns", "messages": [{"role": "visitor", "content": "ok", "external_id": "m1"}]})
    post(api, {"external_id": "turns", "messages": [{"role": "agent", "content": "Shall I book Tuesday?", "external_id": "m2"}]})
    third = post(api, {"external_id": "turns", "messages": [{"role": "visitor", "content": "ok", "external_id": "m3"}]})
    assert third.status_code == 200 and third.json()["messages_added"] == 1
    assert list(Message.objects.order_by("sent_at", "id").values_list("external_id", flat=True)) == ["m1", "m2", "m3"]


def test_a_transcript_resent_in_time_order_after_a_late_message_stores_only_the_new_one(api):
    first = post(api, {"external_id": "late", "messages": [
        {"role": "visitor", "content": "Hi, I need seats", "sent_at": "2026-11-20T10:00:00Z"},
        {"role": "agent", "content": "Sure, for how many seats?", "sent_at": "2026-11-20T10:02:00Z"},
    ]})
    conversation_id = first.json()["conversation"]["id"]
    late = api.post(f"{URL}/{conversation_id}/messages", {"messages": [
        {"role": "visitor", "content": "(sent from my phone)", "sent_at": "2026-11-20T10:01:00Z"},
    ]}, format="json")
    assert late.status_code in (200, 201)
    again = post(api, {"external_id": "late", "messages": [
        {"role": "visitor", "content": "Hi, I need seats", "sent_at": "2026-11-20T10:00:00Z"},
        {"role": "visitor", "content": "(sent from my phone)", "sent_at": "2026-11-20T10:01:00Z"},
        {"role": "agent", "content": "Sure, for how many seats?", "sent_at": "2026-11-20T10:02:00Z"},
        {"role": "visitor", "content": "Twelve", "sent_at": "2026-11-20T10:03:00Z"},
    ]})
    assert again.json()["messages_added"] == 1
    contents = list(Message.objects.filter(conversation_id=conversation_id).values_list("content", flat=True))
    assert contents == ["Hi, I need seats", "(sent from my phone)", "Sure, for how many seats?", "Twelve"]


def test_resending_the_same_transcript_after_the_end_is_answered_200_not_409(api):
    body = {"external_id": "ended", "messages": [{"role": "visitor", "content": "hello, I am Ana"},
                                                 {"role": "agent", "content": "hi Ana"}]}
    conversation_id = post(api, body).json()["conversation"]["id"]
    assert api.post(f"{URL}/{conversation_id}/end", {"summary": "greeted"}, format="json").status_code == 200
    again = post(api, body)
    assert again.status_code == 200 and again.json()["messages_added"] == 0
    more = post(api, {**body, "messages": [*body["messages"], {"role": "visitor", "content": "one more thing"}]})
    assert more.status_code == 409 and codes(more) == [(None, "conversation_ended")]


def test_a_fetch_that_stores_messages_bumps_the_conversations_updated_at(api):
    conversation_id = post(api, {"external_id": "bump", "messages": [{"role": "visitor", "content": "hi"}]}).json()["conversation"]["id"]
    long_ago = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    Conversation.objects.filter(pk=conversation_id).update(updated_at=long_ago)
    post(api, {"external_id": "bump", "messages": [{"role": "visitor", "content": "hi"}]})  # nothing new
    assert Conversation.objects.get(pk=conversation_id).updated_at == long_ago
    post(api, {"external_id": "bump", "messages": [{"role": "visitor", "content": "hi"}, {"role": "visitor", "content": "there"}]})
    assert Conversation.objects.get(pk=conversation_id).updated_at > long_ago


def test_a_phone_said_only_as_a_colleagues_is_dropped_and_the_known_caller_keeps_the_conversation(api):
    from contacts.models import Contact
    from tests.conversations.test_extraction import end_extract

    known = api.post("/api/v1/contacts/upsert", {"name": "Dana Known", "phone": "+1 617 555 0112",
                                                 "email": "dana2@known.com"}, format="json").json()["contact"]
    conversation_id = post(api, {"external_id": "colleague", "contact_id": known["id"], "messages": [
        {"role": "visitor", "content": "Hi, it is Dana again. For the contract questions please call my colleague "
                                       "Bob, his cell is 305 555 0198."},
    ]}).json()["conversation"]["id"]
    end_extract(api, conversation_id, extractor="rules")
    conversation = Conversation.objects.get(pk=conversation_id)
    assert conversation.contact_id == known["id"]
    assert not Contact.objects.filter(phone_e164="+13055550198").exists()
    assert [(d["field"], d["value"], d["reason"]) for d in conversation.extraction["dropped"]] == [
        ("phone", "+13055550198", "said as someone else's phone")
    ]


@pytest.mark.parametrize("run", ["(" * 15_000, "a" * 15_000, "1-" * 7_500, "a." * 7_500])
def test_a_message_of_one_long_run_of_phone_or_address_characters_is_read_in_linear_time(run):
    """A denial-of-service guard, not a speed target: the quadratic scan took 15-40 s on these messages."""
    import time

    from conversations.extraction import extract_with_rules

    message = run + " reach me at ana@example.com or 561 555 0192" + " x@y.com" * 9
    started = time.monotonic()
    found = extract_with_rules([message, message], definitions=[])
    assert time.monotonic() - started < 5
    assert found.contact["email"] == "ana@example.com" and found.contact["phone"] == "+15615550192"


@pytest.mark.parametrize("summary", ["   ", "<p></p>", "<script></script>"])
def test_a_blank_summary_does_not_block_the_end_it_is_just_not_a_note(api, summary):
    from contacts.models import Contact, Note

    conversation_id = post(api, {"external_id": f"blank-{len(summary)}"}).json()["conversation"]["id"]
    ended = api.post(f"{URL}/{conversation_id}/end",
                     {"summary": summary, "intake": {"contact": {"name": "Ana", "phone": "+1 561 555 0177"}}}, format="json")
    assert ended.status_code == 200, ended.json()
    assert Contact.objects.count() == 1 and not Note.objects.exists()


def test_a_long_conversation_shows_its_latest_messages_on_the_contact_page_and_in_admin(client, settings):
    import datetime as dt

    from contacts.selectors import TRANSCRIPT_MESSAGES
    from conversations import admin as conversation_admin
    from tests.contacts.factories import ContactFactory, UserFactory
    from tests.conversations.factories import ConversationFactory

    contact = ContactFactory(name="Chatty")
    conversation = ConversationFactory(contact=contact, external_id="long")
    start = dt.datetime(2026, 11, 1, 9, 0, tzinfo=dt.UTC)
    total = TRANSCRIPT_MESSAGES + 30
    Message.objects.bulk_create([
        Message(conversation=conversation, role="visitor", content=f"message number {n:04d}",
                sent_at=start + dt.timedelta(hours=n))
        for n in range(total)
    ])
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    page = client.get(f"/contacts/{contact.pk}/").content.decode()
    assert f"Transcript ({total} messages)" in page
    assert f"The last {TRANSCRIPT_MESSAGES} of {total} messages." in page
    assert f"message number {total - 1:04d}" in page and "message number 0000" not in page
    assert page.index(f"message number {total - 2:04d}") < page.index(f"message number {total - 1:04d}")  # oldest first
    assert "Sun, Nov 1, 2026" not in page and "Thu, Nov 5, 2026" in page  # a day line where the day changes

    conversation_admin.ADMIN_MESSAGES = 50
    try:
        admin_page = client.get(f"/admin/conversations/conversation/{conversation.pk}/change/").content.decode()
    finally:
        conversation_admin.ADMIN_MESSAGES = 500
    assert f"message number {total - 1:04d}" in admin_page and "message number 0000" not in admin_page


def test_a_retried_transcript_whose_clock_runs_backwards_adds_nothing(api):
    body = {"external_id": "skew", "messages": [
        {"role": "visitor", "content": "hi there", "sent_at": "2026-11-22T10:00:05Z"},
        {"role": "agent", "content": "hello, how can I help", "sent_at": "2026-11-22T10:00:03Z"},
    ]}
    assert post(api, body).status_code == 201
    again = post(api, body)
    assert again.status_code == 200 and again.json()["messages_added"] == 0
    assert Message.objects.count() == 2

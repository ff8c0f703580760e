import pytest

from contacts.models import HistoryEntry, Source
from contacts.services import record_intake
from conversations import services
from conversations.models import Conversation

pytestmark = pytest.mark.django_db


def test_intake_with_a_conversation_and_the_api_share_one_conversation_per_external_id(agent_actor):
    result = record_intake(
        contact={"name": "Ana", "phone": "561 555 0192"}, actor=agent_actor, source=Source.CHAT,
        conversation={"external_id": "wa-1", "channel": "whatsapp",
                      "messages": [{"role": "visitor", "content": "hi", "external_id": "m1"}]},
    )
    again = services.start_conversation(actor=agent_actor, external_id="wa-1",
                                        messages=[{"role": "visitor", "content": "hi", "external_id": "m1"}])
    assert again.created is False and again.conversation.pk == result.conversation.pk
    assert again.messages_added == [] and again.conversation.contact == result.upsert.contact


def test_relinking_a_conversation_is_recorded_on_both_contacts(agent_actor):
    first = record_intake(contact={"name": "Ana", "phone": "561 555 0192"}, actor=agent_actor,
                          conversation={"external_id": "c"}).upsert.contact
    conversation = Conversation.objects.get()
    second = record_intake(contact={"name": "Bob", "phone": "561 555 0193"}, actor=agent_actor,
                           conversation=conversation).upsert.contact
    conversation.refresh_from_db()
    assert conversation.contact == second
    moved = first.history.filter(action=HistoryEntry.Action.CONVERSATION).order_by("-id").first()
    assert f"moved to contact #{second.pk}" in moved.summary


def test_end_records_conversation_ended_on_the_linked_contact(agent_actor):
    contact = record_intake(contact={"name": "Ana"}, actor=agent_actor, conversation={"external_id": "e"}).upsert.contact
    conversation = Conversation.objects.get()
    services.end_conversation(conversation=conversation, actor=agent_actor, summary="bye")
    entry = contact.history.filter(action=HistoryEntry.Action.CONVERSATION).order_by("-id").first()
    assert entry.summary == "Web chat conversation e ended" and entry.conversation == conversation
    assert entry.changes == {"conversation_status": ["open", "ended"]}


def test_appending_many_messages_takes_a_fixed_number_of_queries(agent_actor, django_assert_max_num_queries):
    conversation = services.start_conversation(actor=agent_actor, external_id="q").conversation
    batch = [{"role": "visitor", "content": f"line {i}", "external_id": f"m{i}"} for i in range(200)]
    # Savepoints, the row lock, one lookup of known ids, the insert batches (two on SQLite), one update.
    with django_assert_max_num_queries(10):
        result = services.append_messages(conversation=conversation, messages=batch)
    assert len(result.added) == 200 and conversation.messages.count() == 200

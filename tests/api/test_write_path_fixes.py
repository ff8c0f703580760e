"""Agent write path, found from outside: each answer names every bad field, and nothing 500s."""

import datetime as dt

import pytest
from django.utils import timezone

from contacts.models import Contact, HistoryEntry, Note, PossibleDuplicate, Task
from tests.api.factories import AgentClient, make_agent, make_taxonomy
from tests.contacts.factories import ContactFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def api():
    make_taxonomy()
    _agent, token = make_agent("fixes")
    return AgentClient(token)


def _fields(response):
    return {e["field"]: e["code"] for e in response.json()["errors"]}


@pytest.mark.parametrize("due", ["2026-12-01", "20261201"])
def test_a_due_date_without_a_time_is_nine_in_the_morning(api, due):
    contact = ContactFactory(name="Ada")
    response = api.post(f"contacts/{contact.pk}/tasks", {"title": "Call", "due_at": due})
    assert response.status_code == 201, response.json()
    due_at = Task.objects.get().due_at.astimezone(timezone.get_current_timezone())
    assert (due_at.date(), due_at.time()) == (dt.date(2026, 12, 1), dt.time(9, 0))


def test_a_due_date_with_a_time_keeps_it(api):
    contact = ContactFactory(name="Ada")
    assert api.post(f"contacts/{contact.pk}/tasks", {"title": "Call", "due_at": "2026-12-01T00:00:00Z"}).status_code == 201
    assert Task.objects.get().due_at == dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize("empty", ["", None])
def test_an_empty_birthday_clears_it(api, empty):
    contact = ContactFactory(name="Ada", birthday=dt.date(1990, 5, 1))
    response = api.patch(f"contacts/{contact.pk}", {"birthday": empty})
    assert response.status_code == 200, response.json()
    assert response.json()["contact"]["birthday"] is None
    contact.refresh_from_db()
    assert contact.birthday is None
    assert HistoryEntry.objects.filter(contact=contact, action="updated", changes__birthday__0="1990-05-01").exists()


def test_an_upsert_with_an_empty_birthday_leaves_it(api):
    ContactFactory(name="Ada", phone="+15615550100", phone_e164="+15615550100", birthday=dt.date(1990, 5, 1))
    assert api.post("contacts/upsert", {"phone": "+15615550100", "birthday": ""}).status_code == 200
    assert Contact.objects.get().birthday == dt.date(1990, 5, 1)


@pytest.mark.parametrize("body", ["<p></p>", "<p> </p><br>", "<b></b>"])
def test_a_note_of_markup_alone_is_refused(api, body):
    contact = ContactFactory(name="Ada")
    response = api.post(f"contacts/{contact.pk}/notes", {"body": body})
    assert response.status_code == 400
    assert _fields(response) == {"body": "required"}
    response = api.post("intake", {"contact": {"name": "Ada"}, "note": body})
    assert response.status_code == 400
    assert _fields(response) == {"note": "required"}
    assert Note.objects.count() == 0


@pytest.mark.parametrize("key", [None, "intake-long-title"])
def test_intake_refuses_a_long_task_title_before_writing(api, key):
    response = api.post(
        "intake",
        {"contact": {"name": "X", "phone": "+1 415 555 0111"}, "note": "hello",
         "task": {"title": "T" * 201, "due_at": "2026-12-01T10:00:00Z"}},
        key=key,
    )
    assert response.status_code == 400, response.content
    assert _fields(response) == {"task.title": "invalid_value"}
    assert Contact.objects.count() == 0 and Note.objects.count() == 0


@pytest.mark.parametrize("key", [None, "intake-long-note"])
def test_intake_measures_the_note_as_sent_not_as_escaped(api, key):
    # 60,000 "<" are 240,000 characters once escaped; the limit is on what the agent sent.
    response = api.post("intake", {"contact": {"name": "X"}, "note": "<" * 60_000}, key=key)
    assert response.status_code == 201, response.content
    assert Note.objects.get().body.count("&lt;") == 60_000
    response = api.post("intake", {"contact": {"name": "Y"}, "note": "a" * 100_001}, key=key and key + "-2")
    assert response.status_code == 400
    assert _fields(response) == {"note": "invalid_value"}


def test_intake_names_custom_errors_beside_contact_errors(api):
    response = api.post(
        "intake", {"contact": {"name": "Zed", "phone": "12", "custom": {"budget": "abc"}}, "custom": {"intent": "high"}}
    )
    assert response.status_code == 400
    assert _fields(response) == {
        "contact.phone": "invalid_phone", "contact.custom.budget": "invalid_value", "custom.intent": "invalid_value",
    }


def test_intake_names_every_bad_task_field(api):
    response = api.post(
        "intake", {"contact": {"name": "Zed"}, "task": {"title": " ", "due_at": "soon"}}
    )
    assert response.status_code == 400
    fields = _fields(response)
    assert {"task.title", "task.due_at"} <= set(fields)


def test_a_retried_conflicting_upsert_records_the_duplicate_once(api):
    phone_holder = ContactFactory(name="A", phone="+15615550101", phone_e164="+15615550101")
    email_holder = ContactFactory(name="B", email="b@example.com", email_normalized="b@example.com")
    for _ in range(3):
        response = api.post("contacts/upsert", {"phone": "+15615550101", "email": "b@example.com"})
        assert response.status_code == 200
        assert response.json()["possible_duplicates"] == [email_holder.pk]
    assert PossibleDuplicate.objects.count() == 1
    assert HistoryEntry.objects.filter(contact=phone_holder, action="possible_duplicate").count() == 1


def test_adding_a_tag_it_has_reports_nothing_added(api):
    contact = ContactFactory(name="Ada")
    first = api.post(f"contacts/{contact.pk}/tags", {"tags": ["VIP", " vip"]})
    again = api.post(f"contacts/{contact.pk}/tags", {"tags": ["vip", "Lead"]})
    assert first.status_code == again.status_code == 200
    assert HistoryEntry.objects.filter(contact=contact, action="tag_added").count() == 2
    assert [e.changes["tags"][1] for e in HistoryEntry.objects.filter(action="tag_added").order_by("pk")] == [
        ["VIP"], ["Lead"],
    ]


@pytest.mark.parametrize("key", [None, "late-intake"])
def test_an_intake_into_an_ended_conversation_is_a_409_and_writes_nothing(api, key):
    from conversations.models import Conversation

    first = api.post("intake", {"contact": {"name": "Mia", "phone": "+15615550150"}, "note": "first",
                                "conversation": {"external_id": "wc-1", "messages": [{"role": "visitor", "content": "hi"}]}})
    conversation = Conversation.objects.get()
    assert api.post(f"conversations/{conversation.pk}/end", {}).status_code == 200
    late = api.post("intake", {"contact": {"name": "Late", "email": "late@example.com"}, "note": "late",
                               "conversation": {"external_id": "wc-1", "messages": [{"role": "visitor", "content": "one more"}]}},
                    key=key)
    assert late.status_code == 409, late.content
    assert late.json()["errors"][0]["code"] == "conversation_ended"
    assert "external_id of its own" in late.json()["errors"][0]["message"]
    conversation.refresh_from_db()
    assert conversation.contact_id == first.json()["contact"]["id"] and conversation.messages.count() == 1
    assert Contact.objects.count() == 1 and Note.objects.count() == 1


@pytest.mark.parametrize("priority", ["HIGH", " High "])
def test_a_task_priority_is_read_in_any_case(api, priority):
    contact = ContactFactory(name="Ada")
    assert api.post(f"contacts/{contact.pk}/tasks", {"title": "Call", "due_at": "2026-12-01", "priority": priority}).status_code == 201
    response = api.post("intake", {"contact": {"name": "Bo"}, "task": {"title": "Call", "due_at": "2026-12-01", "priority": priority}})
    assert response.status_code == 201, response.content
    assert set(Task.objects.values_list("priority", flat=True)) == {"high"}


def test_the_same_number_without_its_extension_is_the_same_phone(api):
    contact = ContactFactory(name="Desk", phone="813 645 7851 ext 126", phone_e164="+18136457851", phone_extension="126")
    response = api.post("intake", {"contact": {"phone": "813 645 7851"}, "note": "called from the desk"})
    assert response.status_code == 200, response.content
    assert response.json()["pending_changes"] == [] and response.json()["contact"]["id"] == contact.pk
    contact.refresh_from_db()
    assert contact.phone_extension == "126"


@pytest.mark.parametrize("custom", [[1, 2], "abc", 5, True])
def test_custom_values_that_are_no_object_are_refused_naming_custom(custom):
    from contacts.services import clean_contact_input
    from crm_hub.actors import Actor
    from crm_hub.errors import InputRejected

    with pytest.raises(InputRejected) as caught:
        clean_contact_input({"name": "Ada"}, custom=custom, actor=Actor.for_system("admin"))
    assert [(e.field, e.code) for e in caught.value.errors] == [("custom", "invalid_value")]

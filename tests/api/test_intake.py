"""POST intake: the whole post-conversation write, all or nothing, within a fixed query budget."""

import pytest
from django.db import connection

from contacts.models import Contact, ContactStage, HistoryEntry, Note, Source, StageChange, Task
from conversations.models import Conversation, Message

pytestmark = pytest.mark.django_db

FULL = {
    "contact": {"name": "Marcus Reed", "phone": "(561) 555-0192", "email": "marcus@example.com", "custom": {"budget": 5000}},
    "note": "Wants a quote for 20 seats.",
    "tags": ["Lead"],
    "pipeline": "Sales",
    "stage": "New",
    "task": {"title": "Send the quote", "due_at": "2026-05-02T10:00:00Z"},
}


def test_intake_creates_a_clean_record_with_source_chat(bot, taxonomy):
    body = dict(FULL, conversation={"external_id": "chat-1", "channel": "whatsapp", "messages": [
        {"role": "visitor", "content": "Hi", "external_id": "m1"}, {"role": "agent", "content": "Hello", "external_id": "m2"}]})
    response = bot.post("intake", body)
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["completeness"] == {"fields": True, "note": True, "tags": True, "stage": True, "task": True, "clean": True}
    contact = Contact.objects.get()
    assert contact.source == Source.CHAT
    assert data["note_id"] == Note.objects.get().pk and data["task_id"] == Task.objects.get().pk
    assert Note.objects.get().source == Source.CHAT
    conversation = Conversation.objects.get()
    assert data["conversation_id"] == conversation.pk and conversation.contact == contact
    assert Message.objects.count() == 2
    assert ContactStage.objects.get().stage == taxonomy["new"]
    assert contact.custom == {"budget": 5000}


def test_intake_on_existing_contact_answers_200_and_reports_completeness(bot, taxonomy):
    bot.post("intake", FULL)
    again = bot.post("intake", {"contact": {"phone": "+15615550192"}, "note": "Second chat"})
    assert again.status_code == 200
    assert again.json()["matched_by"] == "phone"
    assert again.json()["completeness"] == {"fields": True, "note": True, "tags": True, "stage": True, "task": False, "clean": False}
    assert Contact.objects.count() == 1 and Note.objects.count() == 2


def test_intake_moves_stage_and_records_the_change(bot, taxonomy):
    bot.post("intake", FULL)
    moved = bot.post("intake", {"contact": {"phone": "5615550192"}, "pipeline": "Sales", "stage": "Qualified", "tags": ["VIP"]})
    assert moved.status_code == 200
    assert ContactStage.objects.get().stage == taxonomy["qualified"]
    assert StageChange.objects.count() == 2
    assert sorted(t.name for t in Contact.objects.get().tags.all()) == ["Lead", "VIP"]


def test_refused_intake_writes_nothing_and_names_every_field(bot, taxonomy):
    bad = dict(FULL, stage="Won", tags=["Ghost"], task={"title": "", "due_at": "whenever"}, contact={"phone": "12"})
    response = bot.post("intake", bad)
    assert response.status_code == 400
    fields = {(e["field"], e["code"]) for e in response.json()["errors"]}
    assert {("contact.phone", "invalid_phone"), ("stage", "unknown_stage"), ("tags", "unknown_tag"),
            ("task.due_at", "invalid_value")} <= fields
    assert ("task.title", "required") in fields or ("task.title", "invalid_value") in fields
    assert Contact.objects.count() == Note.objects.count() == Task.objects.count() == HistoryEntry.objects.count() == 0


def test_intake_refuses_unknown_nested_fields_with_their_path(bot, taxonomy):
    response = bot.post("intake", {"contact": {"name": "X", "nickname": "Y"}})
    assert response.json()["errors"][0]["field"] == "contact.nickname"
    assert response.json()["errors"][0]["code"] == "unknown_field"
    owner = bot.post("intake", {"contact": {"name": "X", "owner": "someone"}})
    assert owner.json()["errors"][0]["field"] == "contact.owner"


def test_a_bad_tag_is_named_by_the_list_it_came_in(bot, taxonomy):
    response = bot.post("intake", {"tags": ["Lead"], "contact": {"name": "X", "tags": ["Lead", "Ghost"]}})
    assert response.status_code == 400
    assert [(e["field"], e["code"]) for e in response.json()["errors"]] == [("contact.tags", "unknown_tag")]
    top = bot.post("intake", {"tags": ["Ghost"], "contact": {"name": "X", "tags": ["Lead"]}})
    assert [(e["field"], e["code"]) for e in top.json()["errors"]] == [("tags", "unknown_tag")]
    not_a_list = bot.post("intake", {"contact": {"name": "X", "tags": "Lead"}})
    assert [(e["field"], e["code"]) for e in not_a_list.json()["errors"]] == [("contact.tags", "invalid_value")]
    assert Contact.objects.count() == 0


def test_intake_refuses_custom_field_closed_to_ai(bot, taxonomy):
    response = bot.post("intake", {"contact": {"name": "X", "custom": {"credit_limit": 1}}})
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "field_not_allowed_for_ai"
    assert response.json()["errors"][0]["field"] == "contact.custom.credit_limit"  # its path in the body
    assert "budget" in response.json()["errors"][0]["allowed"]


@pytest.mark.parametrize(("part", "scope"), [("note", "notes:write"), ("task", "tasks:write"), ("conversation", "conversations:write")])
def test_intake_parts_need_their_scopes(taxonomy, part, scope):
    from tests.api.factories import WRITER_SCOPES, AgentClient, make_agent

    _agent, token = make_agent("narrow", scopes=[s for s in WRITER_SCOPES if s != scope])
    client = AgentClient(token)
    body = dict(FULL, conversation={"external_id": "c"})
    response = client.post("intake", body)
    assert response.status_code == 403
    assert response.json()["errors"][0]["scope"] == scope
    assert Contact.objects.count() == 0


# Statements of an intake on an existing contact, token lookup included (inside the test's transaction, so
# without BEGIN/COMMIT). PostgreSQL: token, one read (taxonomy + locked contact + its tags and stages), one
# write (note, task, history, touch). SQLite has no round trips to save and runs the parts one by one.
INTAKE_STATEMENTS = {"postgresql": 3, "sqlite": 8}


def test_intake_on_existing_contact_stays_within_its_statement_budget(bot, taxonomy, django_assert_max_num_queries):
    """Counts every statement of the HTTP call: token lookup, reads and writes (no Idempotency-Key)."""
    bot.post("intake", FULL)  # first call also stamps the token's last_used_at
    repeat = dict(FULL, note="Follow-up chat", task={"title": "Call again", "due_at": "2026-05-09T10:00:00Z"})
    with django_assert_max_num_queries(INTAKE_STATEMENTS[connection.vendor]):
        response = bot.post("intake", repeat)
    assert response.status_code == 200
    assert response.json()["completeness"]["clean"] is True
    assert Note.objects.count() == 2 and Task.objects.count() == 2
    contact = Contact.objects.get()
    assert contact.history.filter(action="note_added").count() == 2
    assert contact.last_activity_at >= Note.objects.latest("created_at").created_at


def test_intake_with_idempotency_key_adds_only_the_key_writes(bot, taxonomy, django_assert_max_num_queries):
    """With a key: the same statements, plus inserting and completing the key row (the token lookup is shared).

    Inside the test's transaction each atomic block also costs a SAVEPOINT/RELEASE pair, which a real
    server (autocommit, outermost block) does not send: intake + 2 + 2 savepoint pairs.
    """
    bot.post("intake", FULL)
    repeat = dict(FULL, note="Follow-up chat", task={"title": "Call again", "due_at": "2026-05-09T10:00:00Z"})
    with django_assert_max_num_queries(INTAKE_STATEMENTS[connection.vendor] + 2 + 4):
        response = bot.post("intake", repeat, key="budget-key")
    assert response.status_code == 200


def test_intake_without_prepared_statements_writes_the_same(bot, taxonomy, settings, django_assert_max_num_queries):
    """CRM_PREPARED_STATEMENTS=0 (for poolers that cannot keep them) changes how statements are sent, not what."""
    settings.CRM_PREPARED_STATEMENTS = False
    bot.post("intake", FULL)
    repeat = dict(FULL, note="Follow-up chat", task={"title": "Call again", "due_at": "2026-05-09T10:00:00Z"})
    with django_assert_max_num_queries(INTAKE_STATEMENTS[connection.vendor]):
        response = bot.post("intake", repeat)
    assert response.status_code == 200 and response.json()["completeness"]["clean"] is True
    assert Note.objects.count() == 2 and Task.objects.count() == 2


@pytest.mark.postgres
@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL")
def test_intake_statements_are_prepared_once_per_connection(bot, taxonomy):
    """Django turns psycopg's preparing off; the agent path turns it on for its own cursors only."""
    for note in ("First chat", "Second chat", "Third chat"):
        assert bot.post("intake", dict(FULL, note=note)).status_code in (200, 201)
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements WHERE name LIKE '_pg3_%%'")
        prepared = [row[0] for row in cursor.fetchall()]
    assert any(sql.startswith("WITH locked AS MATERIALIZED") for sql in prepared)
    assert any('INSERT INTO "contacts_note"' in sql for sql in prepared)
    # Statements through Django's own cursors stay unprepared.
    assert not any(sql.startswith("SELECT statement FROM pg_prepared_statements") for sql in prepared)


def test_intake_takes_custom_values_beside_the_contact_as_end_does(bot, taxonomy):
    response = bot.post("intake", {"contact": {"name": "Cus"}, "custom": {"budget": 900}})
    assert response.status_code == 201, response.content
    assert Contact.objects.get().custom == {"budget": 900}
    bad = bot.post("intake", {"contact": {"name": "Bad"}, "custom": {"budget": "lots"}})
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["field"] == "custom.budget"


@pytest.mark.parametrize("path", ["stage", "intake"])
def test_a_stage_named_with_digits_is_found_by_its_name_before_an_id(bot, taxonomy, path):
    from contacts.models import Stage

    qualified = taxonomy["qualified"]
    named = Stage.objects.create(pipeline=taxonomy["sales"], name=str(qualified.pk), position=5)
    if path == "stage":
        contact_id = bot.post("contacts/upsert", {"name": "Dig", "phone": "+15615550190"}).json()["contact"]["id"]
        answer = bot.put(f"contacts/{contact_id}/stage", {"pipeline": "Sales", "stage": str(qualified.pk)})
    else:
        answer = bot.post("intake", {"contact": {"name": "Dig", "phone": "+15615550190"}, "pipeline": "Sales", "stage": str(qualified.pk)})
    assert answer.status_code in (200, 201), answer.content
    assert ContactStage.objects.get().stage == named
    # A number no stage is named after is still an id.
    by_id = bot.post("intake", {"contact": {"name": "Ids", "phone": "+15615550191"}, "pipeline": "Sales", "stage": str(taxonomy["new"].pk)})
    assert by_id.status_code == 201, by_id.content
    assert ContactStage.objects.get(contact__name="Ids").stage == taxonomy["new"]


def test_unknown_keys_in_several_parts_are_all_named_with_what_is_allowed(bot, taxonomy):
    response = bot.post("intake", {"contact": {"name": "X", "nickname": "Y"},
                                   "task": {"title": "Call", "due_at": "2030-01-01T10:00:00Z", "urgency": "high"}})
    assert response.status_code == 400
    errors = {e["field"]: e for e in response.json()["errors"]}
    assert set(errors) == {"contact.nickname", "task.urgency"}
    assert "name" in errors["contact.nickname"]["allowed"] and "due_at" in errors["task.urgency"]["allowed"]
    assert "the fields are" in errors["task.urgency"]["message"] and "title" in errors["task.urgency"]["message"]
    assert Contact.objects.count() == 0


def test_a_part_sent_as_a_number_is_told_what_object_it_should_be(bot, taxonomy):
    response = bot.post("intake", {"contact": {"name": "X", "email": "x@example.com"}, "conversation": 69})
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["field"] == "conversation" and "external_id" in error["message"] and "a number" in error["message"]

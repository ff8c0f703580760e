"""Contact endpoints over HTTP: upsert, batch, lookup, detail, edits, and the approval flow."""

import datetime as dt

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from contacts import services
from contacts.models import ChangeRequest, Contact, ContactFile, Note, Source, Task
from conversations.models import Conversation
from crm_hub.actors import Actor
from tests.contacts.factories import UserFactory

pytestmark = pytest.mark.django_db


def codes(response):
    return [(e["field"], e["code"]) for e in response.json()["errors"]]


def test_upsert_creates_with_source_api_then_matches_phone_in_another_format(bot, taxonomy):
    first = bot.post("contacts/upsert", {"name": "Marcus Reed", "phone": "(561) 555-0192", "tags": ["lead"], "custom": {"budget": 5000}})
    assert first.status_code == 201
    body = first.json()
    assert body["created"] is True and body["matched_by"] is None
    assert body["contact"]["phone_e164"] == "+15615550192"
    assert body["contact"]["source"] == "api"
    assert "identity" not in body["contact"]

    again = bot.post("contacts/upsert", {"phone": "+1 561.555.0192", "company": "Reed & Co", "tags": ["VIP"]})
    assert again.status_code == 200
    assert again.json()["matched_by"] == "phone"
    assert again.json()["contact"]["id"] == body["contact"]["id"]
    contact = Contact.objects.get()
    assert contact.company == "Reed & Co"
    assert sorted(t.name for t in contact.tags.all()) == ["Lead", "VIP"]


def test_upsert_matches_by_email_and_flags_conflicting_contact(bot, taxonomy):
    a = bot.post("contacts/upsert", {"name": "A", "phone": "+15615550100"}).json()["contact"]["id"]
    b = bot.post("contacts/upsert", {"name": "B", "email": "b@example.com"}).json()["contact"]["id"]
    by_email = bot.post("contacts/upsert", {"email": "B@Example.com", "city": "Miami"})
    assert by_email.json()["matched_by"] == "email"
    conflict = bot.post("contacts/upsert", {"phone": "5615550100", "email": "b@example.com"})
    assert conflict.json()["contact"]["id"] == a
    assert conflict.json()["possible_duplicates"] == [b]
    assert Contact.objects.count() == 2


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"phone": "12"}, ("phone", "invalid_phone")),
        ({"email": "not-an-email"}, ("email", "invalid_email")),
        ({"name": "X", "favourite_colour": "blue"}, ("favourite_colour", "unknown_field")),
        ({"name": "X", "custom": {"nope": 1}}, ("custom.nope", "unknown_field")),
        ({"name": "X", "custom": {"credit_limit": 10}}, ("custom.credit_limit", "field_not_allowed_for_ai")),
        ({"name": "X", "custom": {"budget": "lots"}}, ("custom.budget", "invalid_value")),
        ({"name": "X", "tags": ["Nope"]}, ("tags", "unknown_tag")),
        ({"name": "X", "birthday": "31/12/1990"}, ("birthday", "invalid_value")),
        ({"company": "Only company"}, ("name", "required")),
        ({"name": ["not", "text"]}, ("name", "invalid_value")),
    ],
)
def test_upsert_refuses_bad_input_and_writes_nothing(bot, taxonomy, payload, expected):
    response = bot.post("contacts/upsert", payload)
    assert response.status_code == 400
    assert expected in codes(response)
    assert Contact.objects.count() == 0


def test_unknown_tag_error_lists_allowed_tags(bot, taxonomy):
    error = bot.post("contacts/upsert", {"name": "X", "tags": ["Gold"]}).json()["errors"][0]
    assert error["allowed"] == ["Lead", "VIP"]


def test_every_bad_field_is_reported_at_once(bot, taxonomy):
    response = bot.post("contacts/upsert", {"phone": "12", "email": "x", "tags": ["Nope"]})
    assert {c for _f, c in codes(response)} >= {"invalid_phone", "invalid_email", "unknown_tag"}


def test_body_that_is_not_an_object_is_refused(bot):
    response = bot.client.post("/api/v1/contacts/upsert", data="[1, 2]", content_type="application/json", **bot.headers)
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "invalid_value"


def test_malformed_json_is_a_400_in_the_envelope(bot):
    response = bot.client.post("/api/v1/contacts/upsert", data="{oops", content_type="application/json", **bot.headers)
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "parse_error"


def test_overwriting_protected_fields_becomes_pending_change_then_staff_approve(bot, taxonomy, staff_user):
    owner = UserFactory(username="olivia")
    created = bot.post("contacts/upsert", {"name": "Ana", "phone": "+15615550111", "email": "ana@old.example", "owner": "olivia"})
    assert created.json()["contact"]["owner"]["username"] == "olivia"
    response = bot.post("contacts/upsert", {"phone": "+15615550111", "email": "ana@new.example", "name": "Ana", "owner": staff_user.username})
    assert response.status_code == 200
    pending = response.json()["pending_changes"]
    assert {(p["field"], p["new_value"], p["status"]) for p in pending} == {
        ("email", "ana@new.example", "pending"), ("owner", staff_user.username, "pending"),
    }
    contact = Contact.objects.get()
    assert contact.email == "ana@old.example" and contact.owner == owner
    # A retry of the same conversation asks once, not twice.
    bot.post("contacts/upsert", {"phone": "+15615550111", "email": "ana@new.example"})
    assert ChangeRequest.objects.filter(field="email").count() == 1

    email_request = ChangeRequest.objects.get(field="email")
    services.approve_change_request(request=email_request, user=staff_user)
    services.reject_change_request(request=ChangeRequest.objects.get(field="owner"), user=staff_user)
    contact.refresh_from_db()
    assert contact.email == "ana@new.example"
    assert contact.owner == owner


def test_patch_fills_empty_fields_and_queues_protected_overwrites(bot, taxonomy):
    contact_id = bot.post("contacts/upsert", {"name": "Bo", "phone": "+15615550122", "identity": "123"}).json()["contact"]["id"]
    response = bot.patch(f"contacts/{contact_id}", {"email": "bo@example.com", "company": "Acme", "identity": "999", "phone": ""})
    assert response.status_code == 200
    body = response.json()
    assert body["contact"]["email"] == "bo@example.com"
    assert body["contact"]["company"] == "Acme"
    # identity and clearing the phone need approval; identity values stay hidden without identity:read.
    assert sorted(p["field"] for p in body["pending_changes"]) == ["identity", "phone"]
    identity_change = next(p for p in body["pending_changes"] if p["field"] == "identity")
    assert identity_change["new_value"] == "" and identity_change["old_value"] == ""
    contact = Contact.objects.get(pk=contact_id)
    assert contact.identity == "123" and contact.phone_e164 == "+15615550122"


def test_patch_refuses_phone_of_another_contact_and_tags(bot, taxonomy):
    bot.post("contacts/upsert", {"name": "A", "phone": "+15615550131"})
    b = bot.post("contacts/upsert", {"name": "B"}).json()["contact"]["id"]
    assert ("phone", "already_exists") in codes(bot.patch(f"contacts/{b}", {"phone": "561-555-0131"}))
    assert ("tags", "unknown_field") in codes(bot.patch(f"contacts/{b}", {"tags": ["Lead"]}))
    # Every problem in one answer: a bad email does not hide that the phone is taken.
    both = codes(bot.patch(f"contacts/{b}", {"phone": "(561) 555-0131", "email": "not-an-email"}))
    assert {("phone", "already_exists"), ("email", "invalid_email")} <= set(both)


def test_batch_upsert_answers_each_item_in_order(bot, taxonomy):
    existing = bot.post("contacts/upsert", {"name": "Old", "phone": "+15615550140"}).json()["contact"]["id"]
    response = bot.post("contacts/batch-upsert", {"contacts": [
        {"name": "New one", "phone": "+15615550141", "tags": ["Lead"]},
        {"name": "Bad", "email": "nope"},
        {"phone": "561 555 0140", "city": "Tampa"},
        {"name": "Repeat", "phone": "(561) 555-0141", "company": "Twice"},
        {"name": "Odd", "unknown": 1},
        {"name": "Tagless", "tags": ["Ghost"]},
    ]})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 400, 200, 200, 400, 400]
    assert results[1]["errors"][0]["field"] == "contacts.1.email"
    assert results[4]["errors"][0] == {**results[4]["errors"][0], "field": "contacts.4.unknown", "code": "unknown_field"}
    assert results[5]["errors"][0]["field"] == "contacts.5.tags"
    assert results[2]["contact"]["id"] == existing
    assert results[3]["contact"]["id"] == results[0]["contact"]["id"]
    assert Contact.objects.count() == 2
    created = Contact.objects.get(phone_e164="+15615550141")
    assert created.company == "Twice" and created.source == Source.API
    assert [t.name for t in created.tags.all()] == ["Lead"]
    assert created.history.filter(action="created").count() == 1


def test_a_batch_item_that_is_not_an_object_fails_alone(bot):
    response = bot.post("contacts/batch-upsert", {"contacts": [
        {"name": "Kept", "phone": "+15615550142"}, "Ana, 561 555 0143", None, [1], {"name": "Also kept"},
    ]})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 400, 400, 400, 201]
    assert [r["errors"][0]["field"] for r in results[1:4]] == ["contacts.1", "contacts.2", "contacts.3"]
    assert {r["errors"][0]["code"] for r in results[1:4]} <= {"invalid_value", "required"}
    assert Contact.objects.count() == 2


def test_batch_upsert_limits(bot):
    assert bot.post("contacts/batch-upsert", {"contacts": []}).status_code == 400
    too_many = bot.post("contacts/batch-upsert", {"contacts": [{"name": f"N{i}"} for i in range(101)]})
    assert too_many.status_code == 400
    assert too_many.json()["errors"][0]["field"] == "contacts"


def test_lookup_finds_phone_in_any_format_and_filters(bot, taxonomy):
    owner = UserFactory(username="sam", email="sam@example.com")
    a = bot.post("contacts/upsert", {"name": "Alice", "phone": "+15615550150", "email": "alice@example.com", "tags": ["VIP"]}).json()["contact"]["id"]
    b = bot.post("contacts/upsert", {"name": "Bob", "phone": "+15615550151", "owner": "sam"}).json()["contact"]["id"]
    bot.put(f"contacts/{b}/stage", {"pipeline": "Sales", "stage": "Qualified"})

    def ids(**params):
        response = bot.get("contacts", params)
        assert response.status_code == 200, response.content
        return [c["id"] for c in response.json()["results"]]

    assert ids(phone="(561) 555-0150") == [a]
    for param, value, code in (("phone", "garbage", "invalid_phone"), ("email", "not-an-email", "invalid_email"), ("owner", "nobody", "invalid_value")):
        refused = bot.get("contacts", {param: value})
        assert refused.status_code == 400, (param, refused.content)
        assert refused.json()["errors"][0]["field"] == param and refused.json()["errors"][0]["code"] == code
    assert ids(email="ALICE@example.com") == [a]
    assert ids(q="561-555-0151") == [b]
    assert ids(q="ali") == [a]
    assert ids(tag="vip") == [a]
    assert ids(stage="qualified") == [b]
    assert ids(stage=str(taxonomy["qualified"].pk)) == [b]
    assert ids(owner="sam@example.com") == [b] == ids(owner=str(owner.pk))
    assert sorted(ids(source="api")) == sorted([a, b])
    assert ids(source="form") == []
    future = (timezone.now() + dt.timedelta(hours=1)).isoformat()
    assert ids(updated_since=future) == []
    for moment in ("yesterday", "9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00"):
        out_of_range = bot.get("contacts", {"updated_since": moment})
        assert out_of_range.status_code == 400 and out_of_range.json()["errors"][0]["field"] == "updated_since"
    for param, code in (("tag", "unknown_tag"), ("stage", "unknown_stage")):
        refused = bot.get("contacts", {param: "Ghost"})
        assert refused.status_code == 400
        assert refused.json()["errors"][0] == {**refused.json()["errors"][0], "field": param, "code": code}
        assert refused.json()["errors"][0]["allowed"]
    listed = bot.get("contacts", {"phone": "5615550150"}).json()["results"][0]
    assert listed["tags"] == ["VIP"] and "identity" not in listed


def test_lookup_is_cursor_paginated(bot):
    for i in range(5):
        bot.post("contacts/upsert", {"name": f"P{i}"})
    first = bot.get("contacts", {"page_size": 2}).json()
    assert len(first["results"]) == 2 and first["next"]
    seen = [c["id"] for c in first["results"]]
    next_url = first["next"]
    while next_url:
        page = bot.client.get(next_url, **bot.headers).json()
        seen += [c["id"] for c in page["results"]]
        next_url = page["next"]
    assert sorted(seen) == sorted(Contact.objects.values_list("pk", flat=True))


def test_detail_carries_the_context_an_agent_needs(bot, full_bot, taxonomy, django_assert_max_num_queries):
    owner = UserFactory(username="kim")
    contact_id = bot.post("contacts/upsert", {
        "name": "Dee", "phone": "+15615550160", "identity": "ID-1", "owner": "kim", "tags": ["Lead"],
        "custom": {"budget": 1200, "intent": 0.55},
    }).json()["contact"]["id"]
    bot.put(f"contacts/{contact_id}/stage", {"pipeline": "Sales", "stage": "New"})
    for i in range(7):
        bot.post(f"contacts/{contact_id}/notes", {"body": f"note {i}"})
    bot.post(f"contacts/{contact_id}/tasks", {"title": "Call", "due_at": "2026-05-02T10:00:00Z"})
    done = bot.post(f"contacts/{contact_id}/tasks", {"title": "Old", "due_at": "2026-04-02"}).json()["id"]
    services.complete_task(task=Task.objects.get(pk=done), actor=Actor.for_system("test"), source=Source.MANUAL)
    Conversation.objects.create(external_id="c-1", channel="whatsapp", started_at=timezone.now(), contact_id=contact_id, summary="Asked for prices")

    with django_assert_max_num_queries(10):
        response = bot.get(f"contacts/{contact_id}")
    assert response.status_code == 200
    body = response.json()
    assert "identity" not in body
    assert body["owner"]["username"] == owner.username
    assert body["tags"] == ["Lead"]
    assert body["stages"][0]["pipeline"] == "Sales" and body["stages"][0]["stage"] == "New"
    intent = next(f for f in body["custom_fields"] if f["key"] == "intent")
    assert intent["band"] == "Warm" and intent["label"] == "Intent score"
    assert len(body["last_notes"]) == 5 and "note 6" in body["last_notes"][0]["body"]
    assert [t["title"] for t in body["open_tasks"]] == ["Call"]
    assert body["recent_conversations"][0]["external_id"] == "c-1"
    assert body["recent_conversations"][0]["summary"] == "Asked for prices"
    assert full_bot.get(f"contacts/{contact_id}").json()["identity"] == "ID-1"


def test_unknown_contact_is_404_in_the_envelope(bot):
    response = bot.get("contacts/999999")
    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] == "not_found"
    assert bot.get("contacts/99999999999999999999999").status_code == 404


def test_notes_tasks_tags_stage_files(bot, taxonomy):
    contact_id = bot.post("contacts/upsert", {"name": "Eve", "phone": "+15615550170"}).json()["contact"]["id"]
    from crm_hub.models import Agent

    conversation = Conversation.objects.create(external_id="x", started_at=timezone.now(),
                                               agent=Agent.objects.get(name="writer-bot"))
    note = bot.post(f"contacts/{contact_id}/notes", {"body": "<p>Hi <script>x</script></p>", "conversation_id": conversation.pk})
    assert note.status_code == 201 and "script" not in note.json()["body"]
    assert Note.objects.get().source == Source.API
    assert ("conversation_id", "invalid_value") in codes(bot.post(f"contacts/{contact_id}/notes", {"body": "x", "conversation_id": 999}))
    assert ("body", "required") in codes(bot.post(f"contacts/{contact_id}/notes", {}))

    task = bot.post(f"contacts/{contact_id}/tasks", {"title": "Call", "due_at": "2026-05-02T10:00:00Z", "priority": "high"})
    assert task.status_code == 201 and task.json()["priority"] == "high"
    assert ("due_at", "invalid_value") in codes(bot.post(f"contacts/{contact_id}/tasks", {"title": "x", "due_at": "soon"}))
    assert ("assignee", "invalid_value") in codes(bot.post(f"contacts/{contact_id}/tasks", {"title": "x", "due_at": "2026-05-02", "assignee": "ghost"}))
    urgent = bot.post(f"contacts/{contact_id}/tasks", {"title": "x", "due_at": "2026-05-02", "priority": "urgent!"}).json()["errors"][0]
    assert (urgent["field"], urgent["code"], urgent["allowed"]) == ("priority", "invalid_value", ["low", "normal", "high"])

    tags = bot.post(f"contacts/{contact_id}/tags", {"tags": ["lead", "VIP"]})
    assert tags.json() == {"tags": ["Lead", "VIP"], "added": ["Lead", "VIP"]}
    assert bot.post(f"contacts/{contact_id}/tags", {"tags": ["Lead"]}).json()["added"] == []
    assert bot.delete(f"contacts/{contact_id}/tags/vip").json() == {"tags": ["Lead"], "removed": True}
    assert bot.delete(f"contacts/{contact_id}/tags/vip").json()["removed"] is False
    assert ("tag", "unknown_tag") in codes(bot.delete(f"contacts/{contact_id}/tags/ghost"))

    stage = bot.put(f"contacts/{contact_id}/stage", {"pipeline": "sales", "stage": "Qualified"})
    assert stage.json()["stage"] == "Qualified" and stage.json()["changed"] is True
    assert bot.put(f"contacts/{contact_id}/stage", {"pipeline": "Sales", "stage": "Qualified"}).json()["changed"] is False
    unknown_pipeline = bot.put(f"contacts/{contact_id}/stage", {"pipeline": "Nope", "stage": "New"})
    assert ("pipeline", "unknown_pipeline") in codes(unknown_pipeline)
    assert unknown_pipeline.json()["errors"][0]["allowed"] == ["Sales", "Support"]
    assert ("stage", "unknown_stage") in codes(bot.put(f"contacts/{contact_id}/stage", {"pipeline": "Sales", "stage": "Won"}))
    assert ("pipeline", "required") in codes(bot.put(f"contacts/{contact_id}/stage", {"stage": "New"}))

    upload = SimpleUploadedFile("quote.pdf", b"%PDF-1.4 tiny", content_type="application/pdf")
    sent = bot.client.post(f"/api/v1/contacts/{contact_id}/files", {"file": upload}, **bot.headers)
    assert sent.status_code == 201, sent.content
    assert ContactFile.objects.get().name == "quote.pdf"
    exe = SimpleUploadedFile("x.exe", b"MZ", content_type="application/x-msdownload")
    refused = bot.client.post(f"/api/v1/contacts/{contact_id}/files", {"file": exe}, **bot.headers)
    assert ("file", "unsupported_file_type") in codes(refused)


def test_fast_contact_record_matches_the_documented_serializer(bot, full_bot, taxonomy):
    from contacts.api.serializers import ContactOutput, contact_record

    UserFactory(username="pat", first_name="Pat", last_name="Lee")
    bot.post("contacts/upsert", {"name": "Z", "phone": "+15615550199", "birthday": "1990-02-03", "owner": "pat",
                                 "identity": "X1", "custom": {"budget": 3}})
    contact = Contact.objects.get()
    for visible in (False, True):
        assert contact_record(contact, identity_visible=visible) == ContactOutput(contact, context={"identity_visible": visible}).data


def test_batch_upsert_runs_contact_created_rules_for_each_new_contact(bot, settings):
    from automations import webhooks
    from automations.models import Trigger, WebhookDelivery
    from tests.automations.factories import RuleFactory

    settings.CRM_WEBHOOK_QUEUE_ON_COMMIT = False
    owner = UserFactory(username="closer")
    RuleFactory(trigger=Trigger.CONTACT_CREATED, assign_mode="fixed", assign_user=owner)
    webhooks.create_endpoint(url="http://127.0.0.1:9/hook", events=["contact.created"])
    response = bot.post("contacts/batch-upsert", {"contacts": [
        {"name": "A", "phone": "+15615550151"}, {"name": "B", "email": "b@example.com"},
    ]})
    assert [r["status"] for r in response.json()["results"]] == [201, 201]
    assert set(Contact.objects.values_list("owner__username", flat=True)) == {"closer"}
    assert WebhookDelivery.objects.filter(event="contact.created").count() == 2


@pytest.mark.parametrize("due_at", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
def test_a_due_date_the_database_cannot_hold_is_a_400_on_the_field(bot, taxonomy, due_at):
    contact_id = bot.post("contacts/upsert", {"name": "Dana"}).json()["contact"]["id"]
    task = bot.post(f"contacts/{contact_id}/tasks", {"title": "Call", "due_at": due_at})
    assert task.status_code == 400, task.content
    assert task.json()["errors"][0]["field"] == "due_at" and task.json()["errors"][0]["code"] == "invalid_value"
    intake = bot.post("intake", {"contact": {"name": "Eve"}, "task": {"title": "Call", "due_at": due_at}})
    assert intake.status_code == 400, intake.content
    assert intake.json()["errors"][0]["field"] == "task.due_at"
    assert Task.objects.count() == 0 and not Contact.objects.filter(name="Eve").exists()


def test_the_same_phone_change_in_other_spellings_is_one_pending_request(bot, taxonomy):
    bot.post("contacts/upsert", {"name": "Ana", "phone": "+15615550111", "email": "ana@old.example"})
    spellings = ["(561) 555-0192 x12", "561-555-0192 ext. 12", "+1 561 555 0192 ext 12", "1-561-555-0192 x 12"]
    for spelling in spellings:
        answer = bot.post("contacts/upsert", {"email": "ana@old.example", "phone": spelling})
        assert answer.status_code == 200, answer.content
        assert len(answer.json()["pending_changes"]) == 1
    for spelling in ("ANA@new.example", " ana@NEW.example "):
        bot.post("contacts/upsert", {"phone": "+15615550111", "email": spelling})
    assert ChangeRequest.objects.filter(field="phone").count() == 1
    assert ChangeRequest.objects.filter(field="email").count() == 1

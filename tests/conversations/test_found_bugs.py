"""Regression tests for bugs a black-box tester found in the conversation endpoints and extraction."""

from __future__ import annotations

import json
import time

import pytest

from contacts.models import Contact, CustomField, Note, Source, Task
from contacts.services import upsert_contact
from conversations.models import Conversation
from crm_hub.actors import Actor
from crm_hub.models import IdempotencyRecord
from tests.api.factories import make_taxonomy

pytestmark = pytest.mark.django_db

URL = "/api/v1/conversations"
T3 = ["conversations:write"]
EVERYTHING = ["contacts:read", "contacts:write", "notes:write", "tasks:write", "conversations:write"]


def start(api, **body):
    return api.post(URL, body, format="json")


def end(api, conversation_id, **body):
    return api.post(f"{URL}/{conversation_id}/end", body, format="json")


def started(api, *visitor_lines, **body):
    response = start(api, messages=[{"role": "visitor", "content": line} for line in visitor_lines], **body)
    assert response.status_code == 201, response.json()
    return response.json()["conversation"]["id"]


def missing_scope(response) -> str:
    assert response.status_code == 403, response.json()
    error = response.json()["errors"][0]
    assert error["code"] == "missing_scope"
    return error["scope"]


def linked_contact(**data) -> Contact:
    from crm_hub.services import create_agent

    staff_agent, _token = create_agent(name="seeder", scopes=EVERYTHING)
    return upsert_contact(data=data, actor=Actor.for_agent(staff_agent), source=Source.API).contact


INTAKE = {
    "contact": {"name": "Marcus Reed", "phone": "561 555 0192"}, "note": "Talked.", "tags": ["VIP"],
    "pipeline": "Sales", "stage": "Qualified", "task": {"title": "Call back", "due_at": "2030-01-01T10:00:00Z"},
}


# --- 1. scopes -----------------------------------------------------------------------------------


def assert_nothing_written(conversation_id):
    assert not Contact.objects.exists() and not Note.objects.exists() and not Task.objects.exists()
    assert Conversation.objects.get(pk=conversation_id).status == "open"


def test_end_with_intake_needs_the_scopes_post_intake_needs(make_client):
    make_taxonomy()
    t3 = make_client(scopes=T3)
    conversation_id = started(t3, "hi")
    assert missing_scope(end(t3, conversation_id, intake=INTAKE)) == "contacts:write"
    assert_nothing_written(conversation_id)
    assert not Contact.objects.filter(tags__name="VIP").exists()

    contacts_only = make_client(scopes=[*T3, "contacts:write"])
    conversation_id = started(contacts_only, "hi")
    assert missing_scope(end(contacts_only, conversation_id, intake=INTAKE)) == "notes:write"
    # Without a note the summary becomes the note: that is a note too.
    no_note = {k: v for k, v in INTAKE.items() if k not in ("note", "task")}
    assert missing_scope(end(contacts_only, conversation_id, summary="s", intake=no_note)) == "notes:write"
    with_notes = make_client(scopes=[*T3, "contacts:write", "notes:write"])
    conversation_id = started(with_notes, "hi")
    assert missing_scope(end(with_notes, conversation_id, intake=INTAKE)) == "tasks:write"
    assert_nothing_written(conversation_id)


def test_end_with_extract_needs_contacts_write(make_client):
    t3 = make_client(scopes=T3)
    conversation_id = started(t3, "I'm Marcus, call me on 561 555 0192")
    assert missing_scope(end(t3, conversation_id, extract=True, extractor="rules")) == "contacts:write"
    assert_nothing_written(conversation_id)
    # A plain end still needs nothing more than conversations:write.
    assert end(t3, conversation_id).status_code == 200


def test_end_answer_shows_the_contact_only_with_contacts_read(make_client):
    existing = linked_contact(name="Marcus Reed", phone="561 555 0192", email="marcus@example.com")
    writer = make_client(scopes=[*T3, "contacts:write"])
    conversation_id = started(writer, "hi")
    response = end(writer, conversation_id, intake={"contact": {"phone": "561-555-0192"}})
    assert response.status_code == 200, response.json()
    assert response.json()["contact"] is None
    assert "marcus@example.com" not in response.content.decode()
    assert Conversation.objects.get(pk=conversation_id).contact == existing

    reader = make_client(scopes=[*T3, "contacts:write", "contacts:read"])
    conversation_id = started(reader, "hi")
    body = end(reader, conversation_id, intake={"contact": {"phone": "561-555-0192"}}).json()
    assert body["contact"]["id"] == existing.pk and body["contact"]["email"] == "marcus@example.com"


def test_linking_by_contact_id_needs_a_contacts_scope_so_ids_cannot_be_probed(make_client):
    existing = linked_contact(name="Marcus Reed")
    t3 = make_client(scopes=T3)
    assert missing_scope(start(t3, external_id="a", contact_id=existing.pk)) == "contacts:read"
    assert missing_scope(start(t3, external_id="b", contact_id=existing.pk + 1000)) == "contacts:read"
    assert not Conversation.objects.exists()
    writer = make_client(scopes=[*T3, "contacts:write"])
    assert start(writer, external_id="c", contact_id=existing.pk).status_code == 201


# --- 2. the LLM call under an Idempotency-Key runs outside any transaction ----------------------


@pytest.mark.django_db(transaction=True)
def test_llm_call_with_idempotency_key_runs_outside_the_transaction_and_replays(make_client, settings, monkeypatch):
    from django.db import connection

    from conversations import extraction

    settings.CRM_LLM_BASE_URL = "http://127.0.0.1:9/v1"
    seen = []

    def slow_llm(texts, definitions):
        seen.append(connection.in_atomic_block)
        time.sleep(0.2)
        return {"contact": {"name": "Ana", "email": "ana@example.com"}}

    monkeypatch.setattr(extraction, "_call_llm", slow_llm)
    api = make_client(scopes=EVERYTHING)
    conversation_id = started(api, "I'm Ana, ana@example.com")
    first = api.post(f"{URL}/{conversation_id}/end", {"extract": True}, format="json", HTTP_IDEMPOTENCY_KEY="end-1")
    assert first.status_code == 200, first.json()
    assert seen == [False]
    assert Contact.objects.get().email_normalized == "ana@example.com"
    assert Conversation.objects.get(pk=conversation_id).status == "ended"
    again = api.post(f"{URL}/{conversation_id}/end", {"extract": True}, format="json", HTTP_IDEMPOTENCY_KEY="end-1")
    assert again.status_code == 200 and again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert seen == [False]  # the replay did not call the LLM again
    assert IdempotencyRecord.objects.get(key="end-1").state == IdempotencyRecord.State.DONE


# --- 3. a first name alone does not relink a linked conversation -------------------------------


def test_first_name_only_findings_go_to_the_linked_contact(make_client):
    CustomField.objects.create(key="plan", label="Plan", type=CustomField.Type.SINGLE_CHOICE,
                               choices=["Starter", "Enterprise"], allow_for_ai=True)
    api = make_client(scopes=EVERYTHING)
    robert = linked_contact(name="Robert Smith", phone="561 555 0192")
    conversation_id = started(api, "Hi, I am Robert, I want the Enterprise plan", contact_id=robert.pk)
    response = end(api, conversation_id, extract=True, extractor="rules")
    assert response.status_code == 200, response.json()
    assert Contact.objects.count() == 1
    robert.refresh_from_db()
    assert robert.name == "Robert Smith" and robert.custom.get("plan") == "Enterprise"
    assert Conversation.objects.get(pk=conversation_id).contact_id == robert.pk


# --- 4-6. LLM replies: NUL, total deadline, wrong shape; phone extensions -----------------------


def test_llm_values_with_nul_are_dropped_never_stored(make_client, fake_llm):
    CustomField.objects.create(key="objection", label="Objection", type=CustomField.Type.TEXT, allow_for_ai=True)
    fake_llm.reply_json({"contact": {"name": "Ana\u0000 Lima", "email": "ana@example.com", "city": "Ri\u0000o"},
                         "custom": {"objection": "price\u0000"}})
    api = make_client(scopes=EVERYTHING)
    conversation_id = started(api, "I'm Ana, ana@example.com")
    response = end(api, conversation_id, extract=True)
    assert response.status_code == 200, response.json()
    contact = Contact.objects.get()
    assert contact.email_normalized == "ana@example.com"
    assert "\x00" not in contact.name and "\x00" not in contact.city and "objection" not in (contact.custom or {})
    extraction = Conversation.objects.get(pk=conversation_id).extraction
    assert "\x00" not in json.dumps(extraction).replace("\\u0000", "\x00")
    reasons = {d["field"]: d["reason"] for d in extraction["dropped"]}
    assert {"name", "city", "custom.objection"} <= set(reasons)
    assert all(reasons[f].startswith("null_characters_not_allowed") for f in ("name", "city", "custom.objection"))


def test_llm_values_with_a_lone_surrogate_are_dropped_never_stored(make_client, fake_llm):
    CustomField.objects.create(key="objection", label="Objection", type=CustomField.Type.TEXT, allow_for_ai=True)
    fake_llm.reply_json({"contact": {"name": "Ana\ud800 Lima", "email": "ana@example.com"},
                         "custom": {"objection": "price\udfff"}})
    api = make_client(scopes=EVERYTHING)
    conversation_id = started(api, "I'm Ana, ana@example.com")
    response = end(api, conversation_id, extract=True)
    assert response.status_code == 200, response.json()
    contact = Contact.objects.get()
    assert contact.email_normalized == "ana@example.com" and "objection" not in (contact.custom or {})
    reasons = {d["field"]: d["reason"] for d in Conversation.objects.get(pk=conversation_id).extraction["dropped"]}
    assert all(reasons[f].startswith("surrogate_characters_not_allowed") for f in ("name", "custom.objection"))


def test_llm_timeout_is_a_total_deadline(make_client, fake_llm, settings):
    fake_llm.reply_json({"contact": {"name": "Zed"}})
    fake_llm.trickle = 0.1  # each read is quick; the whole body is not
    settings.CRM_LLM_TIMEOUT_SECONDS = 1
    api = make_client(scopes=EVERYTHING)
    conversation_id = started(api, "call me on 561 555 0192")
    began = time.monotonic()
    response = end(api, conversation_id, extract=True)
    elapsed = time.monotonic() - began
    assert response.status_code == 200, response.json()
    assert elapsed < 3, elapsed  # the reply would take ~8 s
    extraction = response.json()["extraction"]
    assert extraction["error"]["code"] == "llm_timeout" and extraction["fallback"] == "rules"
    assert Contact.objects.get().phone_e164 == "+15615550192"


def test_llm_json_of_the_wrong_shape_falls_back_to_the_rules(make_client, fake_llm):
    fake_llm.reply_json({"contact": ["x"]})
    api = make_client(scopes=EVERYTHING)
    conversation_id = started(api, "call me on 561 555 0192")
    extraction = end(api, conversation_id, extract=True).json()["extraction"]
    assert extraction["error"]["code"] == "llm_invalid_json" and extraction["fallback"] == "rules"
    assert Contact.objects.get().phone_e164 == "+15615550192"


def test_rules_keep_a_phone_extension(make_client):
    api = make_client(scopes=EVERYTHING)
    conversation_id = started(api, "my office 561-555-7060 ext. 123")
    assert end(api, conversation_id, extract=True, extractor="rules").status_code == 200
    contact = Contact.objects.get()
    assert contact.phone_e164 == "+15615557060" and contact.phone_extension == "123"



@pytest.mark.django_db(transaction=True)
def test_a_throttled_end_makes_no_llm_call(make_client, settings, monkeypatch):
    from conversations import extraction
    from crm_hub.models import Agent

    settings.CRM_LLM_BASE_URL = "http://127.0.0.1:9/v1"
    calls = []
    monkeypatch.setattr(extraction, "_call_llm", lambda texts, definitions: calls.append(1) or {"contact": {}})
    api = make_client(scopes=EVERYTHING)
    conversation_id = started(api, "I'm Ana, ana@example.com")
    Agent.objects.filter(pk=api.agent.pk).update(rate_limit="1/min")  # the start above spent it
    statuses = [
        api.post(f"{URL}/{conversation_id}/end", {"extract": True}, format="json", HTTP_IDEMPOTENCY_KEY=f"k{i}").status_code
        for i in range(3)
    ]
    assert statuses == [429, 429, 429]
    assert calls == []  # turned away before the model, not after it
    assert Conversation.objects.get(pk=conversation_id).status == "open"

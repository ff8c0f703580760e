"""A token reads only what its scopes allow, whatever the method or the endpoint's answer."""

import pytest

from contacts import services
from contacts.models import Contact, Source
from crm_hub.actors import Actor
from tests.api.factories import AgentClient, make_agent

pytestmark = pytest.mark.django_db


def client_with(*scopes):
    _agent, token = make_agent(f"bot-{'-'.join(scopes) or 'none'}", scopes=list(scopes))
    return AgentClient(token)


def test_head_needs_the_scope_get_needs():
    contact = Contact.objects.create(name="Hidden", email="hidden@example.com", source="api")
    files_only = client_with("files:write")
    for path in (f"/api/v1/contacts/{contact.pk}", "/api/v1/contacts?email=hidden@example.com", "/api/v1/conversations"):
        assert files_only.client.head(path, **files_only.headers).status_code == 403, path
    reader = client_with("contacts:read")
    assert reader.client.head(f"/api/v1/contacts/{contact.pk}", **reader.headers).status_code == 200


def test_a_write_only_token_gets_the_id_not_the_record():
    contact = services.upsert_contact(data={"name": "Private Person", "email": "pub1@example.com", "company": "Secret Co"},
                                      actor=Actor.for_system("test"), source=Source.API).contact
    writer = client_with("contacts:write")
    for response in (writer.patch(f"contacts/{contact.pk}", {}), writer.post("contacts/upsert", {"email": "pub1@example.com"})):
        assert response.status_code == 200, response.content
        body = response.json()
        assert body["contact"] is None and body["contact_id"] == contact.pk
        assert "Secret Co" not in response.content.decode()
    batch = writer.post("contacts/batch-upsert", {"contacts": [{"email": "pub1@example.com"}]}).json()
    assert batch["results"][0]["contact"] is None and batch["results"][0]["contact_id"] == contact.pk
    intake = writer.post("intake", {"contact": {"email": "pub1@example.com"}}).json()
    assert intake["contact"] is None and intake["contact_id"] == contact.pk
    # With contacts:read the record comes back, as before.
    both = client_with("contacts:read", "contacts:write").post("contacts/upsert", {"email": "pub1@example.com"}).json()
    assert both["contact"]["company"] == "Secret Co" and both["contact_id"] == contact.pk


def test_a_write_only_token_learns_no_current_value_from_pending_changes():
    from django.contrib.auth import get_user_model

    owner = get_user_model().objects.create_user("sales-owner", is_staff=True)
    contact = services.upsert_contact(data={"name": "Private", "phone": "+1 561 555 0192", "email": "priv@example.com",
                                            "owner": "sales-owner"}, actor=Actor.for_system("test"), source=Source.API).contact
    assert contact.owner == owner
    writer = client_with("contacts:write")
    for body in ({"phone": "+1 303 555 0188"}, {"email": "other@example.com"}):
        response = writer.patch(f"contacts/{contact.pk}", body)
        assert response.status_code == 200, response.content
        (pending,) = response.json()["pending_changes"]
        assert pending["old_value"] == "" and pending["new_value"]
        text = response.content.decode()
        assert "555-0192" not in text and "5550192" not in text and "priv@example.com" not in text
    intake = writer.post("intake", {"contact": {"email": "priv@example.com", "phone": "+1 303 555 0177"}})
    assert "555-0192" not in intake.content.decode() and "5550192" not in intake.content.decode()
    reader = client_with("contacts:read", "contacts:write")
    (pending,) = reader.patch(f"contacts/{contact.pk}", {"phone": "+1 303 555 0166"}).json()["pending_changes"]
    assert pending["old_value"] == "+1 561 555 0192"  # as entered


def test_a_note_names_only_the_callers_own_conversation_about_this_contact(bot, bot_agent):
    from django.utils import timezone

    from conversations.models import Conversation

    other_agent, _token = make_agent("other-bot")
    here = services.upsert_contact(data={"name": "Here"}, actor=Actor.for_system("t"), source=Source.API).contact
    elsewhere = services.upsert_contact(data={"name": "Elsewhere"}, actor=Actor.for_system("t"), source=Source.API).contact
    now = timezone.now()
    theirs = Conversation.objects.create(external_id="a", started_at=now, agent=other_agent)
    about_someone_else = Conversation.objects.create(external_id="b", started_at=now, agent=bot_agent, contact=elsewhere)
    mine = Conversation.objects.create(external_id="c", started_at=now, agent=bot_agent)
    for refused in (theirs, about_someone_else):
        response = bot.post(f"contacts/{here.pk}/notes", {"body": "x", "conversation_id": refused.pk})
        assert response.status_code == 400
        assert response.json()["errors"][0]["field"] == "conversation_id"
    assert bot.post(f"contacts/{here.pk}/notes", {"body": "x", "conversation_id": mine.pk}).status_code == 201


def test_a_gate_token_asks_access_check_and_lists_no_one():
    contact = services.upsert_contact(data={"name": "Member", "email": "member@example.com"},
                                      actor=Actor.for_system("test"), source=Source.API).contact
    gate = client_with("access:check")
    response = gate.post("access/check", {"email": "member@example.com"})
    assert response.status_code == 200 and response.json()["contact_id"] == contact.pk
    for path in ("contacts", f"contacts/{contact.pk}", "contacts?email=member@example.com"):
        denied = gate.get(path)
        assert denied.status_code == 403 and denied.json()["errors"][0]["scope"] == "contacts:read"
    nobody = client_with("notes:write").post("access/check", {"email": "member@example.com"})
    assert nobody.status_code == 403 and nobody.json()["errors"][0]["scope"] == "access:check"


def test_a_write_only_token_learns_no_tags_completeness_or_holders():
    from contacts.models import Tag

    Tag.objects.create(name="customer")
    Tag.objects.create(name="newsletter")
    contact = services.upsert_contact(data={"name": "Tagged", "email": "tagged@example.com"}, tags=["customer"],
                                      actor=Actor.for_system("test"), source=Source.API).contact
    holder = services.upsert_contact(data={"name": "Holder", "email": "holder@example.com"},
                                     actor=Actor.for_system("test"), source=Source.API).contact
    writer = client_with("contacts:write")
    added = writer.post(f"contacts/{contact.pk}/tags", {"tags": ["newsletter"]}).json()
    assert added == {"tags": None, "added": ["newsletter"]}
    removed = writer.delete(f"contacts/{contact.pk}/tags/newsletter").json()
    assert removed == {"tags": None, "removed": True}
    intake = writer.post("intake", {"contact": {"email": "tagged@example.com"}}).json()
    assert intake["completeness"] is None
    taken = writer.patch(f"contacts/{contact.pk}", {"email": "holder@example.com"})
    assert taken.status_code == 400 and f"#{holder.pk}" not in taken.content.decode()
    assert taken.json()["errors"][0]["code"] == "already_exists"

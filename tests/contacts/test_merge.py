"""Merging two contacts that are one person: nothing of either is lost, and the merge is recorded and announced."""

import pytest

from automations.models import WebhookDelivery, WebhookEndpoint
from contacts import services
from contacts.models import (
    Contact,
    ContactStage,
    HistoryEntry,
    Note,
    PossibleDuplicate,
    Source,
    Task,
)
from conversations.models import Conversation
from crm_hub.actors import Actor
from crm_hub.errors import InputRejected
from tests.contacts.factories import (
    CustomFieldFactory,
    PipelineFactory,
    StageFactory,
    TagFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


def make(actor, *, tags=(), custom=None, **data):
    return services.upsert_contact(data=data, tags=list(tags) or None, custom=custom, actor=actor,
                                   source=Source.MANUAL, protected_changes="apply").contact


@pytest.fixture
def pair(staff_actor):
    """The same person twice: a flag raised when one write matched the phone of one and the email of the other."""
    TagFactory(name="Lead")
    TagFactory(name="VIP")
    CustomFieldFactory(key="budget", label="Budget", type="number")
    CustomFieldFactory(key="plan", label="Plan")
    by_phone = make(staff_actor, name="Maria Silva", phone="+1 561 555 0192", company="", tags=["Lead"],
                    custom={"plan": "pro"})
    by_email = make(staff_actor, name="M. Silva", email="maria@example.com", company="Acme", city="Recife",
                    tags=["Lead", "VIP"], custom={"budget": 5000, "plan": "basic"})
    services.upsert_contact(data={"phone": "(561) 555-0192", "email": "MARIA@example.com"}, actor=staff_actor,
                            source=Source.MANUAL)
    assert PossibleDuplicate.objects.filter(status="open").count() == 1
    return by_phone, by_email


def test_the_kept_contact_wins_and_takes_what_it_lacks(staff_actor, pair):
    keep, other = pair
    result = services.merge_contacts(keep=keep, other=other, actor=staff_actor, source=Source.MANUAL)
    keep.refresh_from_db()
    assert not Contact.objects.filter(pk=other.pk).exists()
    assert (keep.name, keep.phone_e164, keep.email, keep.email_normalized) == (
        "Maria Silva", "+15615550192", "maria@example.com", "maria@example.com")
    assert (keep.company, keep.city) == ("Acme", "Recife")
    assert keep.custom == {"plan": "pro", "budget": 5000}  # its own plan stays; the budget it lacked is taken
    assert sorted(t.name for t in keep.tags.all()) == ["Lead", "VIP"]
    assert result.merged_id == other.pk
    assert set(result.filled) >= {"email", "email_normalized", "company", "city", "custom.budget"}
    assert "name" not in result.filled and "custom.plan" not in result.filled
    # The address can now be found: the key moved with it.
    assert services.find_contact_by_keys(email_normalized="maria@example.com")[1] == keep


def test_everything_of_the_other_moves_over(staff_actor, pair):
    keep, other = pair
    owner = UserFactory(username="olivia", is_staff=True)
    services.assign_owner(contact=other, owner=owner, actor=staff_actor, source=Source.MANUAL)
    services.add_note(contact=other, body="Asked for a quote", actor=staff_actor, source=Source.MANUAL)
    services.create_task(contact=other, title="Send quote", due_at="2030-01-01T10:00:00Z", actor=staff_actor,
                         source=Source.MANUAL)
    sales = PipelineFactory(name="Sales")
    won, new = StageFactory(pipeline=sales, name="Won"), StageFactory(pipeline=sales, name="New")
    support = PipelineFactory(name="Support")
    open_ticket = StageFactory(pipeline=support, name="Open")
    services.move_to_stage(contact=keep, pipeline=sales, stage=new, actor=staff_actor, source=Source.MANUAL)
    services.move_to_stage(contact=other, pipeline=sales, stage=won, actor=staff_actor, source=Source.MANUAL)
    services.move_to_stage(contact=other, pipeline=support, stage=open_ticket, actor=staff_actor, source=Source.MANUAL)
    other_history = HistoryEntry.objects.filter(contact=other).count()

    result = services.merge_contacts(keep=keep, other=other, actor=staff_actor, source=Source.MANUAL)

    keep.refresh_from_db()
    assert keep.owner == owner
    assert Note.objects.get().contact == keep and Task.objects.get().contact == keep
    stages = {m.pipeline.name: m.stage.name for m in ContactStage.objects.filter(contact=keep)}
    assert stages == {"Sales": "New", "Support": "Open"}  # its own stage in Sales stays
    assert result.moved["notes"] == 1 and result.moved["tasks"] == 1 and result.moved["pipeline stages"] == 1
    assert result.moved["tags"] == 1  # VIP; Lead was on both
    merged = HistoryEntry.objects.filter(contact=keep, action="merged").get()
    assert merged.changes["merged_contact"] == [None, f"#{other.pk} · M. Silva · maria@example.com · Acme"]
    assert merged.changes["owner"] == [None, "olivia"] and merged.changes["tags"] == [[], ["VIP"]]
    assert f"Merged contact #{other.pk} (M. Silva) into this one" in merged.summary and "1 note," in merged.summary
    # The other's own history comes along: where each value came from stays answerable.
    assert HistoryEntry.objects.filter(contact=keep).count() >= other_history + 1


def test_conversations_move_with_the_person(staff_actor, pair, agent):
    keep, other = pair
    from django.utils import timezone

    conversation = Conversation.objects.create(agent=agent, external_id="c-1", channel="web_chat", contact=other,
                                               started_at=timezone.now())
    services.merge_contacts(keep=keep, other=other, actor=staff_actor, source=Source.MANUAL)
    conversation.refresh_from_db()
    assert conversation.contact == keep


def test_the_flag_between_them_is_resolved_and_flags_with_others_follow(staff_actor, pair):
    keep, other = pair
    third = make(staff_actor, name="Third", email="third@example.com")
    PossibleDuplicate.objects.create(contact=other, other=third, reason="r", source=Source.MANUAL)
    services.merge_contacts(keep=keep, other=other, actor=staff_actor, source=Source.MANUAL)
    assert list(PossibleDuplicate.objects.values_list("contact_id", "other_id", "status")) == [(keep.pk, third.pk, "open")]


def test_the_merge_is_announced_as_contact_merged(staff_actor, pair, django_capture_on_commit_callbacks):
    keep, other = pair
    WebhookEndpoint.objects.create(url="https://hooks.example.com/crm", events=["contact.merged"], secret="s")
    with django_capture_on_commit_callbacks():
        services.merge_contacts(keep=keep, other=other, actor=staff_actor, source=Source.MANUAL)
    delivery = WebhookDelivery.objects.get(event="contact.merged")
    assert delivery.payload["contact"]["id"] == keep.pk
    assert delivery.payload["contact"]["email"] == "maria@example.com"
    assert delivery.payload["merged_contact_id"] == other.pk
    assert delivery.payload["changes"]["company"] == [None, "Acme"]


def test_a_contact_cannot_be_merged_into_itself(staff_actor, pair):
    keep, _other = pair
    with pytest.raises(InputRejected) as refused:
        services.merge_contacts(keep=keep, other=keep, actor=staff_actor, source=Source.MANUAL)
    assert refused.value.errors[0].field == "other"
    assert Contact.objects.filter(pk=keep.pk).exists()


def test_a_merge_that_fails_leaves_both_contacts_as_they_were(staff_actor, pair, monkeypatch):
    keep, other = pair
    services.add_note(contact=other, body="Keep me", actor=staff_actor, source=Source.MANUAL)

    def boom(**kwargs):
        raise RuntimeError("webhook outbox down")

    monkeypatch.setattr(services, "emit_event", boom)
    with pytest.raises(RuntimeError):
        services.merge_contacts(keep=keep, other=other, actor=staff_actor, source=Source.MANUAL)
    assert Contact.objects.filter(pk=other.pk).exists()
    assert Note.objects.get().contact_id == other.pk
    keep.refresh_from_db()
    assert keep.email == ""


def test_dismissing_a_flag_records_it(staff_actor, pair):
    keep, _other = pair
    flag = PossibleDuplicate.objects.get()
    assert services.dismiss_possible_duplicate(flag=flag, actor=staff_actor, source=Source.MANUAL) is True
    assert services.dismiss_possible_duplicate(flag=flag, actor=staff_actor, source=Source.MANUAL) is False
    flag.refresh_from_db()
    assert flag.status == "dismissed"
    assert HistoryEntry.objects.filter(contact=flag.contact, summary__startswith="Marked as not a duplicate").count() == 1


def test_system_actor_is_fine_too(pair):
    keep, other = pair
    services.merge_contacts(keep=keep, other=other, actor=Actor.for_system("cleanup"), source=Source.MANUAL)
    assert Contact.objects.count() == 1


# --- the web UI ---------------------------------------------------------------------------------


def test_the_contact_page_offers_to_review_a_flagged_duplicate(client, staff_user, staff_actor, pair):
    keep, other = pair
    client.force_login(staff_user)
    page = client.get(f"/contacts/{keep.pk}/").content.decode()
    assert 'data-testid="possible-duplicates"' in page
    assert f"/contacts/{keep.pk}/merge/?other={other.pk}" in page


def test_the_merge_page_shows_what_moves_and_merges_on_confirm(client, staff_user, staff_actor, pair):
    keep, other = pair
    services.add_note(contact=other, body="Asked for a quote", actor=staff_actor, source=Source.MANUAL)
    client.force_login(staff_user)
    response = client.get(f"/contacts/{keep.pk}/merge/", {"other": "maria@example.com"})
    assert response.status_code == 200
    page = response.content.decode()
    assert "Acme" in page and 'class="merge-taken"' in page and "1 note" in page and "1 tag," in page
    assert "history" not in page.split('data-testid="merge-moves"')[1].split("</p>")[0]
    # An international number typed without its "+" finds the other contact too.
    assert client.get(f"/contacts/{keep.pk}/merge/", {"other": "15615550192"}).status_code == 400  # that is keep itself
    assert f"/contacts/{other.pk}/merge/?other={keep.pk}" in page  # keep the other one instead
    response = client.post(f"/contacts/{keep.pk}/merge/", {"other": other.pk})
    assert response.status_code == 302 and response["Location"] == f"/contacts/{keep.pk}/"
    assert not Contact.objects.filter(pk=other.pk).exists()
    assert Note.objects.get().contact == keep
    page = client.get(response["Location"]).content.decode()
    assert f"Merged contact #{other.pk} into Maria Silva: moved" in page
    assert 'data-testid="possible-duplicates"' not in page


@pytest.mark.parametrize("asked", ["", "nobody@example.com", "999999"])
def test_the_merge_page_asks_for_the_other_contact(client, staff_user, staff_actor, pair, asked):
    keep, other = pair
    client.force_login(staff_user)
    response = client.get(f"/contacts/{keep.pk}/merge/", {"other": asked} if asked else {})
    page = response.content.decode()
    assert 'name="other"' in page and 'data-testid="merge-candidates"' in page
    if asked:
        assert response.status_code == 400 and "No contact you can see" in page
    else:
        assert response.status_code == 200
    assert Contact.objects.filter(pk=other.pk).exists()


def test_a_contact_is_not_merged_into_itself_from_the_page(client, staff_user, staff_actor, pair):
    keep, _other = pair
    client.force_login(staff_user)
    response = client.get(f"/contacts/{keep.pk}/merge/", {"other": str(keep.pk)})
    assert response.status_code == 400 and "That is this contact" in response.content.decode()
    response = client.post(f"/contacts/{keep.pk}/merge/", {"other": keep.pk}, follow=True)
    assert "cannot be merged into itself" in response.content.decode()
    assert Contact.objects.filter(pk=keep.pk).exists()


def test_merging_needs_both_contacts_to_be_visible(client, settings, staff_actor, pair):
    settings.CRM_SALES_SEE_OWN_ONLY = True
    keep, other = pair
    seller = UserFactory(username="seller", is_staff=True)
    services.assign_owner(contact=keep, owner=seller, actor=staff_actor, source=Source.MANUAL)
    client.force_login(seller)
    assert client.get(f"/contacts/{keep.pk}/merge/", {"other": str(other.pk)}).status_code == 400
    assert client.post(f"/contacts/{keep.pk}/merge/", {"other": other.pk}).status_code == 404
    assert client.post(f"/contacts/{other.pk}/merge/", {"other": keep.pk}).status_code == 404
    assert Contact.objects.count() == 2
    assert 'data-testid="possible-duplicates"' not in client.get(f"/contacts/{keep.pk}/").content.decode()


@pytest.mark.parametrize("bad", ["", "abc", "99999999999999999999999"])
def test_a_posted_id_that_is_no_id_is_400(client, staff_user, pair, bad):
    keep, _other = pair
    client.force_login(staff_user)
    assert client.post(f"/contacts/{keep.pk}/merge/", {"other": bad}).status_code == 400


def test_not_a_duplicate_dismisses_the_flag(client, staff_user, pair):
    keep, other = pair
    flag = PossibleDuplicate.objects.get()
    client.force_login(staff_user)
    response = client.post(f"/contacts/{keep.pk}/duplicates/{flag.pk}/dismiss/")
    assert response.status_code == 302
    flag.refresh_from_db()
    assert flag.status == "dismissed"
    assert 'data-testid="possible-duplicates"' not in client.get(f"/contacts/{keep.pk}/").content.decode()
    assert client.get(f"/contacts/{keep.pk}/duplicates/{flag.pk}/dismiss/").status_code == 405


# --- Django admin -------------------------------------------------------------------------------


def test_admin_merges_flagged_pairs(admin_client, pair):
    keep, other = pair
    flag = PossibleDuplicate.objects.get()
    asked = admin_client.post("/admin/contacts/possibleduplicate/", {
        "action": "merge_into_contact", "_selected_action": [flag.pk],
    })
    assert asked.status_code == 200 and "Yes, merge 1 pair" in asked.content.decode()
    assert Contact.objects.count() == 2  # nothing merged before the confirmation
    response = admin_client.post("/admin/contacts/possibleduplicate/", {
        "action": "merge_into_contact", "_selected_action": [flag.pk], "confirm": "yes",
    }, follow=True)
    assert "Merged 1 pair(s)." in response.content.decode()
    assert list(Contact.objects.values_list("pk", flat=True)) == [keep.pk]
    keep.refresh_from_db()
    assert keep.email == "maria@example.com"
    assert HistoryEntry.objects.filter(contact=keep, action="merged", actor_user__username="admin").exists()


def test_admin_merge_needs_the_right_to_delete_contacts(client, pair):
    from django.contrib.auth.models import Permission

    clerk = UserFactory(username="clerk", is_staff=True)
    clerk.user_permissions.add(*Permission.objects.filter(
        codename__in=["view_possibleduplicate", "change_possibleduplicate", "change_contact"]))
    client.force_login(clerk)
    flag = PossibleDuplicate.objects.get()
    client.post("/admin/contacts/possibleduplicate/", {"action": "merge_into_contact", "_selected_action": [flag.pk],
                                                        "confirm": "yes"})
    assert Contact.objects.count() == 2


def test_a_merged_contacts_own_phone_and_email_stay_findable_in_history(staff_actor):
    one = make(staff_actor, name="Carl One", phone="+1 305 555 7111", email="carl.one@example.com")
    two = make(staff_actor, name="Carl Two", phone="+1 305 555 7222", email="carl.two@example.com")
    services.merge_contacts(keep=one, other=two, actor=staff_actor, source=Source.MANUAL)
    entry = HistoryEntry.objects.get(contact=one, action="merged")
    assert "(305) 555-7222" in entry.changes["merged_contact"][1] and "carl.two@example.com" in entry.changes["merged_contact"][1]


def test_a_merge_that_takes_a_birthday_is_sent_as_json(staff_actor, django_capture_on_commit_callbacks):
    import datetime as dt

    keep = make(staff_actor, name="Gus", email="gus1@example.com")
    other = make(staff_actor, name="Gus", phone="+1 646 555 3587 ext. 77", birthday="1980-01-31")
    WebhookEndpoint.objects.create(url="https://hooks.example.com/crm", events=["contact.merged"], secret="s")
    with django_capture_on_commit_callbacks():
        services.merge_contacts(keep=keep, other=other, actor=staff_actor, source=Source.MANUAL)
    keep.refresh_from_db()
    assert keep.birthday == dt.date(1980, 1, 31) and keep.phone_extension == "77"
    assert WebhookDelivery.objects.get(event="contact.merged").payload["changes"]["birthday"] == [None, "1980-01-31"]


def test_a_pair_marked_not_a_duplicate_is_not_flagged_again(staff_actor, pair):
    keep, other = pair
    services.dismiss_possible_duplicate(flag=PossibleDuplicate.objects.get(), actor=staff_actor, source=Source.MANUAL)
    again = services.upsert_contact(data={"phone": "(561) 555-0192", "email": "maria@example.com"}, actor=staff_actor,
                                    source=Source.API)
    assert again.possible_duplicates == []
    assert not PossibleDuplicate.objects.filter(status="open").exists()


def test_an_agent_write_that_loses_the_race_with_a_merge_is_a_json_404(pair, monkeypatch):
    """On PostgreSQL the note's foreign key is checked at commit, after the merge deleted its contact."""
    from django.db import IntegrityError

    from tests.api.factories import AgentClient, make_agent

    _keep, other = pair
    _agent, token = make_agent("racer", scopes=["contacts:read", "notes:write"])

    def too_late(**kwargs):
        raise IntegrityError('insert or update on table "contacts_note" violates foreign key constraint '
                             '"contacts_note_contact_id_13551131_fk_contacts_contact_id"')

    monkeypatch.setattr(services, "add_note", too_late)
    response = AgentClient(token).post(f"contacts/{other.pk}/notes", {"body": "hello"})
    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] == "not_found"


def test_the_merge_page_finds_an_international_number_typed_without_its_plus(client, staff_user, staff_actor):
    keep = make(staff_actor, name="Here", email="here@example.com")
    other = make(staff_actor, name="There", phone="+44 20 7946 0958")
    client.force_login(staff_user)
    response = client.get(f"/contacts/{keep.pk}/merge/", {"other": "442079460958"})
    assert response.status_code == 200 and response.context["other"] == other


def test_admin_decides_a_flag_only_through_its_actions(admin_client, pair):
    flag = PossibleDuplicate.objects.get()
    page = admin_client.get("/admin/contacts/possibleduplicate/").content.decode()
    assert 'name="form-0-status"' not in page
    admin_client.post(f"/admin/contacts/possibleduplicate/{flag.pk}/change/", {"status": "dismissed"})
    flag.refresh_from_db()
    assert flag.status == "open"
    admin_client.post("/admin/contacts/possibleduplicate/", {"action": "dismiss", "_selected_action": [flag.pk]})
    flag.refresh_from_db()
    assert flag.status == "dismissed"
    assert HistoryEntry.objects.filter(summary__startswith="Marked as not a duplicate").exists()


def test_a_merged_id_answers_where_the_contact_lives_on(staff_actor, pair):
    from tests.api.factories import AgentClient, make_agent

    keep, other = pair
    services.merge_contacts(keep=keep, other=other, actor=staff_actor, source=Source.MANUAL)
    _agent, token = make_agent("reader", scopes=["contacts:read", "notes:write"])
    api = AgentClient(token)
    for response in (api.get(f"contacts/{other.pk}"), api.post(f"contacts/{other.pk}/notes", {"body": "hi"})):
        assert response.status_code == 404
        error = response.json()["errors"][0]
        assert (error["code"], error["merged_into"]) == ("not_found", keep.pk)
        assert f"merged into contact #{keep.pk}" in error["message"]
    assert not Note.objects.exists()
    never = api.get("contacts/987654").json()["errors"][0]
    assert never["code"] == "not_found" and "merged_into" not in never


def test_a_pointer_follows_a_later_merge_of_the_kept_contact(staff_actor, pair):
    from tests.api.factories import AgentClient, make_agent

    keep, other = pair
    services.merge_contacts(keep=keep, other=other, actor=staff_actor, source=Source.MANUAL)
    third = make(staff_actor, name="Maria S.", email="m.silva@example.org")
    services.merge_contacts(keep=third, other=keep, actor=staff_actor, source=Source.MANUAL)
    _agent, token = make_agent("reader", scopes=["contacts:read"])
    for gone in (other.pk, keep.pk):
        assert AgentClient(token).get(f"contacts/{gone}").json()["errors"][0]["merged_into"] == third.pk
    # Erasing the contact that lives on leaves no pointer at nothing.
    Contact.objects.filter(pk=third.pk).delete()
    assert AgentClient(token).get(f"contacts/{other.pk}").json()["errors"][0].get("merged_into") is None


def test_an_old_link_to_a_merged_contact_leads_to_the_kept_one(client, staff_user, staff_actor, pair, settings):
    keep, other = pair
    services.merge_contacts(keep=keep, other=other, actor=staff_actor, source=Source.MANUAL)
    client.force_login(staff_user)
    response = client.get(f"/contacts/{other.pk}/", follow=True)
    assert response.redirect_chain == [(f"/contacts/{keep.pk}/", 302)]
    assert f"Contact #{other.pk} was merged into this one." in response.content.decode()
    # Not for someone who may not see the contact it lives on.
    settings.CRM_SALES_SEE_OWN_ONLY = True
    client.force_login(UserFactory(username="seller", is_staff=True))
    assert client.get(f"/contacts/{other.pk}/").status_code == 404


def test_linking_a_conversation_to_a_merged_id_names_the_kept_contact(staff_actor, pair, agent):
    from conversations import services as conversation_services

    keep, other = pair
    services.merge_contacts(keep=keep, other=other, actor=staff_actor, source=Source.MANUAL)
    with pytest.raises(InputRejected) as refused:
        conversation_services.start_conversation(actor=Actor.for_agent(agent), contact_id=other.pk)
    assert refused.value.errors[0].field == "contact_id"
    assert f"merged into contact #{keep.pk}" in refused.value.errors[0].message


def test_merges_made_before_pointers_existed_get_them_from_history(staff_actor, pair):
    import importlib

    from django.apps import apps

    from contacts.models import MergedContact

    keep, other = pair
    services.merge_contacts(keep=keep, other=other, actor=staff_actor, source=Source.MANUAL)
    MergedContact.objects.all().delete()
    migration = importlib.import_module("contacts.migrations.0018_merged_contact_ids")
    migration.pointers_from_history(apps, None)
    assert list(MergedContact.objects.values_list("merged_id", "contact_id")) == [(other.pk, keep.pk)]

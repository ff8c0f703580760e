"""Automations and webhooks, eighth outside-in round."""

import pytest
from django.urls import reverse

from automations.models import Rule
from tests.automations.factories import RuleFactory, TeamFactory, TeamMemberFactory

pytestmark = pytest.mark.django_db


def _changelist_post(rules, changes):
    data = {"form-TOTAL_FORMS": str(len(rules)), "form-INITIAL_FORMS": str(len(rules)), "_save": "Save"}
    for index, rule in enumerate(rules):
        values = {"position": rule.position, "active": rule.active, **changes.get(rule.pk, {})}
        data[f"form-{index}-id"] = str(rule.pk)
        data[f"form-{index}-position"] = str(values["position"])
        if values["active"]:
            data[f"form-{index}-active"] = "on"
    return data


def test_the_rule_list_saves_when_another_rule_became_invalid_and_shows_a_broken_rules_error(admin_client):
    team = TeamFactory(name="Solo")
    member = TeamMemberFactory(team=team)
    broken = RuleFactory(name="Round robin", active=True, position=1, assign_mode="round_robin", assign_team=team)
    other = RuleFactory(name="Other", active=True, position=2, task_title="Call", task_due_amount=1)
    member.delete()  # the team empties after the rule was saved
    rules = list(Rule.objects.order_by("position"))
    url = reverse("admin:automations_rule_changelist")

    moved = admin_client.post(url, _changelist_post(rules, {other.pk: {"position": 5}}))
    assert moved.status_code == 302
    assert Rule.objects.get(pk=other.pk).position == 5

    rules = list(Rule.objects.order_by("position"))
    touched = admin_client.post(url, _changelist_post(rules, {broken.pk: {"position": 9}}))
    assert touched.status_code == 200  # the form again, with the row's error, not a 500
    assert "Team Solo has no active members" in touched.content.decode()
    assert Rule.objects.get(pk=broken.pk).position == 1


@pytest.mark.parametrize("path", ["api", "import"])
def test_contact_created_is_queued_before_the_events_its_rules_cause(path, staff_user):
    from automations.models import WebhookDelivery, WebhookEndpoint
    from contacts import services
    from contacts.models import Source, Tag
    from crm_hub.actors import Actor
    from tests.contacts.test_import import do_import

    WebhookEndpoint.objects.create(
        url="https://hooks.example.com/all", secret="s",
        events=["contact.created", "contact.updated", "task.created"],
    )
    Tag.objects.create(name="Lead")
    RuleFactory(trigger="contact_created", task_title="Call them", task_due_amount=1, tags_to_add=[Tag.objects.get()])
    actor = Actor.for_user(staff_user)
    if path == "api":
        services.upsert_contact(data={"name": "Ana", "phone": "+1 561 555 0101"}, actor=actor, source=Source.API)
    else:
        do_import(actor, [["Ana", "+1 561 555 0101", "", "", ""]])
    events = list(WebhookDelivery.objects.order_by("id").values_list("event", flat=True))
    assert events[0] == "contact.created" and "task.created" in events[1:], events


def _bodies(receiver):
    import json

    return [json.loads(r["body"])["data"] for r in receiver.requests]


def test_one_contacts_events_reach_an_endpoint_in_the_order_they_happened(settings):
    from automations import webhooks
    from tests.automations.receiver import Receiver

    settings.CRM_WEBHOOK_QUEUE_ON_COMMIT = False
    # The receiver is slowest on each contact's first event: sent side by side, it was recorded last.
    with Receiver(delay_for=lambda body: (2 - body["data"]["n"]) * 0.2) as receiver:
        webhooks.create_endpoint(url=receiver.url(), events=["contact.created", "contact.updated"])
        for contact_id in (1, 2):
            webhooks.emit_event(event="contact.created", payload={"contact": {"id": contact_id}, "n": 0})
            for n in (1, 2):
                webhooks.emit_event(event="contact.updated", payload={"contact": {"id": contact_id}, "n": n})
        assert webhooks.deliver_due(batch_size=50) == 6
    for contact_id in (1, 2):
        assert [b["n"] for b in _bodies(receiver) if b["contact"]["id"] == contact_id] == [0, 1, 2]


def test_after_a_failed_event_the_contacts_later_ones_wait_for_its_retry(settings):
    from automations import webhooks
    from automations.models import WebhookDelivery
    from tests.automations.receiver import Receiver

    settings.CRM_WEBHOOK_QUEUE_ON_COMMIT = False
    # Contact 2's event arrives after contact 1's first one, which takes the scripted 500.
    with Receiver(script=[500], delay_for=lambda body: 0.3 if body["data"]["contact"]["id"] == 2 else 0) as receiver:
        webhooks.create_endpoint(url=receiver.url(), events=["contact.created", "contact.updated"])
        first = webhooks.emit_event(event="contact.created", payload={"contact": {"id": 1}, "n": 0})[0]
        later = webhooks.emit_event(event="contact.updated", payload={"contact": {"id": 1}, "n": 1})[0]
        other = webhooks.emit_event(event="contact.created", payload={"contact": {"id": 2}, "n": 0})[0]
        webhooks.deliver_due(batch_size=50)
    first.refresh_from_db(), later.refresh_from_db(), other.refresh_from_db()
    assert first.status == "pending" and first.attempts == 1
    assert later.status == "pending" and later.attempts == 0  # never sent ahead of the failed one
    assert later.next_attempt_at == first.next_attempt_at
    assert other.status == "delivered"  # another contact's event is not held up
    assert len(receiver.requests) == 2
    assert WebhookDelivery.objects.filter(status="pending").count() == 2


def test_the_stage_answer_shows_where_a_stage_changed_rule_moved_the_contact():
    from automations.models import Trigger
    from tests.api.factories import AgentClient, make_agent
    from tests.contacts.factories import StageFactory

    qualified = StageFactory(name="Qualified")
    proposal = StageFactory(pipeline=qualified.pipeline, name="Proposal")
    RuleFactory(trigger=Trigger.STAGE_CHANGED, stage=qualified, set_stage=proposal, stage_only_if_not_in_pipeline=False)
    _agent, token = make_agent("stager", scopes=["contacts:read", "contacts:write"])
    api = AgentClient(token)
    contact = api.post("contacts/upsert", {"name": "Ana", "phone": "+1 561 555 0150"}).json()["contact"]
    answer = api.put(f"contacts/{contact['id']}/stage", {"pipeline": qualified.pipeline.pk, "stage": "Qualified"})
    assert answer.status_code == 200
    assert (answer.json()["stage"], answer.json()["changed"]) == ("Proposal", True)


def test_round_robin_skips_team_members_who_cannot_sign_in_and_a_broken_rule_can_be_switched_off(admin_client):
    from contacts import services
    from contacts.models import Source
    from crm_hub.actors import Actor
    from tests.contacts.factories import UserFactory

    team = TeamFactory(name="Mixed")
    TeamMemberFactory(team=team, user=UserFactory(username="exrep", is_staff=False), position=0)
    staffer = UserFactory(username="rep1", is_staff=True)
    TeamMemberFactory(team=team, user=staffer, position=1)
    RuleFactory(trigger="contact_created", assign_mode="round_robin", assign_team=team, active=True)
    actor = Actor.for_system("test")
    owners = {services.upsert_contact(data={"name": f"Lead {n}", "phone": f"+1 561 555 02{n:02d}"}, actor=actor,
                                      source=Source.API).contact.owner_id for n in range(3)}
    assert owners == {staffer.pk}

    gone = UserFactory(username="rep2", is_staff=True)
    fixed = RuleFactory(name="Fixed", trigger="contact_created", assign_mode="fixed", assign_user=gone, active=True, position=7)
    gone.is_active = False
    gone.save()
    rules = list(Rule.objects.order_by("position"))
    response = admin_client.post(reverse("admin:automations_rule_changelist"),
                                 _changelist_post(rules, {fixed.pk: {"active": False}}))
    assert response.status_code == 302
    assert not Rule.objects.get(pk=fixed.pk).active


def test_a_task_made_without_an_assignee_does_not_go_to_an_owner_who_cannot_sign_in(staff_user):
    from contacts import services
    from contacts.models import Source
    from crm_hub.actors import Actor
    from tests.contacts.factories import UserFactory

    exrep = UserFactory(username="exrep2", is_staff=True)
    contact = services.upsert_contact(data={"name": "Ana", "phone": "+1 561 555 0299", "owner": exrep.pk},
                                      actor=Actor.for_user(staff_user), source=Source.MANUAL).contact
    exrep.is_staff = False
    exrep.save()
    contact.refresh_from_db()
    import datetime as dt

    from django.utils import timezone
    task = services.create_task(contact=contact, title="Call", due_at=timezone.now() + dt.timedelta(days=1),
                                actor=Actor.for_user(staff_user), source=Source.MANUAL)
    assert task.assignee_id == staff_user.pk

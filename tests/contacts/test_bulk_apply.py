"""Bulk actions are set-based: the same history, rules and webhooks as one contact, a fixed query count."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from contacts import services
from contacts.models import Contact, HistoryEntry, Source, StageChange
from crm_hub.actors import Actor
from tests.contacts.factories import TagFactory, UserFactory
from tests.contacts.ui_helpers import sales_pipeline

pytestmark = pytest.mark.django_db
SYSTEM = Actor.for_system("test")


def people(count, start=0):
    return [
        services.upsert_contact(data={"name": f"P{i}", "phone": f"+1561555{i:04d}"}, actor=SYSTEM, source=Source.API).contact
        for i in range(start, start + count)
    ]


def queries_for(action, value, contacts, actor):
    with CaptureQueriesContext(connection) as captured:
        services.bulk_apply(contacts=contacts, action=action, value=value, actor=actor, source=Source.MANUAL)
    return len(captured)


@pytest.mark.parametrize("action", ["assign_owner", "add_tag", "remove_tag", "move_stage"])
def test_bulk_action_query_count_does_not_grow_with_the_selection(action, staff_actor):
    TagFactory(name="lead")
    _pipeline, (_lead, qualified, won) = sales_pipeline()
    owner = UserFactory(username="closer")
    few, many = people(2), people(30, start=100)
    if action == "remove_tag":
        for contact in few + many:
            services.add_tags(contact=contact, tags=["lead"], actor=SYSTEM, source=Source.API)
    if action == "move_stage":
        for contact in few[:1] + many[:10]:  # some already in the pipeline, some not
            services.move_to_stage(contact=contact, pipeline="Sales", stage=qualified, actor=SYSTEM, source=Source.API)
    value = {"assign_owner": owner.pk, "add_tag": "lead", "remove_tag": "lead", "move_stage": won.pk}[action]
    assert queries_for(action, value, few, staff_actor) == queries_for(action, value, many, staff_actor)


def test_bulk_actions_record_history_and_change_only_what_differs(staff_actor):
    TagFactory(name="vip")
    _pipeline, (lead, _qualified, won) = sales_pipeline()
    owner = UserFactory(username="closer")
    a, b, c = people(3)
    services.move_to_stage(contact=a, pipeline="Sales", stage=lead, actor=SYSTEM, source=Source.API)
    services.move_to_stage(contact=b, pipeline="Sales", stage=won, actor=SYSTEM, source=Source.API)
    bulk = lambda action, value: services.bulk_apply(  # noqa: E731
        contacts=list(Contact.objects.filter(pk__in=[a.pk, b.pk, c.pk])), action=action, value=value,
        actor=staff_actor, source=Source.MANUAL,
    )
    assert bulk("move_stage", won.pk) == 2  # b is already there
    assert bulk("move_stage", won.pk) == 0
    moves = {m.contact_id: (m.from_stage and m.from_stage.name, m.to_stage.name) for m in StageChange.objects.filter(to_stage=won, contact__in=[a, c])}
    assert moves == {a.pk: ("Lead", "Won"), c.pk: (None, "Won")}
    assert a.history.filter(action="stage_changed").first().changes == {"stage.Sales": ["Lead", "Won"]}
    assert bulk("assign_owner", owner.pk) == 3 and bulk("assign_owner", owner.pk) == 0
    entry = a.history.filter(action="updated").first()
    assert entry.changes == {"owner": ["", "closer"]} and entry.actor_label == staff_actor.label
    assert bulk("add_tag", "VIP") == 3 and bulk("remove_tag", "vip") == 3 and bulk("remove_tag", "vip") == 0
    assert HistoryEntry.objects.filter(contact=c, action__in=["tag_added", "tag_removed"]).count() == 2


def test_bulk_tag_runs_tag_added_rules_per_contact(staff_actor):
    from automations.models import Trigger
    from tests.automations.factories import RuleFactory

    TagFactory(name="vip")
    closer = UserFactory(username="closer")
    RuleFactory(trigger=Trigger.TAG_ADDED, assign_mode="fixed", assign_user=closer)
    targets = people(3)
    services.bulk_apply(contacts=targets, action="add_tag", value="vip", actor=staff_actor, source=Source.MANUAL)
    assert set(Contact.objects.values_list("owner__username", flat=True)) == {"closer"}

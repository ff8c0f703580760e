"""Races need real transactions and real threads; PostgreSQL is where they matter (CI runs them)."""

import threading

import pytest
from django.db import connection, connections

from contacts import services
from contacts.models import Contact, Source
from crm_hub.actors import Actor

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def run_in_threads(count, target):
    barrier = threading.Barrier(count)
    results, errors = [], []

    def worker(index):
        try:
            barrier.wait()
            results.append(target(index))
        except Exception as exc:  # collected and asserted on below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results, errors


@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL")
def test_twenty_threads_upserting_same_new_phone_leave_one_contact():
    formats = ["(561) 555-0192", "561.555.0192", "+1 561 555 0192", "5615550192"]

    def call(index):
        return services.upsert_contact(
            data={"name": f"Marcus {index}", "phone": formats[index % len(formats)]},
            actor=Actor.for_system("race test"), source=Source.API,
        )

    results, errors = run_in_threads(20, call)
    assert errors == []
    assert Contact.objects.count() == 1
    only = Contact.objects.get()
    assert {r.contact.pk for r in results} == {only.pk}
    assert sum(r.created for r in results) == 1


@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL")
def test_parallel_intakes_adding_a_tag_and_a_stage_record_and_fire_once():
    from automations.models import RuleRun
    from contacts.models import HistoryEntry, StageChange, Task
    from tests.automations.factories import RuleFactory
    from tests.contacts.factories import StageFactory, TagFactory

    newsletter = TagFactory(name="newsletter")
    new = StageFactory(name="New lead")
    qualified = StageFactory(name="Qualified", pipeline=new.pipeline, position=1)
    RuleFactory(trigger="tag_added", tag=newsletter, task_title="Welcome", task_due_amount=1)
    RuleFactory(trigger="stage_changed", stage=qualified, task_title="Send proposal", task_due_amount=3)
    contact = services.upsert_contact(data={"name": "Ann", "phone": "+1 561 555 0100"}, actor=Actor.for_system("t"),
                                      source=Source.API).contact
    services.move_to_stage(contact=contact, pipeline=new.pipeline, stage=new, actor=Actor.for_system("t"), source=Source.API)

    def intake(index):
        return services.record_intake(
            contact={"phone": "561-555-0100"}, tags=["newsletter"], pipeline=new.pipeline.name, stage="Qualified",
            actor=Actor.for_system(f"bot {index}"), source=Source.CHAT,
        )

    _results, errors = run_in_threads(10, intake)
    assert errors == []
    assert HistoryEntry.objects.filter(contact=contact, action="tag_added").count() == 1
    assert StageChange.objects.filter(contact=contact, to_stage=qualified).count() == 1
    assert RuleRun.objects.filter(status="applied").count() == 2
    assert sorted(Task.objects.values_list("title", flat=True)) == ["Send proposal", "Welcome"]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL")
def test_parallel_bulk_actions_change_each_contact_once():
    from automations.models import RuleRun
    from contacts.models import HistoryEntry, StageChange
    from tests.automations.factories import RuleFactory
    from tests.contacts.factories import StageFactory, TagFactory

    vip = TagFactory(name="vip")
    qualified = StageFactory(name="Qualified")
    RuleFactory(trigger="tag_added", tag=vip, task_title="VIP call", task_due_amount=1)
    people = [
        services.upsert_contact(data={"name": f"P{i}"}, actor=Actor.for_system("t"), source=Source.API).contact
        for i in range(5)
    ]

    def bulk(index):
        action, value = ("add_tag", "vip") if index % 2 == 0 else ("move_stage", qualified.pk)
        return services.bulk_apply(contacts=list(Contact.objects.filter(pk__in=[p.pk for p in people])), action=action,
                                   value=value, actor=Actor.for_system(f"user {index}"), source=Source.MANUAL)

    results, errors = run_in_threads(10, bulk)
    assert errors == []
    assert sorted(results) == [0] * 8 + [5, 5]
    assert HistoryEntry.objects.filter(action="tag_added").count() == 5
    assert StageChange.objects.count() == 5
    assert RuleRun.objects.count() == 5

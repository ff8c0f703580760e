"""Round-robin fairness with real threads and real transactions on PostgreSQL."""

import threading
from collections import Counter

import pytest
from django.db import connection, connections

from automations.models import Rule, Team
from contacts import services
from contacts.models import Contact, Source
from crm_hub.actors import Actor
from tests.automations.factories import RuleFactory, TeamFactory, TeamMemberFactory
from tests.contacts.factories import UserFactory
from tests.contacts.test_concurrency import run_in_threads

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL"),
]


def test_hundred_contacts_from_ten_threads_share_a_team_of_three_evenly():
    team = TeamFactory(name="Sales")
    for position, name in enumerate(["ann", "ben", "cat"]):
        TeamMemberFactory(team=team, user=UserFactory(username=name), position=position)
    RuleFactory(assign_mode=Rule.AssignMode.ROUND_ROBIN, assign_team=team)
    barrier = threading.Barrier(10)
    errors = []

    def create_ten(thread):
        try:
            barrier.wait()
            for n in range(10):
                services.upsert_contact(
                    data={"name": f"Lead {thread}-{n}", "phone": f"+1415555{thread:02d}{n:02d}"},
                    actor=Actor.for_system("load"), source=Source.API,
                )
        except Exception as exc:  # asserted below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=create_ten, args=(t,)) for t in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)

    assert errors == []
    counts = Counter(Contact.objects.values_list("owner__username", flat=True))
    assert sum(counts.values()) == 100 and set(counts) == {"ann", "ben", "cat"}
    assert max(counts.values()) - min(counts.values()) <= 1
    assert Team.objects.get(pk=team.pk).turn == 100


def test_fewest_open_tasks_counts_tasks_given_out_by_parallel_writes():
    from contacts.models import Task
    from tests.contacts.factories import TagFactory

    customer = TagFactory(name="customer")
    first, second = UserFactory(username="rep1"), UserFactory(username="rep2")
    team = TeamFactory(name="B")
    TeamMemberFactory(team=team, user=first)
    TeamMemberFactory(team=team, user=second)
    RuleFactory(trigger="tag_added", tag=customer, assign_mode="fewest_open_tasks", assign_team=team,
                assign_only_if_unowned=False, task_title="Onboard", task_due_amount=1)
    people = [services.upsert_contact(data={"name": f"P{i}"}, actor=Actor.for_system("t"), source=Source.API).contact
              for i in range(10)]

    def tag(index):
        services.add_tags(contact=people[index], tags=["customer"], actor=Actor.for_system("t"), source=Source.API)

    _results, errors = run_in_threads(10, tag)
    assert errors == []
    counts = sorted(Task.objects.filter(title="Onboard").values_list("assignee__username", flat=True))
    assert counts.count("rep1") == counts.count("rep2") == 5

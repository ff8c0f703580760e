"""A follow-up task a rule creates is credited to the rule, on the task and in its history entry."""

import pytest
from django.urls import reverse

from automations.models import Rule
from contacts import services
from contacts.models import HistoryEntry, Source, Task
from crm_hub.actors import Actor
from tests.automations.factories import RuleFactory
from tests.contacts.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_task_made_by_a_rule_is_credited_to_the_rule_in_the_timeline(admin_client):
    ada = UserFactory(username="ada")
    rule = RuleFactory(name="VIP to Ada", assign_mode=Rule.AssignMode.FIXED, assign_user=ada,
                       task_title="Call the VIP", task_due_amount=1)
    contact = services.upsert_contact(data={"name": "Bea"}, actor=Actor.for_system("test"), source=Source.API).contact
    credit = f"automation rule {rule.pk}: VIP to Ada"

    assert Task.objects.get(contact=contact).actor_label == credit
    assert HistoryEntry.objects.get(contact=contact, action=HistoryEntry.Action.TASK_CREATED).actor_label == credit
    page = admin_client.get(reverse("contacts:detail", args=[contact.pk])).content.decode()
    task_card = page[page.index('data-kind="task"'):]
    assert f"by {credit}" in task_card[:600] and "by system" not in task_card[:600]

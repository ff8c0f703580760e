"""Forms and conversations fire their triggers and webhook events through the same automations."""

import pytest

from automations import webhooks
from automations.models import Rule, Trigger, WebhookDelivery
from contacts.models import Task
from conversations.services import end_conversation, get_or_create_conversation
from crm_hub.actors import Actor
from forms_app.services import submit_form
from tests.automations.factories import RuleFactory
from tests.contacts.factories import TagFactory
from tests.forms_app.factories import make_form

pytestmark = pytest.mark.django_db


def test_form_submission_runs_form_submitted_rules_and_queues_form_submitted_event(settings):
    settings.CRM_WEBHOOK_QUEUE_ON_COMMIT = False
    form = make_form()
    other = make_form(title="Other")
    tag = TagFactory(name="web-lead")
    RuleFactory(trigger=Trigger.FORM_SUBMITTED, form_id=form.pk, tags_to_add=[tag])
    webhooks.create_endpoint(url="http://127.0.0.1:9/hook", events=["form.submitted"])

    result = submit_form(form=form, data={"fname": "Ana", "femail": "ana@example.com"})
    assert list(result.contact.tags.values_list("name", flat=True)) == ["web-lead"]
    delivery = WebhookDelivery.objects.get(event="form.submitted")
    assert delivery.payload["submission"]["id"] == result.submission.pk
    assert delivery.payload["contact"]["email"] == "ana@example.com"
    # Answers are keyed by field id; the payload says what each one is.
    fields = {f["id"]: f for f in delivery.payload["submission"]["fields"]}
    assert set(delivery.payload["submission"]["answers"]) <= set(fields)
    assert fields["femail"]["label"] and fields["femail"]["maps_to"] == "contact.email"

    second = submit_form(form=other, data={"fname": "Bo", "femail": "bo@example.com"})
    assert not second.contact.tags.exists()  # the rule names the first form only


def test_ending_a_conversation_runs_conversation_ended_rules_and_queues_event(settings, agent):
    settings.CRM_WEBHOOK_QUEUE_ON_COMMIT = False
    RuleFactory(trigger=Trigger.CONVERSATION_ENDED, task_title="Read the transcript", task_due_amount=1,
                task_due_unit=Rule.DueUnit.HOURS)
    webhooks.create_endpoint(url="http://127.0.0.1:9/hook", events=["conversation.ended"])
    conversation, _ = get_or_create_conversation(agent=agent, external_id="chat-1")
    result = end_conversation(
        conversation=conversation, actor=Actor.for_agent(agent),
        intake={"contact": {"name": "Ana", "phone": "+15615550192"}, "note": "Asked for a quote"},
    )
    contact = result.intake.upsert.contact
    assert Task.objects.get(contact=contact).title == "Read the transcript"
    delivery = WebhookDelivery.objects.get(event="conversation.ended")
    assert delivery.payload["conversation"]["external_id"] == "chat-1"
    assert delivery.payload["contact"]["id"] == contact.pk


def test_unlinked_conversation_end_sends_event_but_runs_no_contact_rules(settings, agent):
    settings.CRM_WEBHOOK_QUEUE_ON_COMMIT = False
    webhooks.create_endpoint(url="http://127.0.0.1:9/hook", events=["conversation.ended"])
    conversation, _ = get_or_create_conversation(agent=agent, external_id="chat-2")
    end_conversation(conversation=conversation, actor=Actor.for_agent(agent))
    assert WebhookDelivery.objects.get().payload["contact"] is None

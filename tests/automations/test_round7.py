"""Automations and webhooks, seventh outside-in round."""

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone
from freezegun import freeze_time

from automations import webhooks
from automations.models import Rule, WebhookDelivery
from contacts import services
from contacts.models import Source
from crm_hub.actors import Actor

pytestmark = pytest.mark.django_db

SYSTEM = Actor.for_system("test")


def test_a_rule_saved_to_send_contact_created_does_not_send_it_twice(receiver, django_capture_on_commit_callbacks):
    endpoint = webhooks.create_endpoint(url=receiver.url(), events=["contact.created"])[0]
    Rule.objects.create(name="Old style", trigger="contact_created", webhook_event="contact.created")
    Rule.objects.create(name="Old style, one endpoint", trigger="contact_created", webhook_event="contact.created",
                        webhook_endpoint=endpoint)
    with django_capture_on_commit_callbacks(execute=True):
        services.upsert_contact(data={"name": "Once"}, actor=SYSTEM, source=Source.API)
    assert WebhookDelivery.objects.filter(event="contact.created").count() == 1


def test_a_delivered_event_has_no_next_attempt(receiver, django_capture_on_commit_callbacks):
    webhooks.create_endpoint(url=receiver.url(), events=["contact.created"])
    with django_capture_on_commit_callbacks(execute=True):
        services.upsert_contact(data={"name": "Ada"}, actor=SYSTEM, source=Source.API)
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "delivered" and delivery.next_attempt_at is None


def test_a_redelivered_old_event_is_retried_for_a_day_from_the_redelivery(receiver, django_capture_on_commit_callbacks):
    receiver.default = 500
    webhooks.create_endpoint(url=receiver.url(), events=["contact.created"])
    with freeze_time(timezone.now() - dt.timedelta(days=3)):
        with django_capture_on_commit_callbacks(execute=True):
            services.upsert_contact(data={"name": "Ada"}, actor=SYSTEM, source=Source.API)
    WebhookDelivery.objects.update(status="failed", next_attempt_at=None)
    with django_capture_on_commit_callbacks(execute=True):
        webhooks.redeliver(deliveries=list(WebhookDelivery.objects.all()))
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "pending" and delivery.next_attempt_at is not None  # failed again, will retry


def test_redelivering_to_a_disabled_endpoint_says_it_waits(admin_client, receiver, django_capture_on_commit_callbacks):
    endpoint = webhooks.create_endpoint(url=receiver.url(), events=["contact.created"])[0]
    with django_capture_on_commit_callbacks(execute=True):
        services.upsert_contact(data={"name": "Ada"}, actor=SYSTEM, source=Source.API)
    endpoint.active = False
    endpoint.save()
    response = admin_client.post(reverse("admin:automations_webhookdelivery_changelist"),
                                 {"action": "redeliver", "_selected_action": [WebhookDelivery.objects.get().pk]},
                                 follow=True)
    said = " ".join(str(m) for m in response.context["messages"])
    assert "go to disabled endpoints" in said and "queued for redelivery" not in said

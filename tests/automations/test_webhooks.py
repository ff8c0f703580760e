"""Outbox, signing, retries and endpoint health, driven inline (the periodic task is called directly)."""

import datetime as dt
import json
import time
from unittest import mock

import pytest
from django.db import transaction
from django.utils import timezone
from freezegun import freeze_time
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from automations import tasks, webhooks
from automations.models import DeliveryAttempt, WebhookDelivery, WebhookEndpoint
from contacts import services
from contacts.models import Source
from crm_hub.actors import Actor
from tests.automations.receiver import Receiver
from tests.contacts.factories import StageFactory

pytestmark = pytest.mark.django_db

SYSTEM = Actor.for_system("test")
ALL_EVENTS = [
    "contact.created", "contact.updated", "note.created", "task.created", "task.completed", "stage.changed",
]


def verify(secret, request):
    return Webhook(secret).verify(request["body"], request["headers"])


def refused(secret, body, headers):
    try:
        Webhook(secret).verify(body, headers)
    except (WebhookVerificationError, ValueError):
        return True
    return False


def test_committed_change_is_delivered_signed_per_standard_webhooks(receiver, django_capture_on_commit_callbacks):
    endpoint, secret = webhooks.create_endpoint(url=receiver.url(), events=["contact.created"])
    assert secret.startswith("whsec_") and WebhookEndpoint.objects.get().secret == secret

    with django_capture_on_commit_callbacks(execute=True):
        contact = services.upsert_contact(
            data={"name": "Ada", "email": "ada@example.com"}, actor=SYSTEM, source=Source.API
        ).contact

    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    message = verify(secret, request)
    assert message["type"] == "contact.created"
    assert message["data"]["contact"]["id"] == contact.pk
    assert message["data"]["contact"]["email"] == "ada@example.com"
    delivery = WebhookDelivery.objects.get()
    assert request["headers"]["webhook-id"] == delivery.msg_id
    assert delivery.status == "delivered" and delivery.attempts == 1
    attempt = DeliveryAttempt.objects.get()
    assert attempt.status_code == 200 and attempt.success and '"ok": true' in attempt.response_snippet

    tampered = request["body"].replace(b"ada@example.com", b"eve@example.com")
    assert refused(secret, tampered, request["headers"])
    stale = dict(request["headers"], **{"webhook-timestamp": str(int(request["headers"]["webhook-timestamp"]) - 600)})
    assert refused(secret, request["body"], stale)
    assert refused(webhooks.new_secret(), request["body"], request["headers"])


def test_rolled_back_change_sends_nothing(receiver, django_capture_on_commit_callbacks):
    webhooks.create_endpoint(url=receiver.url(), events=ALL_EVENTS)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(RuntimeError), transaction.atomic():
            services.upsert_contact(data={"name": "Ghost", "phone": "+14155550100"}, actor=SYSTEM, source=Source.API)
            raise RuntimeError("the caller changed its mind")
    tasks.deliver_due_webhooks()

    assert callbacks == []
    assert not WebhookDelivery.objects.exists()
    assert receiver.requests == []


def test_500_three_times_then_200_delivers_with_four_attempts_logged(fast_retries, django_capture_on_commit_callbacks):
    with Receiver(script=[500, 500, 500]) as flaky:
        endpoint, secret = webhooks.create_endpoint(url=flaky.url(), events=["note.created"])
        contact = services.upsert_contact(data={"name": "Ada"}, actor=SYSTEM, source=Source.API).contact
        with django_capture_on_commit_callbacks(execute=True):
            services.add_note(contact=contact, body="<p>Hello</p>", actor=SYSTEM, source=Source.API)
        delivery = WebhookDelivery.objects.get()
        assert delivery.status == "pending" and delivery.attempts == 1

        for _ in range(3):  # what celery beat does every CRM_WEBHOOK_POLL_SECONDS
            tasks.deliver_due_webhooks()

    delivery.refresh_from_db()
    assert delivery.status == "delivered" and delivery.attempts == 4
    codes = list(delivery.attempt_log.order_by("attempted_at", "id").values_list("status_code", flat=True))
    assert codes == [500, 500, 500, 200]
    assert len(flaky.requests) == 4
    assert {r["headers"]["webhook-id"] for r in flaky.requests} == {delivery.msg_id}
    assert flaky.seen_ids == [delivery.msg_id]
    assert all(verify(secret, r)["type"] == "note.created" for r in flaky.requests)
    endpoint.refresh_from_db()
    assert endpoint.active and endpoint.failing_since is None


def test_failed_delivery_waits_for_its_backoff(receiver, django_capture_on_commit_callbacks):
    receiver.default = 503
    webhooks.create_endpoint(url=receiver.url(), events=["contact.created"])
    with django_capture_on_commit_callbacks(execute=True):
        services.upsert_contact(data={"name": "Ada"}, actor=SYSTEM, source=Source.API)
    delivery = WebhookDelivery.objects.get()
    assert delivery.next_attempt_at >= timezone.now() + dt.timedelta(seconds=14)  # base 30 s, half of it fixed

    tasks.deliver_due_webhooks()

    assert len(receiver.requests) == 1


def test_backoff_grows_with_jitter(settings):
    settings.CRM_WEBHOOK_RETRY_BASE_SECONDS = 30
    settings.CRM_WEBHOOK_RETRY_MAX_SECONDS = 3 * 3600
    first = [webhooks.backoff_seconds(1) for _ in range(50)]
    assert all(15 <= d <= 30 for d in first) and len(set(first)) > 1
    assert all(120 <= webhooks.backoff_seconds(4) <= 240 for _ in range(20))
    assert all(5400 <= webhooks.backoff_seconds(30) <= 10800 for _ in range(20))


def test_failing_endpoint_is_retried_for_a_day_then_disabled(receiver):
    receiver.default = 500
    start = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
    with freeze_time(start) as clock:
        endpoint, _ = webhooks.create_endpoint(url=receiver.url(), events=["contact.created"])
        services.upsert_contact(data={"name": "Ada"}, actor=SYSTEM, source=Source.API)
        delivery = WebhookDelivery.objects.get()
        for _ in range(60):
            webhooks.deliver_due()
            endpoint.refresh_from_db()
            delivery.refresh_from_db()
            if not endpoint.active:
                break
            clock.move_to(delivery.next_attempt_at)

    times = list(delivery.attempt_log.order_by("attempted_at").values_list("attempted_at", flat=True))
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
    assert times[-1] - times[0] >= dt.timedelta(days=1)
    assert gaps[0] < 60 and max(gaps) > 3600  # exponential, not fixed
    assert len(times) < 40
    assert not endpoint.active and "failed since" in endpoint.disabled_reason
    # Given up (retry window over) or left pending by the disabled endpoint; redeliver sends it either way.
    assert delivery.status in ("pending", "failed") and delivery.attempts == len(times)


def test_410_disables_the_endpoint_at_once(django_capture_on_commit_callbacks):
    with Receiver(default=410) as gone:
        endpoint, _ = webhooks.create_endpoint(url=gone.url(), events=["contact.created", "contact.updated"])
        with django_capture_on_commit_callbacks(execute=True):
            contact = services.upsert_contact(data={"name": "Ada"}, actor=SYSTEM, source=Source.API).contact
        with django_capture_on_commit_callbacks(execute=True):
            services.update_contact(contact=contact, data={"company": "Acme"}, actor=SYSTEM, source=Source.API)

    endpoint.refresh_from_db()
    assert not endpoint.active and "410" in endpoint.disabled_reason
    assert WebhookDelivery.objects.get(event="contact.created").status == "failed"
    assert len(gone.requests) == 1  # nothing more is sent to a disabled endpoint


def test_rotation_signs_with_both_secrets_during_the_window(receiver, django_capture_on_commit_callbacks):
    endpoint, old = webhooks.create_endpoint(url=receiver.url(), events=["contact.created"])
    new = webhooks.rotate_secret(endpoint=endpoint, window_seconds=3600)
    assert new != old

    with django_capture_on_commit_callbacks(execute=True):
        services.upsert_contact(data={"name": "Ada"}, actor=SYSTEM, source=Source.API)
    request = receiver.requests[-1]
    assert len(request["headers"]["webhook-signature"].split(" ")) == 2
    assert verify(old, request) and verify(new, request)

    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(previous_secret_expires_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        services.upsert_contact(data={"name": "Bea"}, actor=SYSTEM, source=Source.API)
    request = receiver.requests[-1]
    assert len(receiver.requests) == 2, receiver.requests
    assert len(request["headers"]["webhook-signature"].split(" ")) == 1, request["headers"]
    assert verify(new, request) and refused(old, request["body"], request["headers"])


def test_redeliver_sends_the_same_event_again_with_the_same_id(receiver, django_capture_on_commit_callbacks):
    webhooks.create_endpoint(url=receiver.url(), events=["contact.created"])
    with django_capture_on_commit_callbacks(execute=True):
        services.upsert_contact(data={"name": "Ada"}, actor=SYSTEM, source=Source.API)
    delivery = WebhookDelivery.objects.get()

    with django_capture_on_commit_callbacks(execute=True):
        assert webhooks.redeliver(deliveries=[delivery]) == 1

    assert [r["headers"]["webhook-id"] for r in receiver.requests] == [delivery.msg_id] * 2
    assert receiver.requests[0]["body"] == receiver.requests[1]["body"]
    assert receiver.duplicates == 1
    delivery.refresh_from_db()
    assert delivery.attempts == 2 and delivery.status == "delivered"


def test_services_emit_every_contact_event():
    webhooks.create_endpoint(url="http://127.0.0.1:9/", events=ALL_EVENTS)
    new = StageFactory(name="New")
    contact = services.upsert_contact(data={"name": "Ada", "phone": "+14155550100"}, actor=SYSTEM, source=Source.API).contact
    services.upsert_contact(data={"phone": "415 555 0100", "company": "Acme"}, actor=SYSTEM, source=Source.API)
    services.update_contact(contact=contact, data={"city": "Lisbon"}, actor=SYSTEM, source=Source.MANUAL)
    services.add_note(contact=contact, body="hi", actor=SYSTEM, source=Source.API)
    task = services.create_task(contact=contact, title="Call", due_at=timezone.now(), actor=SYSTEM, source=Source.API)
    services.complete_task(task=task, actor=SYSTEM, source=Source.API)
    services.move_to_stage(contact=contact, pipeline=new.pipeline, stage=new, actor=SYSTEM, source=Source.API)

    events = list(WebhookDelivery.objects.order_by("id").values_list("event", flat=True))
    assert events == [
        "contact.created", "contact.updated", "contact.updated", "note.created", "task.created", "task.completed", "stage.changed",
    ]
    updated = WebhookDelivery.objects.filter(event="contact.updated").order_by("id").first().payload
    assert updated["changes"] == {"company": ["", "Acme"]}
    assert updated["contact"]["company"] == "Acme" and updated["contact"]["phone"] == "+14155550100"
    stage = WebhookDelivery.objects.get(event="stage.changed").payload
    assert stage["to_stage"] == {"id": new.pk, "name": "New"} and stage["from_stage"] is None
    assert json.dumps(WebhookDelivery.objects.get(event="task.completed").payload)


def test_events_go_only_to_subscribed_active_endpoints():
    subscribed, _ = webhooks.create_endpoint(url="http://127.0.0.1:9/a", events=["note.created"])
    webhooks.create_endpoint(url="http://127.0.0.1:9/b", events=["task.created"])
    webhooks.create_endpoint(url="http://127.0.0.1:9/c", events=["note.created"], active=False)
    contact = services.upsert_contact(data={"name": "Ada"}, actor=SYSTEM, source=Source.API).contact
    services.add_note(contact=contact, body="hi", actor=SYSTEM, source=Source.API)
    assert list(WebhookDelivery.objects.values_list("endpoint", flat=True)) == [subscribed.pk]


def test_one_commit_queues_few_batched_tasks_and_one_run_delivers_them_all(
    receiver, settings, django_capture_on_commit_callbacks
):
    settings.CRM_WEBHOOK_BATCH_SIZE = 25
    settings.CRM_WEBHOOK_PARALLEL_TASKS = 2
    webhooks.create_endpoint(url=receiver.url(), events=["contact.created"])
    with mock.patch.object(tasks.deliver_due_webhooks, "delay") as delay:
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            for i in range(120):
                webhooks.emit_event(event="contact.created", payload={"n": i})
    assert len(callbacks) == 1
    assert delay.call_count == 2

    assert webhooks.deliver_due() == 120
    assert len(receiver.seen_ids) == 120 and receiver.duplicates == 0
    assert WebhookDelivery.objects.filter(status="delivered").count() == 120


def test_deliver_one_is_idempotent(receiver, settings):
    settings.CRM_WEBHOOK_QUEUE_ON_COMMIT = False
    webhooks.create_endpoint(url=receiver.url(), events=["contact.created"])
    delivery = webhooks.emit_event(event="contact.created", payload={"x": 1})[0]

    assert tasks.deliver_webhook(delivery.pk) is True
    assert tasks.deliver_webhook(delivery.pk) is False
    assert len(receiver.requests) == 1


def test_prune_drops_old_finished_rows_only(settings):
    settings.CRM_WEBHOOK_QUEUE_ON_COMMIT = False
    endpoint, _ = webhooks.create_endpoint(url="http://127.0.0.1:9/", events=["contact.created"])
    old_done, old_pending, new_done = (
        webhooks.emit_event(event="contact.created", payload={"n": n})[0] for n in range(3)
    )
    long_ago = timezone.now() - dt.timedelta(days=40)
    WebhookDelivery.objects.filter(pk=old_done.pk).update(status="delivered", created_at=long_ago)
    WebhookDelivery.objects.filter(pk=old_pending.pk).update(created_at=long_ago)
    WebhookDelivery.objects.filter(pk=new_done.pk).update(status="delivered")

    assert tasks.prune_webhook_log() == 1
    assert set(WebhookDelivery.objects.values_list("pk", flat=True)) == {old_pending.pk, new_done.pk}
    assert endpoint.pk


def test_a_batch_is_sent_on_several_threads_so_slow_receivers_do_not_stall_it(settings):
    settings.CRM_WEBHOOK_QUEUE_ON_COMMIT = False
    settings.CRM_WEBHOOK_SEND_THREADS = 8
    with Receiver(delay=0.3) as slow:
        webhooks.create_endpoint(url=slow.url(), events=["contact.created"])
        for n in range(16):
            webhooks.emit_event(event="contact.created", payload={"n": n})
        started = time.monotonic()
        assert webhooks.deliver_due(batch_size=16) == 16
        elapsed = time.monotonic() - started
    assert len(slow.seen_ids) == 16
    assert elapsed < 16 * 0.3 / 2  # serial sending would take 4.8 s


def test_a_receiver_trickling_its_answer_does_not_hold_the_attempt_past_its_timeout(settings):
    # requests' timeout bounds each read, not the body: one byte every 0.3 s kept the worker for the
    # whole answer, past its lease, and the event went out again while the first POST was open.
    settings.CRM_WEBHOOK_QUEUE_ON_COMMIT = False
    settings.CRM_WEBHOOK_TIMEOUT_SECONDS = 1
    with Receiver(trickle=0.3) as slow:
        webhooks.create_endpoint(url=slow.url(), events=["contact.created"])
        delivery = webhooks.emit_event(event="contact.created", payload={"x": 1})[0]
        started = time.monotonic()
        assert tasks.deliver_webhook(delivery.pk) is True
        assert time.monotonic() - started < 3  # the whole answer would take about 4 s
    delivery.refresh_from_db()
    assert delivery.status == "delivered" and delivery.attempts == 1
    attempt = DeliveryAttempt.objects.get()
    assert attempt.status_code == 200 and attempt.response_snippet.startswith('{"ok"')

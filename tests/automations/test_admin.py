"""Admin: rule failures are visible, rules can be tried, endpoints show their secret once, the log and redeliver."""

import pytest
from django.urls import reverse
from django.utils import timezone

from automations import webhooks
from automations.models import Rule, RuleRun, WebhookDelivery, WebhookEndpoint
from contacts import services
from contacts.models import HistoryEntry, Source, Task
from crm_hub.actors import Actor
from tests.automations.factories import RuleFactory, TeamFactory
from tests.contacts.factories import UserFactory

pytestmark = pytest.mark.django_db

SYSTEM = Actor.for_system("test")


def test_rule_failures_are_shown_in_admin(admin_client):
    RuleFactory(name="Hand out leads", assign_mode=Rule.AssignMode.ROUND_ROBIN, assign_team=TeamFactory(name="Empty"))
    services.upsert_contact(data={"name": "Ada"}, actor=SYSTEM, source=Source.API)

    page = admin_client.get(reverse("admin:automations_rule_changelist")).content.decode()
    assert "1 automation rule run(s) failed" in page and "Team Empty has no active members" in page

    runs = admin_client.get(reverse("admin:automations_rulerun_changelist") + "?status__exact=failed").content.decode()
    assert "Hand out leads" in runs and "no active members" in runs


def test_try_a_rule_on_a_sample_contact_from_admin(admin_client):
    bob = UserFactory(username="bob")
    rule = RuleFactory(assign_mode=Rule.AssignMode.FIXED, assign_user=bob, task_title="Call", task_due_amount=1)
    services.upsert_contact(
        data={"name": "Ada", "email": "ada@example.com", "phone": "+15615550192"}, actor=SYSTEM, source=Source.API
    )
    Task.objects.all().delete()
    history = HistoryEntry.objects.count()
    url = reverse("admin:automations_rule_try", args=[rule.pk])

    assert admin_client.get(url).status_code == 200
    page = admin_client.post(url, {"contact": "ada@example.com"}).content.decode()

    assert "The conditions hold" in page
    assert "task &#x27;Call&#x27; due" in page
    assert HistoryEntry.objects.count() == history and not Task.objects.exists()
    # The sample is found the way the search box finds people: a phone in another format works.
    assert "The conditions hold" in admin_client.post(url, {"contact": "(561) 555-0192"}).content.decode()
    assert "No contact has" in admin_client.post(url, {"contact": "nobody@nowhere.example"}).content.decode()
    change = admin_client.get(reverse("admin:automations_rule_change", args=[rule.pk])).content.decode()
    assert url in change


def test_a_sales_user_cannot_try_a_rule(client):
    rule = RuleFactory(task_title="Call", task_due_amount=1)
    client.force_login(UserFactory(username="seller"))  # staff, no admin permissions
    url = reverse("admin:automations_rule_try", args=[rule.pk])
    assert client.get(url).status_code == 403
    assert client.post(url, {"contact": "1"}).status_code == 403


def test_endpoint_secret_is_shown_once_and_unsafe_urls_are_refused(admin_client, settings):
    add = reverse("admin:automations_webhookendpoint_add")
    response = admin_client.post(
        add, {"url": "http://127.0.0.1:8061/hook", "events": ["contact.created", "task.created"], "active": "on"},
        follow=True,
    )
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.secret in response.content.decode()
    change = admin_client.get(reverse("admin:automations_webhookendpoint_change", args=[endpoint.pk]))
    assert endpoint.secret not in change.content.decode()

    settings.CRM_WEBHOOK_ALLOWED_HOSTS = []
    refused = admin_client.post(add, {"url": "http://169.254.169.254/", "events": ["contact.created"], "active": "on"})
    assert refused.status_code == 200 and "link-local" in refused.content.decode()
    assert WebhookEndpoint.objects.count() == 1


def test_rotate_action_and_disabled_notice(admin_client):
    endpoint, old = webhooks.create_endpoint(url="http://127.0.0.1:9/", events=["contact.created"])
    changelist = reverse("admin:automations_webhookendpoint_changelist")
    response = admin_client.post(
        changelist, {"action": "rotate_secret", "_selected_action": [endpoint.pk]}, follow=True
    )
    endpoint.refresh_from_db()
    assert endpoint.secret != old and endpoint.previous_secret == old
    assert endpoint.secret in response.content.decode()

    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        active=False, disabled_at=timezone.now(), disabled_reason="The receiver answered 410 Gone."
    )
    page = admin_client.get(changelist).content.decode()
    assert "was disabled on" in page and "410 Gone" in page


def test_delivery_log_and_redeliver_action(admin_client, receiver, django_capture_on_commit_callbacks):
    receiver.script = [500]
    webhooks.create_endpoint(url=receiver.url(), events=["contact.created"])
    with django_capture_on_commit_callbacks(execute=True):
        services.upsert_contact(data={"name": "Ada"}, actor=SYSTEM, source=Source.API)
    delivery = WebhookDelivery.objects.get()

    page = admin_client.get(reverse("admin:automations_webhookdelivery_change", args=[delivery.pk])).content.decode()
    assert "<p>500</p>" in page and "<p>{&quot;ok&quot;: false}</p>" in page

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            reverse("admin:automations_webhookdelivery_changelist"),
            {"action": "redeliver", "_selected_action": [delivery.pk]},
        )
    delivery.refresh_from_db()
    assert delivery.status == "delivered" and delivery.attempts == 2
    log = admin_client.get(reverse("admin:automations_deliveryattempt_changelist")).content.decode()
    assert log.count("<tr") >= 3
    assert RuleRun.objects.count() == 0


@pytest.mark.parametrize(
    "name",
    [
        "admin:automations_rule_add", "admin:automations_team_add", "admin:automations_webhookendpoint_add",
        "admin:automations_webhookdelivery_changelist", "admin:automations_deliveryattempt_changelist",
        "admin:automations_rulerun_changelist", "admin:automations_team_changelist",
    ],
)
def test_admin_pages_render(admin_client, name):
    assert admin_client.get(reverse(name)).status_code == 200


def test_rule_saved_from_admin_runs(admin_client):
    bob = UserFactory(username="bob")
    response = admin_client.post(reverse("admin:automations_rule_add"), {
        "name": "Web leads to Bob", "position": 0, "active": "on", "trigger": "contact_created",
        "sources": ["form"], "assign_mode": "fixed", "assign_user": bob.pk, "assign_only_if_unowned": "on",
        "stage_only_if_not_in_pipeline": "on", "task_due_unit": "days",
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Rule.objects.get().sources == ["form"]
    contact = services.upsert_contact(data={"name": "Ada"}, actor=SYSTEM, source=Source.FORM).contact
    assert contact.owner == bob

"""Webhooks carry no more about a person than the API would show, and nothing after the person is erased."""

import pytest

from automations import webhooks
from automations.models import WebhookDelivery
from contacts import services
from contacts.models import Source
from crm_hub.actors import Actor

pytestmark = pytest.mark.django_db

SYSTEM = Actor.for_system("test")


def test_identity_changes_stay_out_of_contact_updated():
    webhooks.create_endpoint(url="http://127.0.0.1:9/", events=["contact.updated"])
    contact = services.upsert_contact(data={"name": "Ada", "phone": "+14155550100"}, actor=SYSTEM, source=Source.API).contact
    services.update_contact(contact=contact, data={"identity": "123-45-6789", "city": "Lisbon"}, actor=SYSTEM,
                            source=Source.API)
    payload = WebhookDelivery.objects.get(event="contact.updated").payload
    assert payload["changes"] == {"city": ["", "Lisbon"]}
    assert "123-45-6789" not in str(payload)


def test_erasing_a_contact_drops_its_pending_events_and_scrubs_delivered_ones():
    webhooks.create_endpoint(url="http://127.0.0.1:9/", events=["contact.created", "contact.updated", "note.created"])
    erased = services.upsert_contact(data={"name": "Erase Me", "email": "erase.me@qa.test"}, actor=SYSTEM,
                                     source=Source.API).contact
    kept = services.upsert_contact(data={"name": "Keep Me"}, actor=SYSTEM, source=Source.API).contact
    services.update_contact(contact=erased, data={"city": "Porto"}, actor=SYSTEM, source=Source.API)
    WebhookDelivery.objects.filter(event="contact.created", payload__contact__id=erased.pk).update(
        status=WebhookDelivery.Status.DELIVERED
    )
    services.erase_contacts(contact_ids=[erased.pk])
    left = list(WebhookDelivery.objects.order_by("id").values_list("event", "status", "payload"))
    assert ("contact.updated", "pending") not in [(e, s) for e, s, _p in left if "Erase" in str(_p) or _p.get("erased")]
    assert ("contact.created", "delivered", {"erased": True, "contact": {"id": erased.pk}}) in left
    assert "Erase Me" not in str(left) and "erase.me@qa.test" not in str(left)
    assert any(p["contact"]["id"] == kept.pk and p["contact"]["name"] == "Keep Me" for _e, _s, p in left)


def test_a_tag_removed_one_by_one_or_in_bulk_is_a_contact_updated_event():
    from tests.contacts.factories import TagFactory

    webhooks.create_endpoint(url="http://127.0.0.1:9/", events=["contact.updated"])
    TagFactory(name="newsletter")
    one = services.upsert_contact(data={"name": "One"}, tags=["newsletter"], actor=SYSTEM, source=Source.API).contact
    two = services.upsert_contact(data={"name": "Two"}, tags=["newsletter"], actor=SYSTEM, source=Source.API).contact
    WebhookDelivery.objects.all().delete()
    services.remove_tag(contact=one, tag="newsletter", actor=SYSTEM, source=Source.API)
    services.bulk_apply(contacts=[two], action="remove_tag", value="newsletter", actor=SYSTEM, source=Source.MANUAL)
    payloads = list(WebhookDelivery.objects.order_by("id").values_list("payload", flat=True))
    assert [(p["contact"]["id"], p["changes"]) for p in payloads] == [
        (one.pk, {"tags": [["newsletter"], []]}), (two.pk, {"tags": [["newsletter"], []]}),
    ]

"""The demo data: `make run` loads it on every start, so a second run must change nothing."""

import io

import pytest
from django.core.management import call_command

from contacts.models import Contact, ContactTag, HistoryEntry

pytestmark = pytest.mark.django_db


def snapshot():
    return (
        HistoryEntry.objects.count(), ContactTag.objects.count(),
        sorted(Contact.objects.values_list("email", "name", "custom")),
    )


def test_seeding_twice_changes_nothing_and_keeps_edits():
    call_command("seed_demo", contacts=30, stdout=io.StringIO())
    first = snapshot()
    assert Contact.objects.count() == 30
    edited = Contact.objects.order_by("pk").first()
    Contact.objects.filter(pk=edited.pk).update(name="Renamed by a user")
    call_command("seed_demo", contacts=30, stdout=io.StringIO())
    assert Contact.objects.get(pk=edited.pk).name == "Renamed by a user"
    Contact.objects.filter(pk=edited.pk).update(name=edited.name)
    assert snapshot() == first


@pytest.mark.parametrize("region", ["BR", "GB", "DE"])
def test_the_demo_loads_whatever_the_default_phone_region(settings, region):
    settings.CRM_DEFAULT_PHONE_REGION = region
    call_command("seed_demo", contacts=20, stdout=io.StringIO())
    assert Contact.objects.count() == 20
    phones = [p for p in Contact.objects.values_list("phone_e164", flat=True) if p]
    assert phones and all(p.startswith("+1") for p in phones)

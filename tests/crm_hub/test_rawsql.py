"""crm_hub.rawsql against the real database: what goes in is what the ORM would store, or refused."""

import pytest
from django.db import DataError, connection, transaction

from contacts.models import Contact, HistoryEntry
from crm_hub import rawsql

pytestmark = pytest.mark.django_db


def test_insert_stores_what_the_orm_reads_back():
    contacts = [Contact(source="api", name="Ana", phone="+55 11 91234-5678", phone_e164="+5511912345678", custom={"budget": 5}),
                Contact(source="api", name="Bo", email="bo@example.com", email_normalized="bo@example.com", birthday=None)]
    rawsql.run_together([rawsql.insert(contacts)])
    assert all(c.pk for c in contacts)
    ana = Contact.objects.get(pk=contacts[0].pk)
    assert (ana.name, ana.phone_e164, ana.custom, ana.created_at is not None) == ("Ana", "+5511912345678", {"budget": 5}, True)
    assert Contact.objects.get(pk=contacts[1].pk).email_normalized == "bo@example.com"


def test_independent_inserts_run_together_and_get_their_keys():
    contact = Contact.objects.create(name="Cy", source="api")
    entries = [HistoryEntry(contact=contact, action=HistoryEntry.Action.UPDATED, changes={"n": [1, 2]}, summary=s)
               for s in ("one", "two")]
    others = [Contact(name="Di", source="api"), Contact(name="Ed", source="api")]
    rawsql.run_together([rawsql.insert(entries, returning=False), rawsql.insert(others)])
    assert sorted(HistoryEntry.objects.filter(contact=contact).values_list("summary", flat=True)) == ["one", "two"]
    assert {c.name for c in Contact.objects.filter(pk__in=[o.pk for o in others])} == {"Di", "Ed"}


def test_a_literal_percent_sign_survives_placeholder_rewriting():
    assert rawsql.fetch("SELECT %s || '%%'", ["50"]) == [("50%",)]


@pytest.mark.postgres
@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite does not enforce varchar lengths")
def test_a_value_too_long_for_its_column_is_refused_not_cut():
    too_long = Contact(source="api", name="x" * (Contact._meta.get_field("name").max_length + 1))
    with pytest.raises(DataError), transaction.atomic():
        rawsql.run_together([rawsql.insert([too_long])])
    assert not Contact.objects.exists()

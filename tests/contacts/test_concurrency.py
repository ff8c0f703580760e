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

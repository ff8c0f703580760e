"""Races over HTTP on PostgreSQL: real transactions, real threads, Django's test client per thread."""

import threading

import pytest
from django.db import connection, connections

from contacts.models import Contact, Note, Task
from crm_hub.models import IdempotencyRecord
from tests.api.factories import AgentClient, make_agent, make_taxonomy

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL"),
]


def run_in_threads(count, target):
    barrier = threading.Barrier(count)
    results, errors = [None] * count, []

    def worker(index):
        try:
            barrier.wait()
            results[index] = target(index)
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


def test_twenty_concurrent_intakes_for_one_new_phone_leave_one_contact():
    make_taxonomy()
    _agent, token = make_agent("racer")
    formats = ["(561) 555-0192", "561.555.0192", "+1 561 555 0192", "5615550192"]

    def call(index):
        response = AgentClient(token).post("intake", {
            "contact": {"name": f"Marcus {index}", "phone": formats[index % 4]},
            "note": f"Chat {index}", "tags": ["Lead"], "pipeline": "Sales", "stage": "New",
            "task": {"title": f"Call {index}", "due_at": "2026-05-02T10:00:00Z"},
        })
        return response.status_code, response.json()

    results, errors = run_in_threads(20, call)
    assert errors == []
    assert sorted({status for status, _ in results}) in ([200, 201], [201])
    assert sum(status == 201 for status, _ in results) == 1
    assert Contact.objects.count() == 1
    assert {body["contact"]["id"] for _, body in results} == {Contact.objects.get().pk}
    assert Note.objects.count() == 20 and Task.objects.count() == 20


def test_twenty_concurrent_calls_with_one_key_write_once():
    make_taxonomy()
    _agent, token = make_agent("retrier")
    body = {
        "contact": {"name": "Ana", "phone": "+15615550193"}, "note": "Only once",
        "task": {"title": "Once", "due_at": "2026-05-02T10:00:00Z"},
    }

    def call(_index):
        response = AgentClient(token).post("intake", body, key="same-key")
        return response.status_code, response.json(), response.get("Idempotent-Replayed")

    results, errors = run_in_threads(20, call)
    assert errors == []
    assert Note.objects.count() == 1 and Task.objects.count() == 1 and Contact.objects.count() == 1
    statuses = [status for status, _, _ in results]
    assert set(statuses) <= {201, 409}
    originals = [r for r in results if r[0] == 201 and r[2] is None]
    assert len(originals) == 1
    replays = [r for r in results if r[0] == 201 and r[2] == "true"]
    assert all(r[1] == originals[0][1] for r in replays)
    assert IdempotencyRecord.objects.get().state == "done"


def test_concurrent_batch_upserts_of_the_same_new_people_leave_one_contact_each():
    """Each batch inserts its fresh contacts in one statement; a batch that loses the race to
    another falls back to matching row by row, so no item fails and nobody is stored twice."""
    _agent, token = make_agent("batcher")
    people = [{"name": f"Person {i}", "phone": f"+1 (561) 555-{i:04d}", "tags": []} for i in range(30)]

    def call(index):
        # Each caller sends the same people in its own order and phone format.
        items = [dict(p, phone=p["phone"].replace(" ", "") if index % 2 else p["phone"]) for p in people]
        items = items[index % 3:] + items[:index % 3]
        response = AgentClient(token).post("contacts/batch-upsert", {"contacts": items})
        return response.status_code, response.json()

    results, errors = run_in_threads(8, call)
    assert errors == []
    assert all(status == 200 for status, _ in results)
    assert {item["status"] for _, body in results for item in body["results"]} <= {200, 201}
    assert Contact.objects.count() == 30
    assert sum(item["status"] == 201 for _, body in results for item in body["results"]) == 30


@pytest.mark.parametrize("already_in_pipeline", [False, True])
def test_stage_moves_racing_intakes_on_one_contact_never_deadlock(already_in_pipeline):
    """A PUT of the stage locked the membership, then the contact; an intake locks the contact first."""
    from contacts import services
    from contacts.models import ContactStage, Source, Stage
    from crm_hub.actors import Actor

    make_taxonomy()
    _agent, token = make_agent("stage-racer")
    contact = services.upsert_contact(data={"name": "Ana", "phone": "+15615550142"}, actor=Actor.for_system("t"),
                                      source=Source.MANUAL).contact
    stages = list(Stage.objects.filter(pipeline__name="Sales").values_list("name", flat=True))
    if already_in_pipeline:
        services.move_to_stage(contact=contact, pipeline="Sales", stage=stages[0], actor=Actor.for_system("t"),
                               source=Source.MANUAL)

    def call(index):
        stage = stages[index % len(stages)]
        client = AgentClient(token)
        if index % 2:
            return client.put(f"contacts/{contact.pk}/stage", {"pipeline": "Sales", "stage": stage}).status_code
        return client.post("intake", {"contact": {"phone": "+1 561 555 0142"}, "pipeline": "Sales", "stage": stage,
                                      "tags": ["Lead"]}).status_code

    results, errors = run_in_threads(8, call)
    assert errors == []
    assert all(status in (200, 201) for status in results), results
    assert ContactStage.objects.filter(contact=contact).count() == 1

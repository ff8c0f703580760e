"""Idempotency-Key: replay, reuse, in-flight duplicates, failures that free the key, retention."""

import datetime as dt

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from contacts.models import Contact, HistoryEntry, Note
from crm_hub.models import IdempotencyRecord
from tests.api import urls_extra
from tests.api.factories import AgentClient, make_agent

pytestmark = pytest.mark.django_db


def test_retry_with_same_key_replays_first_response_and_writes_nothing(bot, taxonomy):
    body = {"contact": {"name": "R", "phone": "+15615550190"}, "note": "Once"}
    first = bot.post("intake", body, key="k-1")
    history = HistoryEntry.objects.count()
    second = bot.post("intake", body, key="k-1")
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second["Idempotent-Replayed"] == "true"
    assert not first.has_header("Idempotent-Replayed")
    assert Note.objects.count() == 1 and HistoryEntry.objects.count() == history


def test_same_json_with_keys_in_another_order_is_the_same_request(bot):
    bot.client.post("/api/v1/contacts/upsert", data='{"name": "A", "city": "X"}', content_type="application/json",
                    HTTP_IDEMPOTENCY_KEY="order", **bot.headers)
    again = bot.client.post("/api/v1/contacts/upsert", data='{"city":"X","name":"A"}', content_type="application/json",
                            HTTP_IDEMPOTENCY_KEY="order", **bot.headers)
    assert again["Idempotent-Replayed"] == "true"


def test_same_key_with_different_body_is_422(bot):
    bot.post("contacts/upsert", {"name": "A"}, key="k-2")
    response = bot.post("contacts/upsert", {"name": "B"}, key="k-2")
    assert response.status_code == 422
    assert response.json()["errors"][0]["code"] == "idempotency_key_reused"
    assert Contact.objects.count() == 1
    other_path = bot.patch(f"contacts/{Contact.objects.get().pk}", {"name": "A"}, key="k-2")
    assert other_path.status_code == 422


def test_keys_are_scoped_per_agent(bot):
    _agent, token = make_agent("second-bot")
    bot.post("contacts/upsert", {"name": "A"}, key="shared")
    other = AgentClient(token).post("contacts/upsert", {"name": "A"}, key="shared")
    assert other.status_code == 201 and not other.has_header("Idempotent-Replayed")
    assert Contact.objects.count() == 2


def test_duplicate_while_first_is_running_gets_409(bot, settings):
    settings.CRM_IDEMPOTENCY_WAIT_SECONDS = 0
    assert bot.post("contacts/upsert", {"name": "B"}, key="busy").status_code == 201
    # Make the row look like a call that is still running.
    IdempotencyRecord.objects.filter(key="busy").update(state="in_flight")
    duplicate = bot.post("contacts/upsert", {"name": "B"}, key="busy")
    assert duplicate.status_code == 409
    assert duplicate.json()["errors"][0]["code"] == "idempotency_key_in_flight"
    assert duplicate["Retry-After"] == "1"
    assert Contact.objects.count() == 1


def test_an_abandoned_in_flight_key_is_taken_over(bot, settings):
    settings.CRM_IDEMPOTENCY_WAIT_SECONDS = 0
    bot.post("contacts/upsert", {"name": "C"}, key="dead")
    # The first request's process died: its writes rolled back, its row stayed in flight.
    Contact.objects.all().delete()
    IdempotencyRecord.objects.filter(key="dead").update(state="in_flight", created_at=timezone.now() - dt.timedelta(minutes=5))
    retry = bot.post("contacts/upsert", {"name": "C"}, key="dead")
    assert retry.status_code == 201 and Contact.objects.count() == 1


def test_validation_errors_are_stored_and_replayed(bot, taxonomy):
    first = bot.post("contacts/upsert", {"phone": "12"}, key="bad")
    again = bot.post("contacts/upsert", {"phone": "12"}, key="bad")
    assert first.status_code == again.status_code == 400
    assert again["Idempotent-Replayed"] == "true"


def test_answers_that_depend_on_the_moment_do_not_poison_the_key(db):
    agent, token = make_agent("throttled", rate_limit="1/min")
    client = AgentClient(token)
    client.get("contacts")
    throttled = client.post("contacts/upsert", {"name": "T"}, key="later")
    assert throttled.status_code == 429
    assert not IdempotencyRecord.objects.filter(key="later").exists()

    _agent, reader_token = make_agent("reader", scopes=["contacts:read"])
    reader = AgentClient(reader_token)
    assert reader.post("contacts/upsert", {"name": "T"}, key="scope").status_code == 403
    assert not IdempotencyRecord.objects.exists()


@pytest.mark.urls("tests.api.urls_extra")
def test_new_endpoints_are_covered_without_code_of_their_own(bot):
    urls_extra.CALLS.clear()
    first = bot.client.post("/api/v1/test-echo", data='{"a": 1}', content_type="application/json",
                            HTTP_IDEMPOTENCY_KEY="echo", **bot.headers)
    again = bot.client.post("/api/v1/test-echo", data='{"a": 1}', content_type="application/json",
                            HTTP_IDEMPOTENCY_KEY="echo", **bot.headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == {"call": 1} and len(urls_extra.CALLS) == 1


@pytest.mark.urls("tests.api.urls_extra")
def test_a_server_error_rolls_back_the_view_and_frees_the_key(bot):
    client = Client(raise_request_exception=False)
    call = lambda: client.post("/api/v1/test-broken", data="{}", content_type="application/json",  # noqa: E731
                               HTTP_IDEMPOTENCY_KEY="boom", **bot.headers)
    assert call().status_code == 500
    assert not Contact.objects.exists()
    assert not IdempotencyRecord.objects.filter(key="boom").exists()
    assert call().status_code == 500  # a retry runs again rather than replaying or 409


def test_bad_key_is_400(bot):
    response = bot.post("contacts/upsert", {"name": "A"}, key="x" * 300)
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "Idempotency-Key"


def test_multipart_retry_with_a_new_boundary_is_replayed(bot):
    from django.core.files.uploadedfile import SimpleUploadedFile

    contact = Contact.objects.create(name="F", source="api")
    statuses = []
    for _ in range(2):
        upload = SimpleUploadedFile("a.txt", b"hello", content_type="text/plain")
        response = bot.client.post(f"/api/v1/contacts/{contact.pk}/files", {"file": upload},
                                   HTTP_IDEMPOTENCY_KEY="file", **bot.headers)
        statuses.append((response.status_code, response.get("Idempotent-Replayed")))
    assert statuses == [(201, None), (201, "true")]
    assert contact.files.count() == 1


def test_purge_keeps_a_day_of_keys(bot):
    bot.post("contacts/upsert", {"name": "A"}, key="fresh")
    bot.post("contacts/upsert", {"name": "B"}, key="old")
    IdempotencyRecord.objects.filter(key="old").update(created_at=timezone.now() - dt.timedelta(hours=25))
    call_command("purge_idempotency_keys")
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["fresh"]
    # A key past its retention is a new request again.
    assert bot.post("contacts/upsert", {"name": "B"}, key="old").status_code == 201

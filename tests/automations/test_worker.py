"""A real Celery worker on Redis delivering to a local receiver; one test SIGKILLs it mid-run.

The worker is a subprocess pointed at pytest's test database (``test_<name>``),
so these tests commit for real (``transaction=True``) and need PostgreSQL.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection, transaction
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from automations import webhooks
from automations.models import WebhookDelivery
from contacts import services
from contacts.models import Source
from crm_hub.actors import Actor
from crm_hub.celery import app
from tests.automations.receiver import Receiver

pytestmark = [
    pytest.mark.redis,
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not settings.CELERY_BROKER_URL.startswith("redis"), reason="needs a Redis broker"),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the worker shares the test database"),
]

BASE_DIR = Path(__file__).resolve().parents[2]
SYSTEM = Actor.for_system("worker-test")


def _database_url() -> str:
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class Worker:
    def __init__(self, tmp_path: Path, *, beat: bool = False, purge: bool = False):
        env = dict(os.environ)
        env.update(
            DATABASE_URL=_database_url(),
            DJANGO_SETTINGS_MODULE="crm_hub.test_settings",
            CELERY_TASK_ALWAYS_EAGER="0",
            CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
            CRM_WEBHOOK_BATCH_SIZE="10",
            CRM_WEBHOOK_LEASE_SECONDS="3",
            CRM_WEBHOOK_TIMEOUT_SECONDS="1",  # with batches of 10 on 8 threads: a 4 s lease
            CRM_WEBHOOK_POLL_SECONDS="1",
            CRM_WEBHOOK_RETRY_BASE_SECONDS="0",
            CONN_MAX_AGE="0",
        )
        command = [sys.executable, "-m", "celery", "-A", "crm_hub", "worker", "--concurrency=2", "--loglevel=INFO",
                   "--without-gossip", "--without-mingle", "-n", f"issue6-{os.getpid()}-{time.monotonic_ns()}@%h"]
        if beat:
            command += ["--beat", "--schedule", str(tmp_path / f"beat-{time.monotonic_ns()}")]
        if purge:
            command.append("--purge")
        self.log_path = tmp_path / f"worker-{time.monotonic_ns()}.log"
        self.log = self.log_path.open("w")
        # Own process group: SIGKILL reaches the prefork children too, like a machine losing the worker.
        self.process = subprocess.Popen(
            command, cwd=BASE_DIR, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError("worker exited:\n" + self.log_path.read_text())
            if "ready." in self.log_path.read_text():
                return
            time.sleep(0.2)
        raise AssertionError("worker not ready:\n" + self.log_path.read_text())

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.log.close()


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def queued():
    """Tasks go to the broker, not inline, in this process too."""
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = False
    yield
    app.conf.task_always_eager = previous


def test_real_worker_delivers_signed_webhooks(tmp_path, queued):
    with Receiver() as receiver:
        endpoint, secret = webhooks.create_endpoint(
            url=receiver.url(), events=["contact.created", "note.created", "task.created"]
        )
        worker = Worker(tmp_path, purge=True)
        try:
            worker.wait_ready()
            for n in range(3):
                contact = services.upsert_contact(
                    data={"name": f"Lead {n}", "phone": f"+1415555010{n}"}, actor=SYSTEM, source=Source.API
                ).contact
                services.add_note(contact=contact, body=f"<p>Note {n}</p>", actor=SYSTEM, source=Source.CHAT)
            services.create_task(contact=contact, title="Call", due_at="2030-01-01T09:00:00Z", actor=SYSTEM,
                                 source=Source.API)
            wait_for(lambda: len(receiver.seen_ids) == 7, 30, "7 deliveries")
            # The worker records a batch after sending it; wait for that before stopping it.
            wait_for(lambda: WebhookDelivery.objects.filter(status="delivered").count() == 7, 30, "7 recorded")
        finally:
            worker.kill()

    signer = Webhook(secret)
    types = sorted(signer.verify(r["body"], r["headers"])["type"] for r in receiver.requests)
    assert types == ["contact.created"] * 3 + ["note.created"] * 3 + ["task.created"]
    # Deliveries arrive in any order (batches go out on several threads); tamper with a body known to hold "Lead".
    sample = next(r for r in receiver.requests if b'"contact.created"' in r["body"])
    assert b"Lead" in sample["body"]
    for body, headers in (
        (sample["body"].replace(b"Lead", b"Fake"), sample["headers"]),
        (sample["body"], {**sample["headers"], "webhook-timestamp": str(int(time.time()) - 3600)}),
    ):
        with pytest.raises((WebhookVerificationError, ValueError)):
            signer.verify(body, headers)
    assert WebhookDelivery.objects.filter(status="delivered").count() == 7


def test_worker_killed_mid_run_delivers_all_200_exactly_once_after_restart(tmp_path, queued):
    with Receiver(delay=0.02) as receiver:
        endpoint, _ = webhooks.create_endpoint(url=receiver.url(), events=["contact.updated"])
        first = Worker(tmp_path, purge=True)
        second = None
        try:
            first.wait_ready()
            with transaction.atomic():
                for n in range(200):
                    webhooks.emit_event(event="contact.updated", payload={"n": n})
            wait_for(lambda: len(receiver.seen_ids) >= 30, 30, "the run to be under way")
            first.kill()
            delivered_before_kill = len(receiver.seen_ids)
            assert delivered_before_kill < 200, "the run finished before the kill; slow the receiver down"

            # The restarted worker has nothing queued; its beat picks the leased rows up once the lease expires.
            second = Worker(tmp_path, beat=True)
            second.wait_ready()
            wait_for(
                lambda: WebhookDelivery.objects.filter(status="delivered").count() == 200, 60, "all 200 delivered"
            )
        finally:
            first.kill()
            if second is not None:
                second.kill()

    expected = set(WebhookDelivery.objects.values_list("msg_id", flat=True))
    assert len(expected) == 200
    assert len(receiver.seen_ids) == 200 and set(receiver.seen_ids) == expected
    # Rows POSTed by the killed worker but not yet recorded were sent again; the receiver dropped those repeats.
    assert len(receiver.requests) == 200 + receiver.duplicates
    print(f"killed after {delivered_before_kill} delivered; {receiver.duplicates} repeats dropped by the receiver")

"""Webhook delivery throughput: batched outbox tasks vs one Celery task per event, same run.

Starts a local receiver (its own process), one Celery worker with two prefork
processes, then delivers N events twice:

  batched    the real path: emit_event in one transaction, the commit queues
             CRM_WEBHOOK_PARALLEL_TASKS tasks, each claims rows in batches
             (select_for_update(skip_locked=True)) over a keep-alive session;
  per-event  the baseline: the same outbox rows, one deliver_webhook task each.

Prints delivered events per second (commit to last row marked delivered) and
the ratio. Needs PostgreSQL and Redis (a dedicated database is created):

    .venv/bin/python bench/webhooks.py [--events 2000]
    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/crm_bench_webhooks
    CELERY_BROKER_URL=redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/crm_bench_webhooks")
BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
if not BROKER_URL.startswith("redis"):
    sys.exit("bench/webhooks.py needs a Redis broker (CELERY_BROKER_URL=redis://...)")

ENV = {
    "DEBUG": "1",
    "DATABASE_URL": DATABASE_URL,
    "CELERY_BROKER_URL": BROKER_URL,
    "CELERY_TASK_ALWAYS_EAGER": "0",
    "DJANGO_SETTINGS_MODULE": "crm_hub.settings",
    "CRM_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
    "CRM_WEBHOOK_BATCH_SIZE": os.environ.get("CRM_WEBHOOK_BATCH_SIZE", "50"),
    "CRM_WEBHOOK_PARALLEL_TASKS": "2",
    "LOG_LEVEL": "WARNING",
}
os.environ.update(ENV)


def ensure_database() -> None:
    import psycopg

    parts = urlsplit(DATABASE_URL)
    name = parts.path.lstrip("/")
    admin_url = DATABASE_URL.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def serve(port_queue) -> None:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port_queue.put(server.server_address[1])
    server.serve_forever()


def start_worker(log_path: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "celery", "-A", "crm_hub", "worker", "--concurrency=2", "--loglevel=INFO",
               "--without-gossip", "--without-mingle", "--purge", "-n", f"bench-{os.getpid()}@%h"]
    log = log_path.open("w")
    process = subprocess.Popen(command, cwd=BASE_DIR, env={**os.environ, **ENV}, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    deadline = time.monotonic() + 60
    while "ready." not in log_path.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            sys.exit("worker did not start:\n" + log_path.read_text())
        time.sleep(0.2)
    return process


def wait_delivered(n: int, timeout: float = 600) -> float:
    from automations.models import WebhookDelivery

    deadline = time.monotonic() + timeout
    while WebhookDelivery.objects.filter(status="delivered").count() < n:
        if time.monotonic() > deadline:
            sys.exit("timed out waiting for deliveries")
        time.sleep(0.05)
    return time.perf_counter()


def run(mode: str, endpoint, events: int) -> float:
    from django.conf import settings
    from django.db import transaction

    from automations import tasks, webhooks
    from automations.models import DeliveryAttempt, WebhookDelivery

    DeliveryAttempt.objects.all().delete()
    WebhookDelivery.objects.all().delete()
    settings.CRM_WEBHOOK_QUEUE_ON_COMMIT = mode == "batched"
    payload = {"contact": {"id": 1, "name": "Ada Lovelace", "email": "ada@example.com", "tags": ["vip"]}}
    with transaction.atomic():
        for n in range(events):
            webhooks.emit_event(event="contact.updated", payload={**payload, "n": n}, endpoints=[endpoint])
        started = time.perf_counter()  # the batched kick fires at this commit
    if mode == "per-event":
        for delivery_id in WebhookDelivery.objects.order_by("id").values_list("id", flat=True):
            tasks.deliver_webhook.delay(delivery_id)
    finished = wait_delivered(events)
    return events / (finished - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args()

    ensure_database()
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from automations import webhooks
    from automations.models import WebhookEndpoint

    ports = multiprocessing.Queue()
    receiver = multiprocessing.Process(target=serve, args=(ports,), daemon=True)
    receiver.start()
    port = ports.get(timeout=10)
    WebhookEndpoint.objects.all().delete()
    endpoint, _ = webhooks.create_endpoint(url=f"http://127.0.0.1:{port}/hook", events=["contact.updated"])

    log_path = BASE_DIR / "var" / "bench-webhooks-worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    worker = start_worker(log_path)
    try:
        run("per-event", endpoint, min(args.events, 100))  # warm the worker's connections and imports
        per_event = run("per-event", endpoint, args.events)
        batched = run("batched", endpoint, args.events)
    finally:
        os.killpg(worker.pid, 9)
        receiver.terminate()
    print(f"events: {args.events}, worker: 1 x --concurrency=2 (prefork), receiver: local HTTP/1.1")
    print(f"one task per event : {per_event:8.0f} events/s")
    print(f"batched outbox     : {batched:8.0f} events/s  (batch {ENV['CRM_WEBHOOK_BATCH_SIZE']})")
    print(f"ratio              : {batched / per_event:8.1f}x")


if __name__ == "__main__":
    main()

"""Benchmark the agent write path over HTTP: gunicorn (2 sync workers, persistent DB connections,
DEBUG off) on PostgreSQL, against baselines measured in the same run.

    .venv/bin/python bench/agent_write.py [--requests 400] [--rounds 3] [--workers 2] [--port 8030]

1. POST /api/v1/intake on existing contacts (new note and task, same tags and stage) at
   concurrency 1 and 8, beside a naive endpoint (bench-only urlconf) doing the same writes
   with per-step ORM get_or_create/get/create calls; requests/s, p50/p95/p99 and SQL
   statements per call (counted in-process with Django's CaptureQueriesContext, every
   statement including the token lookup).
2. POST /api/v1/contacts/batch-upsert with 100 new contacts per call vs the same contacts
   sent one per call to POST /api/v1/contacts/upsert: contacts/s.

Uses its own database (crm_bench_agent, recreated each run) and port 8030.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
DB_NAME = "crm_bench_agent"
PG = "postgres://postgres@127.0.0.1:5432"
SERVER_ENV = {
    "DATABASE_URL": f"{PG}/{DB_NAME}",
    "DJANGO_SETTINGS_MODULE": "agent_write_settings",
    "PYTHONPATH": f"{BENCH}{os.pathsep}{ROOT}",
    "DEBUG": "0",
    "SECRET_KEY": "bench-only-secret-key-" + "x" * 40,
    "ALLOWED_HOSTS": "127.0.0.1,localhost,testserver",
    "SECURE_SSL_REDIRECT": "0",
    "SECURE_HSTS_SECONDS": "0",
    "CONN_MAX_AGE": "600",
    "CRM_VAR_DIR": str(ROOT / "var" / "bench-agent"),
    "LOG_LEVEL": "WARNING",
}
CONTACTS = 300


def recreate_database() -> None:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")


def phone(i: int) -> str:
    return f"+1561{5550000 + i:07d}"


def intake_body(i: int) -> dict:
    return {
        "contact": {"name": f"Person {i}", "phone": phone(i)},
        "note": f"Follow-up conversation {uuid.uuid4().hex[:8]}: asked about pricing.",
        "tags": ["Lead"],
        "pipeline": "Sales",
        "stage": "New",
        "task": {"title": "Call back", "due_at": "2026-06-01T10:00:00Z"},
    }


def setup_django_and_data() -> str:
    os.environ.update(SERVER_ENV)
    sys.path[:0] = [str(BENCH), str(ROOT)]
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from contacts.models import Pipeline, Stage, Tag
    from contacts.services import record_intake
    from crm_hub.actors import Actor
    from crm_hub.services import create_agent

    Tag.objects.create(name="Lead")
    Tag.objects.create(name="VIP")
    sales = Pipeline.objects.create(name="Sales")
    Stage.objects.create(pipeline=sales, name="New", position=0)
    Stage.objects.create(pipeline=sales, name="Qualified", position=1)
    agent, token = create_agent(
        name="bench-bot", rate_limit="1000000/min",
        scopes=["contacts:read", "contacts:write", "notes:write", "tasks:write", "conversations:write"],
    )
    actor = Actor.for_agent(agent)
    for i in range(CONTACTS):
        body = intake_body(i)
        record_intake(contact=body["contact"], actor=actor, tags=body["tags"], note=body["note"],
                      pipeline="Sales", stage="New", task=body["task"])
    return token


def count_statements(token: str) -> dict[str, int]:
    """SQL statements of one call on an existing contact, everything counted (token lookup included)."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    counts = {}
    for label, path, extra in (
        ("intake", "/api/v1/intake", {}),
        ("intake + Idempotency-Key", "/api/v1/intake", {"HTTP_IDEMPOTENCY_KEY": "count-once"}),
        ("naive baseline", "/bench/naive-intake", {}),
    ):
        client.post(path, json.dumps(intake_body(1)), content_type="application/json", **auth)  # warm (last_used_at)
        with CaptureQueriesContext(connection) as captured:
            response = client.post(path, json.dumps(intake_body(2)), content_type="application/json", **auth, **extra)
        assert response.status_code in (200, 201), response.content
        counts[label] = len(captured)
        if os.environ.get("BENCH_SHOW_SQL"):
            print(f"-- {label}: {len(captured)} statements")
            for query in captured.captured_queries:
                print("   ", query["sql"][:140])
    return counts


SERVER_PIDS_FILE = ROOT / "var" / "bench-agent" / "server.pids"


def record_server_pids(server: subprocess.Popen) -> None:
    """Write the gunicorn master's and workers' pids, for server_cpu_seconds."""
    pids = [server.pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == server.pid:
            pids.append(int(stat.parent.name))
    SERVER_PIDS_FILE.parent.mkdir(parents=True, exist_ok=True)
    SERVER_PIDS_FILE.write_text("\n".join(map(str, pids)))


def start_server(port: int, workers: int) -> subprocess.Popen:
    env = dict(os.environ, **SERVER_ENV)
    server = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "gunicorn"), "crm_hub.wsgi:application", "--workers", str(workers),
         "--worker-class", "sync", "--bind", f"127.0.0.1:{port}", "--log-level", "warning"],
        cwd=ROOT, env=env,
    )
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/api/v1/schema/")
            if conn.getresponse().status == 200:
                return server
        except OSError:
            time.sleep(0.2)
    server.terminate()
    raise SystemExit("gunicorn did not start")


def post(port: int, path: str, body: dict, headers: dict) -> tuple[int, float]:
    payload = json.dumps(body)
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", path, payload, {"Content-Type": "application/json", **headers})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status, time.perf_counter() - started


def server_cpu_seconds() -> float:
    """CPU seconds used so far by the gunicorn workers and their PostgreSQL backends.

    Work done per call, unlike wall time, does not change when something else loads the machine.
    """
    pids = [int(line) for line in Path(SERVER_PIDS_FILE).read_text().split()] if Path(SERVER_PIDS_FILE).exists() else []
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        pids += [row[0] for row in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [DB_NAME]
        )]
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def load(port: int, path: str, bodies: list[dict], concurrency: int, headers_for) -> dict:
    latencies: list[float] = []
    failures: list[int] = []
    lock = threading.Lock()
    cursor = iter(range(len(bodies)))

    def worker():
        while True:
            with lock:
                index = next(cursor, None)
            if index is None:
                return
            status, seconds = post(port, path, bodies[index], headers_for(index))
            with lock:
                latencies.append(seconds)
                if status >= 300:
                    failures.append(status)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    cpu_before = server_cpu_seconds()
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    cpu = server_cpu_seconds() - cpu_before
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "rps": len(latencies) / elapsed, "p50": cuts[49] * 1000, "p95": cuts[94] * 1000, "p99": cuts[98] * 1000,
        "failures": len(failures), "elapsed": elapsed, "count": len(latencies),
        "cpu_ms": cpu * 1000 / max(1, len(latencies)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400, help="requests per intake run")
    parser.add_argument("--port", type=int, default=8030)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per endpoint; the median is shown")
    args = parser.parse_args()

    recreate_database()
    token = setup_django_and_data()
    statements = count_statements(token)
    from django.db import connections

    connections.close_all()
    auth = {"Authorization": f"Bearer {token}"}
    server = start_server(args.port, args.workers)
    try:
        bodies = [intake_body(i % CONTACTS) for i in range(args.requests)]
        warm = [intake_body(i) for i in range(40)]
        load(args.port, "/api/v1/intake", warm, 4, lambda i: auth)
        load(args.port, "/bench/naive-intake", warm, 4, lambda i: auth)
        record_server_pids(server)
        rows = []
        endpoints = (
            ("intake", "/api/v1/intake", lambda i: auth),
            ("intake + Idempotency-Key", "/api/v1/intake", lambda i: {**auth, "Idempotency-Key": uuid.uuid4().hex}),
            ("naive baseline", "/bench/naive-intake", lambda i: auth),
        )
        for concurrency in (1, 8):
            # Rounds interleave the endpoints, so a burst of outside load lands on all of them alike;
            # each endpoint reports its median round (by throughput).
            runs: dict[str, list[dict]] = {label: [] for label, _path, _headers in endpoints}
            for round_index in range(args.rounds):
                order = endpoints[round_index % len(endpoints):] + endpoints[:round_index % len(endpoints)]
                for label, path, headers_for in order:
                    runs[label].append(load(args.port, path, bodies, concurrency, headers_for))
            for label, _path, _headers in endpoints:
                ranked = sorted(runs[label], key=lambda r: r["rps"])
                rows.append((concurrency, label, ranked[len(ranked) // 2]))

        print(f"\nPOST intake on existing contacts (gunicorn {args.workers} sync workers, PostgreSQL, CONN_MAX_AGE on, DEBUG off)")
        print(f"{'conc':>4}  {'endpoint':<26} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'SQL/call':>9} "
              f"{'CPU ms/call':>12} {'errors':>7}")
        for concurrency, label, r in rows:
            print(f"{concurrency:>4}  {label:<26} {r['rps']:>8.1f} {r['p50']:>8.1f} {r['p95']:>8.1f} {r['p99']:>8.1f} "
                  f"{statements[label]:>9} {r['cpu_ms']:>12.2f} {r['failures']:>7}")
        print("(CPU ms/call: gunicorn workers + PostgreSQL backends, the server's work per call whatever else runs)")
        for concurrency in (1, 8):
            mine = next(r for c, label, r in rows if c == concurrency and label == "intake")
            naive = next(r for c, label, r in rows if c == concurrency and label == "naive baseline")
            print(f"concurrency {concurrency}: intake / naive throughput = {mine['rps'] / naive['rps']:.2f}x, "
                  f"server CPU per call naive / intake = {naive['cpu_ms'] / mine['cpu_ms']:.2f}x")

        # Batch upsert of 100 new contacts vs the same contacts one per call; new phones every round.
        per_row_runs, batch_runs = [], []
        for round_index in range(args.rounds):
            base = 5550000 + round_index * 10_000
            single = [{"name": f"Single {i}", "phone": f"+1305{base + i:07d}", "tags": ["Lead"]} for i in range(300)]
            per_row = load(args.port, "/api/v1/contacts/upsert", single, 1, lambda i: auth)
            per_row_runs.append((per_row["count"] / per_row["elapsed"], per_row))
            batch_bodies = [
                {"contacts": [{"name": f"Batch {b}-{i}", "phone": f"+1786{base + b * 100 + i:07d}", "tags": ["Lead"]}
                              for i in range(100)]}
                for b in range(10)
            ]
            batched = load(args.port, "/api/v1/contacts/batch-upsert", batch_bodies, 1, lambda i: auth)
            batch_runs.append((10 * 100 / batched["elapsed"], batched))
        per_row_rate, per_row = sorted(per_row_runs, key=lambda run: run[0])[len(per_row_runs) // 2]
        batch_rate, batched = sorted(batch_runs, key=lambda run: run[0])[len(batch_runs) // 2]
        print("\nUpserting new contacts (concurrency 1, median of the rounds)")
        print(f"  per-row POST contacts/upsert:        {per_row_rate:8.0f} contacts/s ({per_row['failures']} errors)")
        print(f"  POST contacts/batch-upsert (100):    {batch_rate:8.0f} contacts/s ({batched['failures']} errors, p50 {batched['p50']:.0f} ms per call)")
        print(f"  batch / per-row = {batch_rate / per_row_rate:.1f}x")
    finally:
        server.terminate()
        server.wait(10)
        recreate_database_drop()


def recreate_database_drop() -> None:
    import psycopg
    from django.db import connections

    connections.close_all()
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")


if __name__ == "__main__":
    main()

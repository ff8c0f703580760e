"""Contact import benchmark on PostgreSQL: our engine vs stock django-import-export vs raw COPY.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/crm_bench_import .venv/bin/python bench/import.py

Generates a messy contacts CSV (phones in many national and international
formats, 10% in-file duplicates, half the people already in the CRM, a few
bad rows), then, in one run, prints rows/s and peak memory (RSS) for:

- our import (contacts.importing) at 100k and 1M rows;
- stock django-import-export on the 100k file with its best documented
  settings (use_bulk, batch_size=1000, skip_diff);
- a raw COPY of the same 100k and 1M files into an unindexed table (the physical limit).

For each run of our import it also prints where the CPU went per row (the
main process, its phone-parsing workers, the whole PostgreSQL server) against
the CPU per row that 20,000 rows/s leaves on this machine's cores, and the
rate PostgreSQL's own work alone would allow.

Each measurement runs in its own subprocess so its peak RSS is its own
(the process plus any worker processes it forked). The database named by
DATABASE_URL is dropped and recreated: give it a bench-only name.
Options: --sizes 100000,1000000  --skip-stock  --keep-files
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

US_AREAS = (201, 212, 305, 312, 415, 561, 617, 702, 713, 818, 917, 404, 503, 206, 646)
HEADERS = ["Full Name", "Phone Number", "E-mail", "Company Name", "City", "Tags"]
TAGS = ("Lead", "Customer", "VIP", "")


def _person_phone(i: int) -> tuple[str, list[str]]:
    """Return (E.164, spellings) of person i's phone: US mostly, some UK and Brazil."""
    kind = i % 10
    if kind == 7:
        digits = f"{7000_0000 + i % 9000_0000:08d}"[-8:]
        e164 = f"+4420{digits}"
        return e164, [f"+44 20 {digits[:4]} {digits[4:]}", f"0044 20 {digits}", f"+44 (0)20 {digits[:4]} {digits[4:]}"]
    if kind == 8:
        digits = f"{i % 1000_0000:08d}"
        e164 = f"+55119{digits}"
        return e164, [f"+55 11 9{digits[:4]}-{digits[4:]}", f"+55 (11) 9{digits[:4]} {digits[4:]}", f"0055119{digits}"]
    area = US_AREAS[i % len(US_AREAS)]
    exchange = 200 + (i // 10_000) % 700
    line = i % 10_000
    e164 = f"+1{area}{exchange}{line:04d}"
    return e164, [
        f"({area}) {exchange}-{line:04d}",
        f"{area}.{exchange}.{line:04d}",
        f"+1 {area}-{exchange}-{line:04d}",
        f"1-{area}-{exchange}-{line:04d}",
        f"{area}{exchange}{line:04d}",
        f"001 {area} {exchange} {line:04d}",
    ]


def _email(i: int) -> str:
    return f"person{i}@example{i % 50}.com"


def generate(path: Path, rows: int, seed: int = 7) -> int:
    """Write the messy CSV; return how many distinct people it names (existing ones are 0..people/2)."""
    rnd = random.Random(seed)
    people = int(rows * 0.9)
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(HEADERS)
        for n in range(rows):
            # Every tenth row repeats someone already in the file, spelled differently.
            i = rnd.randrange(max(1, n * 9 // 10)) if n % 10 == 9 and n else n * 9 // 10
            _e164, spellings = _person_phone(i)
            phone = rnd.choice(spellings)
            email = _email(i)
            if rnd.random() < 0.3:
                email = email.upper() if rnd.random() < 0.5 else f"  {email.title()} "
            if rnd.random() < 0.1:
                phone = ""  # email only: matched by the email fallback
            if n % 100 == 42:
                email = f"broken-{n}@"  # a bad row the import must report, not stop on
            out.writerow([f"Person {i}", phone, email, f"Company {i % 5000}", "Springfield", rnd.choice(TAGS)])
    return people


def seed_existing(people: int) -> None:
    """Put half of the people in the CRM already (COPY: fast, and not what is measured)."""
    from django.db import connection

    from contacts.models import Tag

    for name in ("Lead", "Customer", "VIP"):
        Tag.objects.get_or_create(name=name)
    columns = "name, identity, phone, phone_e164, phone_extension, email, email_normalized, company, position, zip_code, country, state, city, district, street, number, complement, source, custom, created_at, updated_at"
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE contacts_contact CASCADE")
        with cursor.connection.cursor().copy(f"COPY contacts_contact ({columns}) FROM STDIN") as copy:
            for i in range(0, people, 2):
                e164, _ = _person_phone(i)
                copy.write_row([f"Person {i} (old)", "", e164, e164, "", _email(i), _email(i), "Old Co", "", "", "", "", "", "", "", "", "", "manual", "{}", "2025-01-01T00:00:00Z", "2025-01-01T00:00:00Z"])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE contacts_contact")


# --- measured children ---------------------------------------------------------------


def _child_setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm_hub.settings")
    os.environ.setdefault("SECRET_KEY", "bench-" + "x" * 50)
    import django

    django.setup()


def _cpu_seconds() -> dict:
    own = resource.getrusage(resource.RUSAGE_SELF)
    workers = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"cpu_main_s": round(own.ru_utime + own.ru_stime, 1), "cpu_workers_s": round(workers.ru_utime + workers.ru_stime, 1)}


def _postgres_cpu_s() -> float:
    """CPU seconds used so far by the local PostgreSQL server: every backend (the import's
    connections, autovacuum, WAL writer, checkpointer) plus those that have exited, which
    the postmaster has reaped. Read from /proc; the server runs on this machine."""
    processes = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, tail = stat.read_text().rsplit(")", 1)
        except OSError:
            continue  # exited meanwhile
        if head.split("(", 1)[1].startswith("postgres"):
            fields = tail.split()  # from field 3 (state) on: ppid [1], utime [11], stime [12], cutime [13], cstime [14]
            processes[int(head.split()[0])] = fields
    ticks = 0
    for fields in processes.values():
        ticks += int(fields[11]) + int(fields[12])
        if int(fields[1]) not in processes:  # the postmaster
            ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def _peak_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def child_ours(path: str) -> dict:
    _child_setup()
    from contacts.importing.engine import run_import
    from contacts.importing.mapping import auto_mapping
    from contacts.importing.services import _workers
    from contacts.models import ImportJob
    from crm_hub.actors import Actor

    job = ImportJob.objects.create(file_name=Path(path).name, file=f"bench/{Path(path).name}", status="running")
    rows = sum(1 for _ in open(path, "rb")) - 1
    db_cpu_before = _postgres_cpu_s()
    start = time.monotonic()
    with open(path, "rb") as handle:
        result = run_import(
            handle, fmt="csv", mapping=auto_mapping(HEADERS), mode="create_update",
            actor=Actor.for_system("bench"), job=job, workers=_workers(rows), summary="bench import",
        )
    seconds = time.monotonic() - start
    return {"rows": result.rows, "seconds": seconds, "created": result.created, "updated": result.updated,
            "skipped": result.skipped, "failed": result.failed, "peak_mb": _peak_mb(), **_cpu_seconds(),
            "cpu_postgres_s": round(_postgres_cpu_s() - db_cpu_before, 1)}


def child_stock(path: str) -> dict:
    _child_setup()
    import tablib
    from import_export import fields, resources

    from contacts.models import Contact, Source
    from contacts.normalize import email_normalize_or_none, phone_to_e164_or_none

    class StockContactResource(resources.ModelResource):
        name = fields.Field(attribute="name", column_name="Full Name")
        phone = fields.Field(attribute="phone", column_name="Phone Number")
        phone_e164 = fields.Field(attribute="phone_e164", column_name="phone_e164")
        email = fields.Field(attribute="email", column_name="E-mail")
        email_normalized = fields.Field(attribute="email_normalized", column_name="email_normalized")
        company = fields.Field(attribute="company", column_name="Company Name")
        city = fields.Field(attribute="city", column_name="City")
        source = fields.Field(attribute="source", column_name="source")

        class Meta:
            model = Contact
            fields = ("name", "phone", "phone_e164", "email", "email_normalized", "company", "city", "source")
            import_id_fields = ("phone_e164",)
            # Its best documented settings for speed (docs: "Bulk imports").
            use_bulk = True
            batch_size = 1000
            skip_diff = True

        def before_import_row(self, row, **kwargs):
            # The same normalizers as the API; the id field must exist before the instance lookup.
            row["phone_e164"] = phone_to_e164_or_none(row.get("Phone Number") or "") or ""
            row["email_normalized"] = email_normalize_or_none(row.get("E-mail") or "") or ""
            row["source"] = Source.IMPORT

    with open(path, encoding="utf-8") as handle:
        dataset = tablib.Dataset().load(handle.read(), format="csv")
    dataset.append_col([""] * len(dataset), header="phone_e164")
    dataset.append_col([""] * len(dataset), header="email_normalized")
    dataset.append_col([""] * len(dataset), header="source")
    start = time.monotonic()
    result = StockContactResource().import_data(dataset, dry_run=False, raise_errors=False, use_transactions=False)
    seconds = time.monotonic() - start
    return {"rows": len(dataset), "seconds": seconds, "errors": len(result.row_errors()) + len(result.base_errors),
            "invalid": len(result.invalid_rows), "contacts_after": Contact.objects.count(), "peak_mb": _peak_mb(), **_cpu_seconds()}


def child_copy(path: str) -> dict:
    _child_setup()
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_raw_copy")
        cursor.execute("CREATE TABLE bench_raw_copy (name text, phone text, email text, company text, city text, tags text)")
        start = time.monotonic()
        with open(path, "rb") as handle, cursor.connection.cursor().copy(
            "COPY bench_raw_copy FROM STDIN WITH (FORMAT csv, HEADER true)"
        ) as copy:
            while chunk := handle.read(1 << 20):
                copy.write(chunk)
        seconds = time.monotonic() - start
        cursor.execute("SELECT count(*) FROM bench_raw_copy")
        rows = cursor.fetchone()[0]
        cursor.execute("DROP TABLE bench_raw_copy")
    return {"rows": rows, "seconds": seconds, "peak_mb": _peak_mb()}


def cpu_budget(label: str, result: dict, *, target_rate: int, cores: int) -> str:
    """Where each row's CPU went, against what ``target_rate`` rows/s leaves per row on ``cores`` cores.

    The last figure is the rate PostgreSQL's own work would allow if the
    import's Python cost nothing and the server's work spread over every core:
    a ceiling no client-side change can lift.
    """
    per_row = {
        "main": result["cpu_main_s"], "workers": result["cpu_workers_s"], "PostgreSQL": result["cpu_postgres_s"],
    }
    per_row = {k: v * 1e6 / result["rows"] for k, v in per_row.items()}
    budget = cores * 1e6 / target_rate
    parts = ", ".join(f"{k} {v:,.0f}" for k, v in per_row.items())
    ceiling = cores * result["rows"] / result["cpu_postgres_s"] if result["cpu_postgres_s"] else float("inf")
    return (
        f"{label}: {sum(per_row.values()):,.0f} µs of CPU per row ({parts}); {target_rate:,} rows/s on "
        f"{cores} cores allows {budget:,.0f} µs per row.\n    PostgreSQL's own work alone caps this machine at "
        f"{ceiling:,.0f} rows/s, even if the import's Python cost nothing."
    )


def run_child(kind: str, path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(path)], check=True, capture_output=True, text=True, cwd=ROOT
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  {kind} {path.name}: {result}", flush=True)
    return result


def reset_database() -> None:
    from django.conf import settings
    from django.core.management import call_command

    name = settings.DATABASES["default"]["NAME"]
    if "bench" not in name:
        sys.exit(f"refusing to reset database {name!r}: DATABASE_URL must name a bench-only database")
    import psycopg

    info = settings.DATABASES["default"]
    with psycopg.connect(host=info["HOST"], port=info["PORT"] or 5432, user=info["USER"], password=info.get("PASSWORD") or None, dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    call_command("migrate", verbosity=0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=2)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--skip-stock", action="store_true")
    parser.add_argument("--keep-files", action="store_true")
    args = parser.parse_args()
    if args.child:
        kind, path = args.child
        print(json.dumps({"ours": child_ours, "stock": child_stock, "copy": child_copy}[kind](path)))
        return
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        sys.exit("set DATABASE_URL to a bench-only PostgreSQL database, e.g. postgres://postgres@127.0.0.1:5432/crm_bench_import")
    _child_setup()
    from django.db import connection

    reset_database()
    sizes = [int(s) for s in args.sizes.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="crm-bench-import-"))
    results = []
    print("Shared 2-core machine; figures vary with other load. Peak = max RSS of the process and its workers.\n")
    for size in sizes:
        path = workdir / f"contacts-{size}.csv"
        t0 = time.monotonic()
        people = generate(path, size)
        print(f"generated {size:,} rows ({path.stat().st_size / 1e6:.0f} MB) in {time.monotonic() - t0:.0f}s")
        copy = run_child("copy", path)
        results.append((f"raw COPY into unindexed table, {size:,} rows", copy))
        seed_existing(people)
        connection.close()
        ours = run_child("ours", path)
        results.append((f"our import, {size:,} rows", ours))
        if size == sizes[0] and not args.skip_stock:
            seed_existing(people)
            connection.close()
            stock = run_child("stock", path)
            results.append((f"stock django-import-export, {size:,} rows", stock))
        if not args.keep_files:
            path.unlink()
    print(f"\n{'run':<48} {'rows':>9} {'seconds':>8} {'rows/s':>9} {'peak MB':>8}")
    rates = {}
    for label, r in results:
        rate = r["rows"] / r["seconds"] if r["seconds"] else 0
        rates[label] = rate
        print(f"{label:<48} {r['rows']:>9,} {r['seconds']:>8.1f} {rate:>9,.0f} {r['peak_mb']:>8.0f}")
        extra = {k: v for k, v in r.items() if k not in ("rows", "seconds", "peak_mb")}
        if extra:
            print(f"    {extra}")
    ours_small = next((v for k, v in rates.items() if k.startswith("our import, " + f"{sizes[0]:,}")), None)
    stock = next((v for k, v in rates.items() if k.startswith("stock")), None)
    if ours_small and stock:
        print(f"\nours / stock at {sizes[0]:,} rows: {ours_small / stock:.1f}x (target >= 10x)")
    for label, r in results:
        if label.startswith("our import") and "cpu_postgres_s" in r:
            print(cpu_budget(label, r, target_rate=20_000, cores=os.cpu_count() or 1))
    for label, rate in rates.items():
        if label.startswith("our import"):
            copy_label = label.replace("our import", "raw COPY into unindexed table")
            if copy_label in rates:
                print(f"{label}: raw COPY of the same file is {rates[copy_label] / rate:.0f}x faster (the physical limit)")


if __name__ == "__main__":
    main()

"""manage.py import_contacts FILE [--mapping JSON] [--mode ...] [--dry-run]: the batch import from a shell."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.files import File
from django.core.management.base import BaseCommand, CommandError

from contacts.importing import services
from contacts.importing.engine import ERROR, ImportResult, run_import
from contacts.importing.readers import UnreadableFile, detect_format
from contacts.models import ImportJob
from crm_hub.actors import Actor
from crm_hub.errors import InputRejected


class Command(BaseCommand):
    help = "Import contacts from a CSV or XLSX file with the same rules as the admin import."

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument(
            "--mapping",
            help='JSON {"column header": "target"} (or a path to a JSON file), applied over the automatic '
            'matching. Targets: name, phone, email, company, ..., first_name, last_name, custom.<key>, tags, "" to ignore.',
        )
        parser.add_argument("--mode", choices=ImportJob.Mode.values, default=ImportJob.Mode.CREATE_UPDATE)
        parser.add_argument("--dry-run", action="store_true", help="Show what would happen; write nothing.")
        parser.add_argument("--user", help="Username recorded as the importer (history shows it).")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, **options):
        path = Path(options["file"])
        if not path.is_file():
            raise CommandError(f"No such file: {path}")
        user = None
        if options["user"]:
            user = get_user_model().objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"No user {options['user']!r}.")
        actor = Actor.for_user(user) if user else Actor.for_system("import_contacts command")
        self.show_progress = not options["no_progress"]
        # Read before the job exists: a bad --mapping must leave no draft job or stored file behind.
        extra = self._mapping_option(options["mapping"]) if options["mapping"] else {}
        with path.open("rb") as handle:
            try:
                job = services.create_import_job(upload=File(handle, name=path.name), actor=actor, mode=options["mode"])
            except InputRejected as exc:
                raise CommandError(str(exc)) from None
        mapping = {**job.mapping, **extra}
        self.stdout.write("Mapping: " + ", ".join(f"{h} -> {t or '(ignored)'}" for h, t in mapping.items()))
        try:
            if options["dry_run"]:
                try:
                    self._dry_run(job, path, mapping, options["mode"], actor)
                finally:
                    self._discard(job)
                return
            total = job.rows_total
            job = services.confirm_import(
                job=job, mapping=mapping, mode=options["mode"], actor=actor, inline=True,
                on_progress=lambda result, _job: self._bar(result, total),
            )
        except InputRejected as exc:
            # Refused before it started (a bad mapping or mode): the draft is of no use to anyone.
            self._discard(job)
            raise CommandError("; ".join(
                f"{e.field}: {e.message}" + (f" Allowed: {', '.join(e.allowed)}." if e.allowed else "") for e in exc.errors
            )) from None
        except UnreadableFile as exc:  # found by the dry run's full read
            raise CommandError(str(exc)) from None
        self._end_bar()
        self.stdout.write(
            f"Import #{job.pk} {job.get_status_display().lower()}: created {job.created_count}, updated {job.updated_count}, "
            f"skipped {job.skipped_count}, failed {job.failed_count}."
        )
        if job.error_file:
            self.stdout.write(f"Failed rows with an error column: {job.error_file.path}")
        if job.message:
            raise CommandError(job.message)

    def _mapping_option(self, given: str) -> dict[str, str]:
        """Return the --mapping JSON (inline or a file path) as {header: target}, or raise CommandError."""
        try:
            value = json.loads(Path(given).read_text() if Path(given).is_file() else given)
        except (ValueError, OSError) as exc:
            raise CommandError(f"--mapping is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise CommandError(
                f'--mapping must be a JSON object {{"column header": "target"}}, not {type(value).__name__} {given[:80]}'
            )
        not_text = sorted(h for h, target in value.items() if target is not None and not isinstance(target, str))
        if not_text:
            raise CommandError(
                f"--mapping: the target of {', '.join(map(repr, not_text))} must be a string "
                '(a field such as "phone", "custom.<key>", "tags", or "" to ignore the column)'
            )
        return {h: target or "" for h, target in value.items()}

    def _discard(self, job: ImportJob) -> None:
        services.discard_draft(job)

    def _dry_run(self, job, path, mapping, mode, actor):
        errors = []

        def keep(outcome):
            if outcome.action == ERROR and len(errors) < 20:
                errors.append(outcome)

        total = job.rows_total
        with path.open("rb") as handle:
            result = run_import(
                handle, fmt=detect_format(path.name), mapping=mapping, mode=mode, actor=actor, dry_run=True,
                on_row=keep, on_batch=lambda r: self._bar(r, total) or True,
            )
        self._end_bar()
        self.stdout.write(
            f"Dry run (nothing written): would create {result.created}, update {result.updated}, "
            f"skip {result.skipped}; {result.failed} row(s) have errors."
        )
        for outcome in errors:
            self.stdout.write(f"  line {outcome.line}: {outcome.reason}")

    def _bar(self, result: ImportResult, total: int) -> None:
        if not self.show_progress:
            return
        total = max(total, result.rows, 1)
        done = int(30 * result.rows / total)
        rate = result.rows / result.seconds if result.seconds else 0
        left = (total - result.rows) / rate if rate else 0
        sys.stderr.write(f"\r[{'#' * done}{'.' * (30 - done)}] {result.rows:,}/{total:,} rows  {rate:,.0f} rows/s  {left:,.0f} s left ")
        sys.stderr.flush()

    def _end_bar(self) -> None:
        if self.show_progress:
            sys.stderr.write("\n")

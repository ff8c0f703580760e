"""Import jobs: upload, preview, confirm, run (inline or on Celery), cancel and revert."""

from __future__ import annotations

import csv
import io
import logging
import os
import tempfile
from dataclasses import dataclass

from django.conf import settings
from django.core.files import File
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from contacts.importing import mapping as mapping_mod
from contacts.importing.engine import ImportResult, RowOutcome, run_import
from contacts.importing.readers import UnreadableFile, count_rows, detect_format, open_rows
from contacts.models import Contact, ContactTag, HistoryEntry, ImportChange, ImportJob, Source
from crm_hub.actors import Actor
from crm_hub.errors import FieldError, InputRejected

logger = logging.getLogger(__name__)

# Files above this many rows always run in the background, whatever the setting says.
BACKGROUND_HARD_LIMIT = 10_000
PREVIEW_ROWS = 1000
REVERT_BATCH = 1000
ACTIVE = (ImportJob.Status.QUEUED, ImportJob.Status.RUNNING, ImportJob.Status.CANCELLING)


def _sync_max_rows() -> int:
    return min(getattr(settings, "CRM_IMPORT_SYNC_MAX_ROWS", 2000), BACKGROUND_HARD_LIMIT)


def _workers(rows: int) -> int:
    # Forking pays off only when phone parsing dominates; small files clean inline.
    if rows < getattr(settings, "CRM_IMPORT_PARALLEL_MIN_ROWS", 20_000):
        return 1
    return max(1, getattr(settings, "CRM_IMPORT_WORKERS", os.cpu_count() or 1))


def _reject(field: str, code: str, message: str, allowed: list[str] | None = None) -> InputRejected:
    return InputRejected([FieldError(field, code, message, allowed)])


@transaction.atomic
def create_import_job(*, upload, actor: Actor, mode: str = ImportJob.Mode.CREATE_UPDATE) -> ImportJob:
    """Store an uploaded CSV/XLSX file as a draft import with its headers matched to fields."""
    if mode not in ImportJob.Mode.values:
        raise _reject("mode", "invalid_value", "Unknown import mode.", list(ImportJob.Mode.values))
    try:
        fmt = detect_format(upload.name)
    except UnreadableFile as exc:
        raise _reject("file", "invalid_value", str(exc), ["csv", "xlsx"]) from None
    job = ImportJob(file_name=os.path.basename(upload.name)[:255], mode=mode, created_by=actor.user)
    job.file.save(os.path.basename(upload.name), upload, save=False)
    try:
        headers = read_headers(job)
        with job.file.open("rb") as handle:
            job.rows_total = count_rows(handle, fmt)
    except UnreadableFile as exc:
        job.file.delete(save=False)
        raise _reject("file", "invalid_value", str(exc)) from None
    job.mapping = mapping_mod.auto_mapping(headers)
    job.background = job.rows_total > _sync_max_rows()
    job.save()
    return job


def read_headers(job: ImportJob) -> list[str]:
    with job.file.open("rb") as handle, open_rows(handle, detect_format(job.file_name)) as (headers, _rows):
        return headers


@dataclass
class Preview:
    result: ImportResult
    rows: list[RowOutcome]
    limited: bool


def preview_import(*, job: ImportJob, mapping: dict[str, str], mode: str, actor: Actor, show: int = 200) -> Preview:
    """Dry-run the import (the first PREVIEW_ROWS rows of a big file) and return per-row outcomes."""
    shown: list[RowOutcome] = []

    def keep(outcome: RowOutcome) -> None:
        if len(shown) < show:
            shown.append(outcome)

    with job.file.open("rb") as handle:
        result = run_import(
            handle, fmt=detect_format(job.file_name), mapping=mapping, mode=mode, actor=actor,
            dry_run=True, limit=PREVIEW_ROWS, on_row=keep,
        )
    return Preview(result=result, rows=shown, limited=job.rows_total > PREVIEW_ROWS)


def confirm_import(
    *, job: ImportJob, mapping: dict[str, str], mode: str, actor: Actor, inline: bool = False, on_progress=None
) -> ImportJob:
    """Fix the mapping and mode, remember the mapping for these headers, and start the import.

    Big files go to Celery after commit; ``inline`` runs it in this process
    whatever its size (the management command, with its own progress bar).
    """
    if job.status != ImportJob.Status.DRAFT:
        raise _reject("status", "invalid_state", f"Import #{job.pk} was already started.")
    if mode not in ImportJob.Mode.values:
        raise _reject("mode", "invalid_value", "Unknown import mode.", list(ImportJob.Mode.values))
    headers = read_headers(job)
    mapping_mod.validate_mapping(mapping, headers)
    background = job.background and not inline
    with transaction.atomic():
        mapping_mod.remember_mapping(headers, mapping)
        job.mapping, job.mode, job.status, job.background = mapping, mode, ImportJob.Status.QUEUED, background
        job.save(update_fields=["mapping", "mode", "status", "background"])
        if background:
            from contacts.importing.tasks import run_import_job

            run_import_job.delay_on_commit(job.pk)
    if not background:
        job = run_job(job_id=job.pk, on_progress=on_progress)
    return job


def run_job(*, job_id: int, on_progress=None) -> ImportJob:
    """Run a queued import to the end (or until cancelled), recording progress after every batch."""
    started = ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.QUEUED).update(
        status=ImportJob.Status.RUNNING, started_at=timezone.now()
    )
    job = ImportJob.objects.select_related("created_by").get(pk=job_id)
    if not started:
        if job.status == ImportJob.Status.CANCELLING:
            _finish_cancel(job)
        return job  # already run by an earlier delivery of the task
    actor = Actor.for_user(job.created_by) if job.created_by else Actor.for_system(f"import #{job.pk}")

    def progress(result: ImportResult) -> bool:
        if on_progress is not None:
            on_progress(result, job)
        # Filtering on RUNNING makes the progress write double as the cancel check:
        # once staff asked to cancel, it matches no row.
        return bool(
            ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.RUNNING).update(
                rows_done=result.rows, created_count=result.created, updated_count=result.updated,
                skipped_count=result.skipped, failed_count=result.failed,
            )
        )

    with tempfile.TemporaryFile("w+", newline="", encoding="utf-8") as errors:
        try:
            with job.file.open("rb") as handle:
                result = run_import(
                    handle, fmt=detect_format(job.file_name), mapping=job.mapping, mode=job.mode, actor=actor,
                    job=job, workers=_workers(job.rows_total), on_batch=progress, error_writer=csv.writer(errors),
                    summary=f"import #{job.pk} ({job.file_name})"[:200],
                )
        except Exception as exc:
            logger.exception("import %s failed", job.pk)
            ImportJob.objects.filter(pk=job.pk).update(
                status=ImportJob.Status.FAILED, finished_at=timezone.now(), message=f"{type(exc).__name__}: {exc}"[:2000]
            )
            job.refresh_from_db()
            return job
        job.refresh_from_db()
        if result.cancelled:
            _finish_cancel(job)
            return job
        job.rows_done, job.created_count, job.updated_count = result.rows, result.created, result.updated
        job.skipped_count, job.failed_count = result.skipped, result.failed
        job.rows_total = result.rows  # the exact count, now that every row was read
        job.status, job.finished_at = ImportJob.Status.DONE, timezone.now()
        fields = ["rows_done", "created_count", "updated_count", "skipped_count", "failed_count", "rows_total", "status", "finished_at"]
        if result.failed:
            errors.seek(0)
            stem = os.path.splitext(job.file_name)[0]
            job.error_file.save(f"{stem}-errors.csv", File(io.BytesIO(errors.read().encode("utf-8"))), save=False)
            fields.append("error_file")
        # A cancel that arrived after the last batch is too late: the import is done.
        ImportJob.objects.filter(pk=job.pk).update(**{f: getattr(job, f) for f in fields})
    return job


def _finish_cancel(job: ImportJob) -> None:
    _undo(job, Actor.for_user(job.created_by) if job.created_by else Actor.for_system("import"), "Cancelled")
    job.status, job.finished_at = ImportJob.Status.CANCELLED, timezone.now()
    job.save(update_fields=["status", "finished_at"])


def cancel_import(*, job: ImportJob, actor: Actor) -> ImportJob:
    """Ask a queued or running import to stop; what it already wrote is reverted."""
    moved = ImportJob.objects.filter(pk=job.pk, status__in=[ImportJob.Status.QUEUED, ImportJob.Status.RUNNING]).update(
        status=ImportJob.Status.CANCELLING
    )
    job.refresh_from_db()
    if not moved and job.status == ImportJob.Status.DRAFT:
        job.status, job.finished_at = ImportJob.Status.CANCELLED, timezone.now()
        job.save(update_fields=["status", "finished_at"])
    elif not moved:
        raise _reject("status", "invalid_state", f"Import #{job.pk} is {job.get_status_display().lower()}; only a queued or running import can be cancelled.")
    return job


def revert_import(*, job: ImportJob, actor: Actor) -> ImportJob:
    """Undo a finished import: delete the contacts it created and restore the fields and tags it changed."""
    claimed = ImportJob.objects.filter(pk=job.pk, status__in=[ImportJob.Status.DONE, ImportJob.Status.FAILED]).update(
        status=ImportJob.Status.REVERTED, reverted_at=timezone.now()
    )
    if not claimed:
        job.refresh_from_db()
        raise _reject("status", "invalid_state", f"Import #{job.pk} is {job.get_status_display().lower()}; only a finished import can be reverted.")
    _undo(job, actor, "Reverted")
    job.refresh_from_db()
    return job


def _undo(job: ImportJob, actor: Actor, verb: str) -> None:
    """Walk the import's undo log newest first, one batch (fixed query count) at a time."""
    last_id = None
    while True:
        records = ImportChange.objects.filter(job=job).order_by("-id")
        if last_id is not None:
            records = records.filter(id__lt=last_id)
        batch = list(records[:REVERT_BATCH])
        if not batch:
            return
        last_id = batch[-1].id
        with transaction.atomic():
            _undo_batch(batch, actor=actor, summary=f"{verb} import #{job.pk} ({job.file_name})")


def _undo_batch(records: list[ImportChange], *, actor: Actor, summary: str) -> None:
    created = [r.contact_id for r in records if r.created]
    updated = [r for r in records if not r.created]
    if updated:
        contacts = Contact.objects.in_bulk([r.contact_id for r in updated])
        fields: set[str] = set()
        entries: list[HistoryEntry] = []
        tag_pairs: set[tuple[int, int]] = set()
        for record in updated:
            contact = contacts.get(record.contact_id)
            if contact is None:
                continue  # deleted since; nothing to restore
            changes = {}
            for key, old in record.before.items():
                if key.startswith("custom."):
                    custom = dict(contact.custom or {})
                    changes[key] = [custom.get(key[7:]), old]
                    if old is None:
                        custom.pop(key[7:], None)
                    else:
                        custom[key[7:]] = old
                    contact.custom = custom
                    fields.add("custom")
                else:
                    if key == "birthday":
                        old = old or None
                    changes[key] = [getattr(contact, key), old]
                    setattr(contact, key, old if old is not None else "")
                    fields.add(key)
            tag_pairs.update((record.contact_id, t) for t in record.tags_added)
            visible = {k: v for k, v in changes.items() if k not in ("phone_e164", "phone_extension", "email_normalized")}
            if visible or record.tags_added:
                entries.append(
                    HistoryEntry(
                        contact=contact, action=HistoryEntry.Action.UPDATED, changes=_jsonable(visible),
                        summary=summary[:255], source=Source.IMPORT, actor_user=actor.user,
                        actor_agent=actor.agent, actor_label=actor.label[:160],
                    )
                )
        if fields:
            now = timezone.now()
            for contact in contacts.values():
                contact.updated_at = now
            try:
                with transaction.atomic():
                    Contact.objects.bulk_update(list(contacts.values()), [*fields, "updated_at"])
            except IntegrityError:
                # Another contact took a restored phone or email since the import; restore the rest.
                for contact in contacts.values():
                    try:
                        with transaction.atomic():
                            contact.save(update_fields=[*fields, "updated_at"])
                    except IntegrityError:
                        logger.warning("revert kept contact %s: its old phone/email now belongs to another", contact.pk)
        if tag_pairs:
            query = Q()
            for contact_id, tag_id in tag_pairs:
                query |= Q(contact_id=contact_id, tag_id=tag_id)
            ContactTag.objects.filter(contact_id__in={c for c, _ in tag_pairs}).filter(query).delete()
        HistoryEntry.objects.bulk_create(entries)
    if created:
        Contact.objects.filter(pk__in=created, source=Source.IMPORT).delete()


def _jsonable(value):
    import datetime as dt

    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return value


def progress(job: ImportJob) -> dict:
    """Rows done, rate (rows/s) and seconds left, for the admin and web progress pages."""
    total = max(job.rows_total, job.rows_done)
    elapsed = ((job.finished_at or timezone.now()) - job.started_at).total_seconds() if job.started_at else 0
    rate = job.rows_done / elapsed if elapsed > 0 else 0.0
    left = (total - job.rows_done) / rate if rate > 0 and job.status in ACTIVE else None
    return {
        "id": job.pk,
        "status": job.status,
        "status_label": job.get_status_display(),
        "rows_done": job.rows_done,
        "rows_total": total,
        "percent": round(100 * job.rows_done / total, 1) if total else (100.0 if job.status == "done" else 0.0),
        "rate": round(rate, 1),
        "seconds_left": round(left) if left is not None else None,
        "created": job.created_count,
        "updated": job.updated_count,
        "skipped": job.skipped_count,
        "failed": job.failed_count,
        "finished": job.status not in (*ACTIVE, ImportJob.Status.DRAFT),
        "error_file_url": reverse("admin:contacts_contact_import_errors", args=[job.pk]) if job.error_file else "",
        "message": job.message,
    }

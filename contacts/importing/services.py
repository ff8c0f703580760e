"""Import jobs: upload, preview, confirm, run (inline or on Celery), cancel and revert."""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files import File
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.urls import reverse
from django.utils import timezone

from contacts.importing import mapping as mapping_mod
from contacts.importing.engine import ERROR, ImportResult, RowOutcome, run_import
from contacts.importing.readers import UnreadableFile, count_rows, detect_format, open_rows
from contacts.models import (
    Contact,
    ContactTag,
    HistoryEntry,
    ImportChange,
    ImportJob,
    MergedContact,
    Source,
    Tag,
)
from crm_hub.actors import Actor
from crm_hub.errors import FieldError, InputRejected

logger = logging.getLogger(__name__)

# Files above this many rows always run in the background, whatever the setting says.
BACKGROUND_HARD_LIMIT = 10_000
PREVIEW_ROWS = 1000
REVERT_BATCH = 1000
ACTIVE = (ImportJob.Status.QUEUED, ImportJob.Status.RUNNING, ImportJob.Status.CANCELLING)


def _stale_after() -> timedelta:
    return timedelta(seconds=getattr(settings, "CRM_IMPORT_STALE_AFTER", 300))


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
        job.mapping = mapping_mod.auto_mapping(headers)
        job.background = job.rows_total > _sync_max_rows()
        job.save()
    except BaseException as exc:
        # Whatever refused the file (or broke), no job points at the stored copy: it would stay
        # on disk, personal data that nobody can see or delete.
        job.file.delete(save=False)
        if isinstance(exc, UnreadableFile):
            raise _reject("file", "invalid_value", str(exc)) from None
        if isinstance(exc, UnicodeDecodeError):
            # A damaged multi-byte text the reader did not name as such: still the file's fault, not a 500.
            raise _reject(
                "file", "invalid_value",
                f"The file cannot be read: it is damaged or not valid {exc.encoding} (byte {exc.start:,}).",
            ) from None
        raise
    return job


def discard_draft(job: ImportJob) -> None:
    """Delete an import that was never started, with its stored file (nothing was written from it)."""
    if job.status != ImportJob.Status.DRAFT:
        raise _reject("status", "invalid_state", f"Import #{job.pk} was already started.")
    job.file.delete(save=False)
    if job.pk:
        job.delete()


def read_headers(job: ImportJob) -> list[str]:
    with job.file.open("rb") as handle, open_rows(handle, detect_format(job.file_name)) as (headers, _rows):
        return headers


@dataclass
class Preview:
    result: ImportResult
    rows: list[RowOutcome]
    limited: bool
    unlisted: int = 0  # previewed rows left out of ``rows`` (past ``show``, and not errors)


def preview_import(*, job: ImportJob, mapping: dict[str, str], mode: str, actor: Actor, show: int = 200) -> Preview:
    """Dry-run the import (the first PREVIEW_ROWS rows of a big file) and return per-row outcomes.

    The first ``show`` rows are listed, and after them every error, so each
    failing row of the preview can be fixed before confirming.
    """
    shown: list[RowOutcome] = []
    unlisted = 0

    def keep(outcome: RowOutcome) -> None:
        nonlocal unlisted
        if len(shown) < show or outcome.action == ERROR:
            shown.append(outcome)
        else:
            unlisted += 1

    try:
        with job.file.open("rb") as handle:
            result = run_import(
                handle, fmt=detect_format(job.file_name), mapping=mapping, mode=mode, actor=actor,
                dry_run=True, limit=PREVIEW_ROWS, on_row=keep,
            )
    except UnreadableFile as exc:
        # A file that breaks mid-read (an unclosed quote, a cell past every limit) is the file's
        # fault: a form error, not a 500.
        raise _reject("file", "invalid_value", str(exc)) from None
    return Preview(result=result, rows=shown, limited=job.rows_total > PREVIEW_ROWS, unlisted=unlisted)


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
        # Only from DRAFT, in one statement: two Confirm clicks (or requests) at once both passed the
        # check above and started the import twice, the later one's counts overwriting the first's.
        started = ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.DRAFT).update(
            mapping=mapping, mode=mode, status=ImportJob.Status.QUEUED, background=background,
        )
        if not started:
            raise _reject("status", "invalid_state", f"Import #{job.pk} was already started.")
        job.mapping, job.mode, job.status, job.background = mapping, mode, ImportJob.Status.QUEUED, background
        mapping_mod.remember_mapping(headers, mapping)
        if background:
            from contacts.importing.tasks import run_import_job

            run_import_job.delay_on_commit(job.pk)
    if not background:
        job = run_job(job_id=job.pk, on_progress=on_progress)
    return job


def run_job(*, job_id: int, on_progress=None) -> ImportJob:
    """Run a queued import to the end (or until cancelled), recording progress after every batch.

    A job that is already running was started by an earlier delivery of the
    task. If that worker has stopped reporting (it was killed: Celery then
    delivers the task again), the job is failed so it can be reverted, or its
    cancel is finished here.
    """
    started = ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.QUEUED).update(
        status=ImportJob.Status.RUNNING, started_at=timezone.now()
    )
    job = ImportJob.objects.select_related("created_by").get(pk=job_id)
    if not started:
        if job.status == ImportJob.Status.RUNNING:
            fail_stale_jobs(job_id=job.pk)
        elif job.status == ImportJob.Status.CANCELLING and _claim_stale(job, ImportJob.Status.CANCELLING):
            _finish_cancel(job)
        job.refresh_from_db()
        return job
    actor = Actor.for_user(job.created_by) if job.created_by else Actor.for_system(f"import #{job.pk}")

    def progress(result: ImportResult) -> bool:
        if on_progress is not None:
            on_progress(result, job)
        # Filtering on RUNNING makes the progress write double as the cancel check:
        # once staff asked to cancel, it matches no row. heartbeat_at tells a live
        # worker from a dead one (see _heartbeat).
        return bool(
            ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.RUNNING).update(
                rows_done=result.rows, created_count=result.created, updated_count=result.updated,
                skipped_count=result.skipped, failed_count=result.failed, heartbeat_at=timezone.now(),
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
            # Not over a revert that began after the job was failed as stale (this worker was only slow).
            ImportJob.objects.filter(pk=job.pk).exclude(status=ImportJob.Status.REVERTED).update(
                status=ImportJob.Status.FAILED, finished_at=timezone.now(),
                # A file we could not read says so in its own words; anything else names the error's kind for staff.
                message=(str(exc) if isinstance(exc, UnreadableFile) else f"{type(exc).__name__}: {exc}")[:2000]
            )
            job.refresh_from_db()
            return job
        job.refresh_from_db()
        if result.cancelled:
            if job.status == ImportJob.Status.CANCELLING:
                _finish_cancel(job, result)
            # Otherwise it was failed as stale while this worker was slow: its message says what to do.
            return job
        job.rows_done, job.created_count, job.updated_count = result.rows, result.created, result.updated
        job.skipped_count, job.failed_count = result.skipped, result.failed
        job.rows_total = result.rows  # the exact count, now that every row was read
        job.status, job.finished_at = ImportJob.Status.DONE, timezone.now()
        fields = ["rows_done", "created_count", "updated_count", "skipped_count", "failed_count", "rows_total", "status", "finished_at"]
        if result.failed:
            errors.seek(0)
            stem = os.path.splitext(job.file_name)[0]
            # With a BOM, as our exports: Excel then opens the file to fix in UTF-8, not the ANSI code page.
            job.error_file.save(f"{stem}-errors.csv", File(io.BytesIO(errors.read().encode("utf-8-sig"))), save=False)
            fields.append("error_file")
        # A cancel that arrived after the last batch is too late: the import is done. A job
        # failed as stale meanwhile (and perhaps being reverted) is left as it is.
        done = ImportJob.objects.filter(
            pk=job.pk, status__in=[ImportJob.Status.RUNNING, ImportJob.Status.CANCELLING]
        ).update(**{f: getattr(job, f) for f in fields})
        if not done:
            job.refresh_from_db()
    return job


# --- A worker that stopped --------------------------------------------------------------
#
# While a job is RUNNING or CANCELLING, the worker sets heartbeat_at after every
# batch (of the import, or of the undo); until the first one started_at stands
# in. A job whose heartbeat is older than CRM_IMPORT_STALE_AFTER seconds (300) has
# no live worker: a batch takes seconds.


def _heartbeat(job: ImportJob) -> datetime:
    return job.heartbeat_at or job.started_at or job.created_at


def _stale_q(now: datetime) -> Q:
    cutoff = now - _stale_after()
    return (
        Q(heartbeat_at__lt=cutoff)
        | Q(heartbeat_at__isnull=True, started_at__lt=cutoff)
        | Q(heartbeat_at__isnull=True, started_at__isnull=True, created_at__lt=cutoff)
    )


def is_stale(job: ImportJob) -> bool:
    """Whether a running (cancelling, reverting) job's worker has stopped reporting progress."""
    return job.status in (ImportJob.Status.RUNNING, ImportJob.Status.CANCELLING, ImportJob.Status.REVERTING) and (
        _heartbeat(job) < timezone.now() - _stale_after()
    )


def seconds_until_stale(job: ImportJob) -> float | None:
    """When a job still in a worker's hands would be stale if that worker stopped now (None: it is not)."""
    if job.status not in (ImportJob.Status.RUNNING, ImportJob.Status.CANCELLING):
        return None
    return max((_heartbeat(job) + _stale_after() - timezone.now()).total_seconds(), 0) + 5


def _stopped_message(job: ImportJob) -> str:
    seconds = round(_stale_after().total_seconds())
    silent = _count(seconds // 60, "minute") if seconds >= 120 else _count(seconds, "second")
    return (
        f"The worker stopped at row {job.rows_done} of {max(job.rows_total, job.rows_done)} "
        f"(no progress for over {silent}). What it wrote is still there: revert the import, or import the file again."
    )


def fail_stale_jobs(*, job_id: int | None = None) -> int:
    """Mark running imports whose worker stopped as failed, saying where; return how many.

    Failed, an import can be reverted. Should its worker turn out to be only
    slow, it stops at its next batch, as when cancelled (its progress write
    finds the job no longer running).
    """
    now = timezone.now()
    stale = ImportJob.objects.filter(status=ImportJob.Status.RUNNING).filter(_stale_q(now))
    if job_id is not None:
        stale = stale.filter(pk=job_id)
    failed = 0
    for job in stale:
        # Conditional again: the worker may have reported, or someone cancelled, since the select.
        if ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.RUNNING).filter(_stale_q(now)).update(
            status=ImportJob.Status.FAILED, finished_at=now, message=_stopped_message(job)[:2000]
        ):
            failed += 1
            logger.warning("import #%s: its worker stopped at row %s; marked failed", job.pk, job.rows_done)
    return failed


def check_stale(job: ImportJob) -> ImportJob:
    """The job as it stands, failed first if its worker has stopped (for the pages that show it)."""
    if is_stale(job) and job.status == ImportJob.Status.RUNNING and fail_stale_jobs(job_id=job.pk):
        job.refresh_from_db()
    return job


def recover_stale_jobs() -> int:
    """Fail every stale running import, finish every stale cancel and revert (for a periodic task); return how many."""
    count = fail_stale_jobs()
    for job in ImportJob.objects.filter(status=ImportJob.Status.CANCELLING).filter(_stale_q(timezone.now())):
        if _claim_stale(job, ImportJob.Status.CANCELLING):
            _finish_cancel(job)
            count += 1
    for job in ImportJob.objects.filter(status=ImportJob.Status.REVERTING).filter(_stale_q(timezone.now())):
        # A revert whose worker (or web process) was killed part-way: finish it.
        if ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.REVERTING).filter(_stale_q(timezone.now())).update(
            heartbeat_at=timezone.now()
        ):
            finish_revert(job_id=job.pk, user_id=None, resumed=True)
            count += 1
    return count


def _claim_stale(job: ImportJob, status: str) -> bool:
    """Take over a stale job in ``status`` as CANCELLING, with a fresh heartbeat so that nobody else does too."""
    now = timezone.now()
    claimed = ImportJob.objects.filter(pk=job.pk, status=status).filter(_stale_q(now)).update(
        status=ImportJob.Status.CANCELLING, heartbeat_at=now
    )
    if claimed:
        # In memory heartbeat_at keeps the last one the worker wrote: _changed_since reads it as "ran until".
        job.status = ImportJob.Status.CANCELLING
    return bool(claimed)


# --- Cancel ------------------------------------------------------------------------------


def _finish_cancel(job: ImportJob, result: ImportResult | None = None) -> UndoReport:
    """Undo what a stopped import wrote and mark it cancelled, saying what was written and undone.

    ``result`` holds the counts up to the batch where a live import stopped
    (its last progress write, the one that found the cancel, did not save
    them); without it the job's saved counts are the last the worker reported.
    """
    counts = ["rows_done", "created_count", "updated_count", "skipped_count", "failed_count"]
    if result is not None:
        job.rows_done, job.created_count, job.updated_count = result.rows, result.created, result.updated
        job.skipped_count, job.failed_count = result.skipped, result.failed
        ImportJob.objects.filter(pk=job.pk).update(**{f: getattr(job, f) for f in counts})
    # The undo log, not the row counts: a row may have merged into a contact another row created.
    written = dict(
        ImportChange.objects.filter(job=job).order_by().values("created").annotate(n=Count("contact_id", distinct=True)).values_list("created", "n")
    )
    try:
        report = _undo(
            job, Actor.for_user(job.created_by) if job.created_by else Actor.for_system("import"), "Cancelled",
            heartbeat=ImportJob.Status.CANCELLING,
        )
    except Exception as exc:
        # Batches undone so far stay undone; as a failed import it can be reverted again to finish.
        logger.exception("cancelling import #%s stopped part-way", job.pk)
        ImportJob.objects.filter(pk=job.pk).update(
            status=ImportJob.Status.FAILED, finished_at=timezone.now(),
            message=f"Cancel stopped part-way ({exc.__class__.__name__}: {exc}); revert the import to finish undoing it."[:2000],
        )
        raise
    job.status, job.finished_at = ImportJob.Status.CANCELLED, timezone.now()
    job.message = _cancelled_message(job, created=written.get(True, 0), changed=written.get(False, 0), report=report)[:2000]
    job.save(update_fields=["status", "finished_at", "message"])
    return report


def _cancelled_message(job: ImportJob, *, created: int, changed: int, report: UndoReport) -> str:
    at = f"Cancelled at row {job.rows_done} of {max(job.rows_total, job.rows_done)}."
    if not (created or changed):
        return f"{at} Nothing had been written."
    return (
        f"{at} It had written {_count(created, 'new contact')} and changed {_count(changed, 'existing contact')}; "
        f"undone: {report.describe()}"
    )


def cancel_import(*, job: ImportJob, actor: Actor) -> ImportJob:
    """Stop an import and undo what it wrote.

    A draft or queued import has written nothing and is cancelled at once. A
    running one is asked to stop at its next batch and undoes its own writes.
    One whose worker has stopped (killed mid-import) has nobody to ask, so its
    writes are undone here, before this returns.
    """
    now = timezone.now()
    if ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.DRAFT).update(
        status=ImportJob.Status.CANCELLED, finished_at=now
    ) or ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.QUEUED).update(
        status=ImportJob.Status.CANCELLED, finished_at=now, message="Cancelled before it started; nothing was written."
    ):
        # run_job only starts a QUEUED job, so the queued task now does nothing.
        job.refresh_from_db()
        return job
    job.refresh_from_db()
    if job.status in (ImportJob.Status.RUNNING, ImportJob.Status.CANCELLING) and _claim_stale(job, job.status):
        try:
            _finish_cancel(job)
        except Exception as exc:
            job.refresh_from_db()
            raise _reject("status", "cancel_incomplete", job.message or f"Cancelling stopped part-way ({exc.__class__.__name__}).") from exc
        job.refresh_from_db()
        return job
    moved = ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.RUNNING).update(status=ImportJob.Status.CANCELLING)
    job.refresh_from_db()
    if not moved and job.status != ImportJob.Status.CANCELLING:
        raise _reject("status", "invalid_state", f"Import #{job.pk} is {job.get_status_display().lower()}; only a queued or running import can be cancelled.")
    return job


def revert_import(*, job: ImportJob, actor: Actor) -> ImportJob:
    """Undo a finished import, except what others changed since; the job's message says what was left alone."""
    return revert_import_reporting(job=job, actor=actor)[0]


def revert_import_reporting(*, job: ImportJob, actor: Actor) -> tuple[ImportJob, UndoReport]:
    """Undo a finished import and return what was undone and what was left alone, and why.

    Deletes the contacts it created unless someone has changed them since (a
    note, a task, an edit...), and restores the fields and tags it changed
    unless someone has changed that field or tag since, or its old phone or
    email now belongs to another contact. The history entries after the
    import's own tell what was changed since. A running import whose worker
    has stopped counts as failed, so it can be reverted too.
    """
    previous = _claim_revert(job)
    resumed = previous == ImportJob.Status.REVERTING  # taking over a revert that stopped part-way
    return _finish_revert(job, actor, restore=None if resumed else previous, resumed=resumed)


def start_revert(*, job: ImportJob, actor: Actor) -> tuple[ImportJob, UndoReport | None]:
    """Revert a small import at once; a large one on a Celery worker (report None), as large imports run.

    Inside a web request a large revert ran into the server's timeout: killed
    part-way, it left the job "Reverted" with half its contacts still there.
    """
    if ImportChange.objects.filter(job=job).count() <= _sync_max_rows():
        return revert_import_reporting(job=job, actor=actor)
    from contacts.importing.tasks import revert_import_job

    _claim_revert(job)
    revert_import_job.delay_on_commit(job.pk, actor.user.pk if actor.user else None)
    job.refresh_from_db()
    return job, None


def finish_revert(*, job_id: int, user_id: int | None, resumed: bool = False) -> ImportJob:
    """The worker's part of start_revert (and of a revert whose worker stopped: it resumes)."""
    job = ImportJob.objects.get(pk=job_id)
    if job.status != ImportJob.Status.REVERTING:
        return job  # finished meanwhile, or a redelivered task
    user = get_user_model().objects.filter(pk=user_id).first() if user_id else None
    actor = Actor.for_user(user) if user else Actor.for_system("import revert")
    try:
        return _finish_revert(job, actor, restore=None, resumed=resumed)[0]
    except InputRejected:
        job.refresh_from_db()
        return job


def _claim_revert(job: ImportJob) -> str:
    """Take the job for reverting (REVERTING, with a fresh heartbeat); return the status it had."""
    check_stale(job)
    now = timezone.now()
    revertable = Q(status__in=[ImportJob.Status.DONE, ImportJob.Status.FAILED]) | (
        Q(status=ImportJob.Status.REVERTING) & _stale_q(now)  # a revert whose worker stopped: take it over
    )
    job.refresh_from_db()
    previous = job.status
    if not ImportJob.objects.filter(revertable, pk=job.pk).update(status=ImportJob.Status.REVERTING, heartbeat_at=now):
        job.refresh_from_db()
        raise _reject("status", "invalid_state", f"Import #{job.pk} is {job.get_status_display().lower()}; only a finished import can be reverted.")
    job.status = ImportJob.Status.REVERTING
    return previous


def _finish_revert(
    job: ImportJob, actor: Actor, *, restore: str | None, resumed: bool = False
) -> tuple[ImportJob, UndoReport]:
    try:
        report = _undo(job, actor, "Reverted", heartbeat=ImportJob.Status.REVERTING)
    except Exception as exc:
        # Batches undone so far stay undone (each committed whole); reverting again finishes the
        # rest, which skips what is already back. A killed worker leaves the job "Reverting" with a
        # stale heartbeat instead: the next revert (or recover_stale_imports) takes it over.
        logger.exception("reverting import #%s stopped part-way", job.pk)
        ImportJob.objects.filter(pk=job.pk).update(
            status=restore or ImportJob.Status.FAILED, reverted_at=None,
            **({} if restore else {"message": f"Reverting stopped part-way ({exc.__class__.__name__}); revert again to finish."}),
        )
        raise _reject(
            "status", "revert_incomplete",
            f"Reverting import #{job.pk} stopped part-way ({exc.__class__.__name__}); what was reverted stays "
            "reverted. Try again; if it stops again, the server log has the details.",
        ) from exc
    job.refresh_from_db()
    if resumed:
        # The stopped run's deletions are not in this run's report: count every created contact now gone.
        report.deleted = ImportChange.objects.filter(job=job, created=True).exclude(
            contact_id__in=Contact.objects.values("id")
        ).count()
    job.status, job.reverted_at = ImportJob.Status.REVERTED, timezone.now()
    # A failed import keeps why it failed; the revert's report goes after it.
    job.message = "\n".join(filter(None, [job.message, f"Reverted: {report.describe()}"]))[-2000:]
    job.save(update_fields=["status", "reverted_at", "message"])
    return job, report


# Undo records name a phone or an email by all its columns; history names them "phone" and "email".
_HISTORY_KEY = {"phone_e164": "phone", "phone_extension": "phone", "email_normalized": "email"}
_KEY_COLUMNS = {"phone": ("phone", "phone_e164", "phone_extension"), "email": ("email", "email_normalized")}
# History entries that record no change to the contact itself.
_NOT_CHANGES = {
    HistoryEntry.Action.CHANGE_REQUESTED, HistoryEntry.Action.CHANGE_REJECTED, HistoryEntry.Action.POSSIBLE_DUPLICATE,
}
# Summaries of the history entries imports write: "Updated: import #12 (file.csv)", "Reverted import #12 (...)".
_IMPORT_SUMMARY = re.compile(r"(?:Created: |Updated: |Reverted |Cancelled )import #(\d+) \(")
REPORT_EXAMPLES = 10


@dataclass
class UndoReport:
    """What undoing an import did, and what it left alone and why."""

    deleted: int = 0
    restored: int = 0
    kept_contacts: list[str] = field(default_factory=list)  # "#12": created by the import, changed since
    kept_fields: list[str] = field(default_factory=list)  # "#7 company": changed since the import
    taken_fields: list[str] = field(default_factory=list)  # "#7 phone (now #9's)"
    kept_tags: list[str] = field(default_factory=list)  # "#7 Lead": removed or added again since
    merged_contacts: list[str] = field(default_factory=list)  # "#12 into #1": created, then merged away
    gone_contacts: list[str] = field(default_factory=list)  # "#12": created, then deleted by someone

    @property
    def skipped(self) -> int:
        return (len(self.kept_contacts) + len(self.kept_fields) + len(self.taken_fields) + len(self.kept_tags)
                + len(self.merged_contacts) + len(self.gone_contacts))

    def describe(self) -> str:
        parts = [f"{_count(self.deleted, 'created contact')} deleted, {_count(self.restored, 'contact')} restored."]
        for items, what, why in (
            (self.kept_contacts, "created contact", "kept: changed by others since the import"),
            (self.kept_fields, "field", "left as is: changed by others since the import"),
            (self.taken_fields, "phone or email", "not restored: the old value now belongs to another contact"),
            (self.kept_tags, "tag", "left as is: changed by others since the import"),
            (self.merged_contacts, "created contact", "not deleted: merged into another contact since, which keeps "
                                                       "what it brought"),
            (self.gone_contacts, "created contact", "already deleted by someone else"),
        ):
            if items:
                shown = ", ".join(items[:REPORT_EXAMPLES]) + (f" and {len(items) - REPORT_EXAMPLES} more" if len(items) > REPORT_EXAMPLES else "")
                parts.append(f"{_count(len(items), what)} {why} ({shown}).")
        return " ".join(parts)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _undo(job: ImportJob, actor: Actor, verb: str, *, heartbeat: str | None = None) -> UndoReport:
    """Walk the import's undo log newest first, one batch (fixed query count) at a time.

    With ``heartbeat`` (the job's status while it undoes: cancelling or reverting), each
    batch refreshes the job's heartbeat, so a long undo is not taken for a stopped worker.
    """
    report = UndoReport()
    last_id = None
    while True:
        records = ImportChange.objects.filter(job=job).order_by("-id")
        if last_id is not None:
            records = records.filter(id__lt=last_id)
        batch = list(records[:REVERT_BATCH])
        if not batch:
            return report
        last_id = batch[-1].id
        with transaction.atomic():
            _undo_batch(batch, job=job, actor=actor, summary=f"{verb} import #{job.pk} ({job.file_name})", report=report)
        if heartbeat:
            ImportJob.objects.filter(pk=job.pk, status=heartbeat).update(heartbeat_at=timezone.now())


@dataclass
class _ChangedSince:
    """What others did to one contact after the import wrote it, from its history."""

    fields: set[str] = field(default_factory=set)  # history keys: "company", "phone", "custom.budget"
    tags: set[str] = field(default_factory=set)  # names of tags added or removed


def _changed_since(job: ImportJob, contact_ids: set[int]) -> dict[int, _ChangedSince]:
    """Return, per contact, the changes others made after the import's first history entry on it (one query).

    Not counted: the entries of this import and of its revert, and what the
    import set off itself while it ran (automation rules run with source
    Import: an owner, a task, a tag), which goes with it.
    """
    since = job.started_at or job.created_at
    ran_until = job.finished_at or job.heartbeat_at or timezone.now()
    rows = (
        HistoryEntry.objects.filter(contact_id__in=contact_ids, created_at__gte=since)
        .order_by("id")
        .values_list("id", "contact_id", "action", "summary", "source", "created_at", "changes")
    )
    first_own: dict[int, int] = {}
    others = []
    for entry_id, contact_id, action, summary, source, created_at, changes in rows:
        match = _IMPORT_SUMMARY.match(summary)
        if match is not None and int(match[1]) == job.pk:
            first_own.setdefault(contact_id, entry_id)
        elif match is None and source == Source.IMPORT and created_at <= ran_until:
            continue
        else:
            others.append((entry_id, contact_id, action, changes))
    changed: dict[int, _ChangedSince] = {}
    for entry_id, contact_id, action, changes in others:
        if entry_id < first_own.get(contact_id, 0):
            continue  # before the import wrote this contact: the import's undo record already holds it
        found = changed.setdefault(contact_id, _ChangedSince())
        if action in _NOT_CHANGES or not isinstance(changes, dict):
            continue
        found.fields.update(changes)
        for side in changes.get("tags") or []:
            if isinstance(side, list):
                found.tags.update(str(name) for name in side)
    return changed


def _undo_batch(records: list[ImportChange], *, job: ImportJob, actor: Actor, summary: str, report: UndoReport) -> None:
    changed = _changed_since(job, {r.contact_id for r in records})
    created = {r.contact_id for r in records if r.created}
    if created:
        # Deleted first, so a phone or email they hold is free for the contacts restored below.
        kept = sorted(created & changed.keys())
        report.kept_contacts.extend(f"#{c}" for c in kept)
        to_delete = created - set(kept)
        present = set(Contact.objects.filter(pk__in=to_delete).values_list("pk", flat=True))
        _total, per_model = Contact.objects.filter(pk__in=present, source=Source.IMPORT).delete()
        report.deleted += per_model.get(Contact._meta.label, 0)
        # Those already gone were merged into another contact or deleted: said, not passed over in silence.
        missing = to_delete - present
        if missing:
            merged = dict(MergedContact.objects.filter(merged_id__in=missing).values_list("merged_id", "contact_id"))
            report.merged_contacts.extend(f"#{c} into #{merged[c]}" for c in sorted(merged))
            report.gone_contacts.extend(f"#{c}" for c in sorted(missing - merged.keys()))
    updated = [r for r in records if not r.created]
    if not updated:
        return
    # Locked, so an edit cannot slip in between the check against history and the write.
    contacts = {
        c.pk: c for c in Contact.objects.select_for_update().filter(pk__in={r.contact_id for r in updated}).order_by("pk")
    }
    tag_ids = {t for r in updated for t in r.tags_added}
    tag_names = dict(Tag.objects.filter(pk__in=tag_ids).values_list("pk", "name")) if tag_ids else {}
    plans: list[_Restore] = []
    for record in updated:
        contact = contacts.get(record.contact_id)
        if contact is None:
            continue  # deleted since; nothing to restore
        since = changed.get(contact.pk, _ChangedSince())
        plan = _Restore(contact=contact)
        for key, old in record.before.items():
            name = _HISTORY_KEY.get(key, key)
            if name in since.fields:
                if key == name:
                    report.kept_fields.append(f"#{contact.pk} {name}")
                continue
            plan.before[key] = old
        for tag_id in record.tags_added:
            name = tag_names.get(tag_id, str(tag_id))
            if name in since.tags:
                report.kept_tags.append(f"#{contact.pk} {name}")
            else:
                plan.tags[tag_id] = name
        plans.append(plan)
    _drop_taken_keys(plans, report)
    for plan in plans:
        plan.apply()
    _save_restored([p for p in plans if p.changes], report)
    tag_pairs = {(p.contact.pk, t) for p in plans for t in p.tags}
    if tag_pairs:
        query = Q()
        for contact_id, tag_id in tag_pairs:
            query |= Q(contact_id=contact_id, tag_id=tag_id)
        ContactTag.objects.filter(contact_id__in={c for c, _ in tag_pairs}).filter(query).delete()
    entries = []
    for plan in plans:
        visible = {k: v for k, v in plan.changes.items() if k not in _HISTORY_KEY}
        if plan.tags:
            visible["tags"] = [sorted(plan.tags.values()), []]
        if visible:
            report.restored += 1
            entries.append(
                HistoryEntry(
                    contact=plan.contact, action=HistoryEntry.Action.UPDATED, changes=_jsonable(visible),
                    summary=summary[:255], source=Source.IMPORT, actor_user=actor.user,
                    actor_agent=actor.agent, actor_label=actor.label[:160],
                )
            )
    HistoryEntry.objects.bulk_create(entries)


@dataclass
class _Restore:
    """The old values one contact gets back, and (once applied) each restored field's [current, old]."""

    contact: Contact
    before: dict = field(default_factory=dict)  # undo-record key -> old value
    tags: dict[int, str] = field(default_factory=dict)  # tags to remove: id -> name
    changes: dict = field(default_factory=dict)

    def drop(self, name: str) -> None:
        for key in _KEY_COLUMNS[name]:
            self.before.pop(key, None)

    def apply(self) -> None:
        contact = self.contact
        for key, old in self.before.items():
            if key.startswith("custom."):
                custom = dict(contact.custom or {})
                self.changes[key] = [custom.get(key[7:]), old]
                if old is None:
                    custom.pop(key[7:], None)
                else:
                    custom[key[7:]] = old
                contact.custom = custom
            else:
                if key == "birthday":
                    old = old or None  # a date column: empty is NULL, not ""
                    self.changes[key] = [getattr(contact, key), old]
                    contact.birthday = old
                    continue
                self.changes[key] = [getattr(contact, key), old]
                setattr(contact, key, old if old is not None else "")

    def undo(self, name: str) -> None:
        """Put back the current values of a phone or email that could not be restored."""
        for key in _KEY_COLUMNS[name]:
            if key in self.changes:
                setattr(self.contact, key, self.changes.pop(key)[0])
        self.drop(name)

    def fields(self) -> list[str]:
        return sorted({"custom" if k.startswith("custom.") else k for k in self.changes})


def _drop_taken_keys(plans: list[_Restore], report: UndoReport) -> None:
    """Leave out old phones and emails another contact holds now (one query): restoring them would break dedup."""
    phones = {p.before["phone_e164"] for p in plans if p.before.get("phone_e164")}
    emails = {p.before["email_normalized"] for p in plans if p.before.get("email_normalized")}
    if not phones and not emails:
        return
    holders = Contact.objects.filter(
        (Q(phone_e164__in=phones) & ~Q(phone_e164="")) | (Q(email_normalized__in=emails) & ~Q(email_normalized=""))
    ).values_list("pk", "phone_e164", "email_normalized")
    by_phone = {phone: pk for pk, phone, _email in holders if phone in phones}
    by_email = {email: pk for pk, _phone, email in holders if email in emails}
    for plan in plans:
        for name, key, holder_of in (("phone", "phone_e164", by_phone), ("email", "email_normalized", by_email)):
            holder = holder_of.get(plan.before.get(key) or "")
            if holder is not None and holder != plan.contact.pk:
                report.taken_fields.append(f"#{plan.contact.pk} {name} (now #{holder}'s)")
                plan.drop(name)


def _save_restored(plans: list[_Restore], report: UndoReport) -> None:
    if not plans:
        return
    now = timezone.now()
    for plan in plans:
        plan.contact.updated_at = now
    fields = sorted({f for p in plans for f in p.fields()})
    try:
        with transaction.atomic():
            Contact.objects.bulk_update([p.contact for p in plans], [*fields, "updated_at"])
        return
    except IntegrityError:
        pass
    # Another writer took an old phone or email after the check above: save contact by
    # contact, and where that one clashes, restore everything but its phone and email.
    for plan in plans:
        try:
            with transaction.atomic():
                plan.contact.save(update_fields=[*plan.fields(), "updated_at"])
            continue
        except IntegrityError:
            pass
        contact = plan.contact
        old_phone, old_email = contact.phone_e164, contact.email_normalized
        holders = Contact.objects.exclude(pk=contact.pk).filter(
            (Q(phone_e164=old_phone) & ~Q(phone_e164="")) | (Q(email_normalized=old_email) & ~Q(email_normalized=""))
        ).values_list("pk", "phone_e164", "email_normalized")
        for pk, phone, email in holders:
            for name, taken in (("phone", phone == old_phone), ("email", email == old_email)):
                if taken and any(k in plan.changes for k in _KEY_COLUMNS[name]):
                    report.taken_fields.append(f"#{contact.pk} {name} (now #{pk}'s)")
                    plan.undo(name)
        if plan.changes:
            contact.save(update_fields=[*plan.fields(), "updated_at"])


def _jsonable(value):
    import datetime as dt

    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return value


ACTIVE_STATUSES = (ImportJob.Status.QUEUED, ImportJob.Status.RUNNING, ImportJob.Status.CANCELLING, ImportJob.Status.REVERTING)


def visible_import_jobs(user):
    """The imports ``user`` may follow: their own, or all for those who may view import jobs."""
    jobs = ImportJob.objects.exclude(status=ImportJob.Status.DRAFT)
    return jobs if user.has_perm("contacts.view_importjob") else jobs.filter(created_by=user)


def recent_imports_of(user, *, limit: int = 3) -> list[ImportJob]:
    """``user``'s imports running now or finished in the last day, newest first (the contact list shows them)."""
    since = timezone.now() - dt.timedelta(days=1)
    return list(
        ImportJob.objects.filter(created_by=user)
        .filter(Q(status__in=ACTIVE_STATUSES) | Q(finished_at__gte=since))
        .order_by("-created_at")[:limit]
    )


def progress(job: ImportJob) -> dict:
    """Rows done, rate (rows/s) and seconds left, for the admin and web progress pages."""
    total = max(job.rows_total, job.rows_done)
    elapsed = ((job.finished_at or timezone.now()) - job.started_at).total_seconds() if job.started_at else 0
    rate = job.rows_done / elapsed if elapsed > 0 else 0.0
    stalled = is_stale(job)
    left = (total - job.rows_done) / rate if rate > 0 and job.status in ACTIVE and not stalled else None
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
        "finished": job.status not in (*ACTIVE, ImportJob.Status.DRAFT, ImportJob.Status.REVERTING),
        "error_file_url": reverse("admin:contacts_contact_import_errors", args=[job.pk]) if job.error_file else "",
        "message": job.message,
        # A cancel whose worker stopped: pressing Cancel again finishes it without one.
        "stalled": stalled,
    }

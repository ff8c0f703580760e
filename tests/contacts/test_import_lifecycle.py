"""An import's life when things go wrong around it: edits racing a batch, a killed worker, cancel, a refused upload."""

import datetime as dt
import threading

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.db import connection, connections
from django.urls import reverse
from django.utils import timezone
from freezegun import freeze_time

from contacts import services as contact_services
from contacts.importing import engine, services, tasks, writers
from contacts.models import Contact, CustomField, HistoryEntry, ImportJob, Source
from crm_hub.actors import Actor
from crm_hub.errors import InputRejected
from tests.contacts.factories import CustomFieldFactory, UserFactory
from tests.contacts.test_import import csv_bytes, existing, existing_and_nine_new, upload
from tests.contacts.test_import_files import stored_files

pytestmark = pytest.mark.django_db

LEASE = dt.timedelta(seconds=300)  # CRM_IMPORT_STALE_AFTER's default


def later(minutes: int = 10):
    """The clock past the stale lease: a worker silent that long has stopped."""
    return freeze_time(timezone.now() + dt.timedelta(minutes=minutes))


# --- an edit made while a batch runs ----------------------------------------------------------


@pytest.fixture(params=["native", "orm"])
def writer_kind(request, monkeypatch):
    """The backend's own writer (PostgreSQL: COPY and UPDATE ... FROM), and the ORM one on every backend."""
    if request.param == "orm":
        monkeypatch.setattr(engine, "writer_for", lambda _connection: writers.OrmWriter())
    return request.param


def edit_after_lookup(monkeypatch, edit):
    """Run ``edit`` once, between a batch's lookup of existing contacts and its writes."""
    done = []
    for writer_class in (writers.OrmWriter, writers.PostgresWriter):
        real = writer_class.fetch_existing

        def fetch_then_edit(self, phones, emails, real=real):
            rows = real(self, phones, emails)
            if not done:
                done.append(1)
                edit()
            return rows

        monkeypatch.setattr(writer_class, "fetch_existing", fetch_then_edit)
    return done


def sales_edit(contact_id: int, data: dict, custom: dict | None = None):
    sales = Actor.for_user(UserFactory(username=f"sales{contact_id}"))
    return contact_services.update_contact(
        contact=Contact.objects.get(pk=contact_id), data=data, custom=custom, actor=sales, source=Source.MANUAL
    )


def test_an_edit_of_other_fields_between_a_batchs_lookup_and_its_update_survives(staff_actor, monkeypatch, writer_kind):
    CustomFieldFactory(key="budget", type=CustomField.Type.NUMBER)
    CustomFieldFactory(key="tier", type=CustomField.Type.TEXT)
    ann = contact_services.upsert_contact(
        data={"name": "Ann", "email": "ann@example.com", "phone": "+1 561 555 0192 x12", "company": "Old", "position": "Clerk"},
        custom={"budget": 1, "tier": "bronze"}, actor=staff_actor, source=Source.MANUAL,
    ).contact
    done = edit_after_lookup(
        monkeypatch, lambda: sales_edit(ann.pk, {"position": "Director", "birthday": "1980-01-02"}, {"tier": "gold"})
    )

    job = services.create_import_job(
        upload=upload([["ann@example.com", "+1 561 555 0193", "New", "99"]], headers=["Email", "Phone", "Company", "Budget"]),
        actor=staff_actor,
    )
    job = services.confirm_import(job=job, mapping=job.mapping, mode="create_update", actor=staff_actor)

    assert done and (job.status, job.updated_count) == ("done", 1)
    ann.refresh_from_db()
    # The import's changes, including an extension that became empty with the new phone ...
    assert (ann.company, ann.phone_e164, ann.phone_extension, ann.custom["budget"]) == ("New", "+15615550193", "", 99)
    # ... and the salesperson's, which their history entry says happened.
    assert (ann.position, str(ann.birthday), ann.custom["tier"]) == ("Director", "1980-01-02", "gold")
    edit = HistoryEntry.objects.get(contact=ann, action=HistoryEntry.Action.UPDATED, actor_label__startswith="sales")
    assert edit.changes["position"] == ["Clerk", "Director"]


def test_the_batch_update_merges_custom_values_as_a_patch_and_drops_only_removed_keys(staff_actor, writer_kind):
    """The engine never removes a custom key today; the writers' patch must still say so if it does."""
    ann = contact_services.upsert_contact(
        data={"name": "Ann", "email": "ann@example.com"}, custom={}, actor=staff_actor, source=Source.MANUAL
    ).contact
    Contact.objects.filter(pk=ann.pk).update(custom={"a": 1, "b": 2, "c": 3})
    writer = engine.writer_for(connection)
    [row] = writer.fetch_existing(set(), {"ann@example.com"})
    state = engine._state_of(row)
    state["custom"] = {"a": 1, "c": 30, "d": None}  # b removed, c changed, d set to null
    Contact.objects.filter(pk=ann.pk).update(custom={"a": 1, "b": 2, "c": 3, "e": 5})  # e: someone else's, since
    writer.update_contacts([(ann.pk, state)], now=timezone.now())
    ann.refresh_from_db()
    assert ann.custom == {"a": 1, "c": 30, "d": None, "e": 5}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL")
def test_an_edit_committed_by_another_connection_during_a_batch_survives(monkeypatch):
    """The real race: the edit commits on its own connection while the batch's transaction is open."""
    staff = Actor.for_user(UserFactory(username="importer", is_staff=True))
    CustomFieldFactory(key="tier", type=CustomField.Type.TEXT)
    CustomFieldFactory(key="budget", type=CustomField.Type.NUMBER)
    ann = contact_services.upsert_contact(
        data={"name": "Ann", "email": "ann@example.com", "position": "Clerk"}, custom={"tier": "bronze"},
        actor=staff, source=Source.MANUAL,
    ).contact
    errors = []

    def edit_elsewhere():
        def run():
            try:
                sales_edit(ann.pk, {"position": "Director"}, {"tier": "gold"})
            except Exception as exc:  # asserted below
                errors.append(exc)
            finally:
                connections.close_all()

        thread = threading.Thread(target=run)
        thread.start()
        thread.join(30)

    edit_after_lookup(monkeypatch, edit_elsewhere)
    job = services.create_import_job(
        upload=upload([["ann@example.com", "New", "5"]], headers=["Email", "Company", "Budget"]), actor=staff
    )
    services.confirm_import(job=job, mapping=job.mapping, mode="create_update", actor=staff)
    assert errors == []
    ann.refresh_from_db()
    assert (ann.company, ann.position, ann.custom) == ("New", "Director", {"tier": "gold", "budget": 5})


# --- a worker killed mid-import ----------------------------------------------------------------


class WorkerKilled(BaseException):
    """What kill -9 looks like from inside: nothing after it runs, no except Exception catches it."""


def killed_import(actor, settings) -> tuple[ImportJob, Contact]:
    """An import killed in its second batch: batches 1 and 2 written, progress saved for batch 1 only."""
    settings.CRM_IMPORT_BATCH_SIZE = 2
    old, job = existing_and_nine_new(actor)
    batches = []

    def die_in_second_batch(result, running_job):
        batches.append(result.rows)
        if len(batches) == 2:
            raise WorkerKilled

    with pytest.raises(WorkerKilled):
        services.confirm_import(job=job, mapping=job.mapping, mode="create_update", actor=actor, on_progress=die_in_second_batch)
    job.refresh_from_db()
    assert (job.status, job.rows_done, Contact.objects.count()) == ("running", 2, 4)
    return job, old


def test_a_redelivered_task_fails_a_job_whose_worker_stopped_and_it_can_be_reverted(staff_actor, settings):
    job, old = killed_import(staff_actor, settings)

    tasks.run_import_job(job.pk)  # redelivered at once: the heartbeat is fresh, the worker may be alive
    job.refresh_from_db()
    assert job.status == "running"

    with later():
        tasks.run_import_job(job.pk)
        job.refresh_from_db()
        assert job.status == "failed"
        assert job.message.startswith("The worker stopped at row 2 of 10 (no progress for over 5 minutes).")
        assert "revert the import, or import the file again" in job.message

        job = services.revert_import(job=job, actor=staff_actor)
    assert job.status == "reverted"
    assert list(Contact.objects.values_list("name", flat=True)) == ["Old"]
    old.refresh_from_db()
    assert old.name == "Old"


def test_a_redelivered_task_looks_again_when_the_first_worker_would_be_stale(staff_actor, settings, monkeypatch):
    job, _old = killed_import(staff_actor, settings)
    scheduled = []
    monkeypatch.setattr(tasks.run_import_job, "apply_async", lambda args, countdown: scheduled.append((args, countdown)))
    tasks.run_import_job.push_request(called_directly=False, is_eager=False)  # as a worker runs it
    try:
        tasks.run_import_job.run(job.pk)
    finally:
        tasks.run_import_job.pop_request()
    [(args, countdown)] = scheduled
    assert args == (job.pk,) and LEASE.total_seconds() - 10 < countdown <= LEASE.total_seconds() + 5


def test_the_progress_page_of_a_job_whose_worker_stopped_says_so_and_offers_revert(staff_actor, settings, admin_client):
    job, _old = killed_import(staff_actor, settings)
    url = reverse("admin:contacts_contact_import_progress", args=[job.pk])
    page = admin_client.get(url).content.decode()
    assert "Cancel import" in page and "Revert this import" not in page

    with later():
        data = admin_client.get(reverse("admin:contacts_contact_import_progress_json", args=[job.pk])).json()
        assert (data["status"], data["finished"]) == ("failed", True)
        page = admin_client.get(url).content.decode()
    assert "The worker stopped at row 2 of 10" in page and "Revert this import" in page


def test_the_import_history_does_not_list_a_job_whose_worker_stopped_as_running(staff_actor, settings, admin_client):
    job, _old = killed_import(staff_actor, settings)
    with later():
        admin_client.get(reverse("admin:contacts_importjob_changelist"))
    job.refresh_from_db()
    assert job.status == "failed"


def test_cancel_of_a_job_whose_worker_stopped_undoes_it_without_a_worker(staff_actor, settings, admin_client):
    job, old = killed_import(staff_actor, settings)
    cancel = reverse("admin:contacts_contact_import_cancel", args=[job.pk])
    with later():
        response = admin_client.post(cancel, follow=True)
    job.refresh_from_db()
    assert job.status == "cancelled"
    assert list(Contact.objects.values_list("name", flat=True)) == ["Old"]
    old.refresh_from_db()
    assert old.name == "Old"
    shown = response.content.decode()
    assert "was cancelled" in shown and "It had written 3 new contacts and changed 1 existing contact" in shown


def test_a_cancel_asked_just_before_the_worker_died_is_finished_by_cancel_again(staff_actor, settings, admin_client):
    job, old = killed_import(staff_actor, settings)
    cancel = reverse("admin:contacts_contact_import_cancel", args=[job.pk])
    progress = reverse("admin:contacts_contact_import_progress", args=[job.pk])
    admin_client.post(cancel)
    job.refresh_from_db()
    assert job.status == "cancelling"  # a live worker would stop at its next batch; this one never will

    with later():
        page = admin_client.get(progress).content.decode()
        assert "Finish cancelling" in page and "the worker cancelling this import has stopped" in page
        admin_client.post(cancel)
    job.refresh_from_db()
    assert job.status == "cancelled"
    assert list(Contact.objects.values_list("name", flat=True)) == ["Old"]
    old.refresh_from_db()
    assert old.name == "Old"


def test_the_periodic_task_finishes_a_cancel_whose_worker_stopped(staff_actor, settings):
    job, old = killed_import(staff_actor, settings)
    services.cancel_import(job=job, actor=staff_actor)
    assert tasks.recover_stale_imports() == 0  # still within the lease: the worker may yet stop by itself
    with later():
        assert tasks.recover_stale_imports() == 1
    job.refresh_from_db()
    assert job.status == "cancelled" and list(Contact.objects.values_list("name", flat=True)) == ["Old"]


def test_a_slow_worker_taken_for_dead_stops_at_its_next_batch_and_leaves_the_job_failed(staff_actor, settings):
    settings.CRM_IMPORT_BATCH_SIZE = 2
    rows = [[f"P{i}", "", f"p{i}@example.com", "", ""] for i in range(6)]
    job = services.create_import_job(upload=upload(rows), actor=staff_actor)

    def stall_in_first_batch(result, running_job):
        if result.rows == 2:
            with later():
                services.check_stale(ImportJob.objects.get(pk=running_job.pk))

    job = services.confirm_import(job=job, mapping=job.mapping, mode="create_update", actor=staff_actor, on_progress=stall_in_first_batch)
    assert job.status == "failed" and job.message.startswith("The worker stopped at row 0 of 6")
    assert Contact.objects.count() == 2  # it wrote no batch after it was failed
    services.revert_import(job=job, actor=staff_actor)
    assert Contact.objects.count() == 0


# --- what a cancelled job reports ----------------------------------------------------------------


def test_a_cancelled_job_reports_what_it_wrote_and_what_was_undone(staff_actor, settings, admin_client):
    settings.CRM_IMPORT_BATCH_SIZE = 2
    old = existing(staff_actor, name="Old", email="old@example.com")
    rows = [["Changed", "", "old@example.com", "", ""], ["New", "", "new@example.com", "", ""], ["Later", "", "later@example.com", "", ""]]
    job = services.create_import_job(upload=upload(rows), actor=staff_actor)

    def cancel_in_first_batch(result, running_job):
        services.cancel_import(job=running_job, actor=staff_actor)

    job = services.confirm_import(job=job, mapping=job.mapping, mode="create_update", actor=staff_actor, on_progress=cancel_in_first_batch)

    assert job.status == "cancelled"
    assert (job.rows_done, job.created_count, job.updated_count) == (2, 1, 1)
    assert job.message == (
        "Cancelled at row 2 of 3. It had written 1 new contact and changed 1 existing contact; "
        "undone: 1 created contact deleted, 1 contact restored."
    )
    old.refresh_from_db()
    assert (old.name, Contact.objects.count()) == ("Old", 1)
    page = admin_client.get(reverse("admin:contacts_contact_import_progress", args=[job.pk])).content.decode()
    assert "2 / 3" in page and "Created 1 · Updated 1" in page and "1 created contact deleted, 1 contact restored" in page
    web = admin_client.get(reverse("importing:progress", args=[job.pk])).content.decode()
    assert "It had written 1 new contact and changed 1 existing contact" in web


def test_a_queued_import_cancelled_says_nothing_was_written(staff_actor, settings, django_capture_on_commit_callbacks):
    settings.CRM_IMPORT_SYNC_MAX_ROWS = 1
    job = services.create_import_job(upload=upload([["A", "", "a@example.com", "", ""], ["B", "", "b@example.com", "", ""]]), actor=staff_actor)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job = services.confirm_import(job=job, mapping=job.mapping, mode="create_update", actor=staff_actor)
    job = services.cancel_import(job=job, actor=staff_actor)
    assert (job.status, job.message) == ("cancelled", "Cancelled before it started; nothing was written.")
    for callback in callbacks:  # the queued task, delivered after all: it must not start
        callback()
    job.refresh_from_db()
    assert job.status == "cancelled" and Contact.objects.count() == 0


# --- an upload that cannot be read -----------------------------------------------------------------


DAMAGED_UTF16 = b"\xff\xfe" + "Name,Email\n".encode("utf-16-le") + b"\x00\xdc" + "Ann,ann@example.com\n".encode("utf-16-le")


def test_a_damaged_utf16_upload_is_refused_and_its_stored_file_deleted(staff_actor, settings):
    with pytest.raises(InputRejected) as refused:
        services.create_import_job(upload=SimpleUploadedFile("damaged.csv", DAMAGED_UTF16), actor=staff_actor)
    assert refused.value.errors[0].field == "file"
    assert stored_files(settings) == [] and ImportJob.objects.count() == 0


def test_a_damaged_upload_in_admin_is_a_form_error_and_leaves_no_file(admin_client, settings):
    response = admin_client.post(
        reverse("admin:contacts_contact_import_upload"),
        {"file": SimpleUploadedFile("damaged.csv", DAMAGED_UTF16), "mode": "create_update"},
    )
    assert response.status_code == 200 and response.context["form"].errors["file"]
    assert stored_files(settings) == [] and ImportJob.objects.count() == 0


def test_a_damaged_file_in_the_command_leaves_no_file(tmp_path, settings):
    path = tmp_path / "damaged.csv"
    path.write_bytes(DAMAGED_UTF16)
    with pytest.raises(CommandError):
        call_command("import_contacts", str(path))
    assert stored_files(settings) == [] and ImportJob.objects.count() == 0


def test_an_upload_that_breaks_the_reader_any_other_way_leaves_no_file(staff_actor, settings, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("reader bug")

    monkeypatch.setattr(services, "count_rows", broken)
    with pytest.raises(RuntimeError):
        services.create_import_job(upload=SimpleUploadedFile("ok.csv", csv_bytes([["Ann", "", "a@example.com", "", ""]])), actor=staff_actor)
    assert stored_files(settings) == [] and ImportJob.objects.count() == 0

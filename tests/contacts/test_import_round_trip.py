"""Second round of outside findings on import and export: who may export, reverts that stop part-way or
restore an empty date, old Mac line ends, a stray quote, and our own export imported again unchanged."""

import csv
import io

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from django.urls import reverse

from contacts.importing import services
from contacts.models import Contact, CustomField, ImportJob
from crm_hub.errors import InputRejected
from tests.contacts.factories import CustomFieldFactory, TagFactory, UserFactory
from tests.contacts.test_export import export_via_admin
from tests.contacts.test_import import csv_bytes, do_import, existing

pytestmark = pytest.mark.django_db


def test_admin_export_needs_the_permission_to_view_contacts(client):
    Contact.objects.create(name="Secret", source="manual", email="secret@example.com", email_normalized="secret@example.com")
    sales = UserFactory(username="sales", is_staff=True)
    client.force_login(sales)
    url = reverse("admin:contacts_contact_export")
    assert client.get(url).status_code == 403
    assert client.post(url, {"format": "0", "resource": "0"}).status_code == 403
    sales.user_permissions.add(Permission.objects.get(codename="view_contact"))
    client.force_login(sales)
    assert client.get(url).status_code == 200


def test_revert_gives_back_an_empty_birthday(staff_actor):
    person = existing(staff_actor, name="Bea", phone="+5511960000001")
    job = do_import(staff_actor, [["+5511960000001", "1999-09-09", "QBday"]], headers=["Phone", "Birthday", "Company"])
    person.refresh_from_db()
    assert str(person.birthday) == "1999-09-09"

    job = services.revert_import(job=job, actor=staff_actor)

    person.refresh_from_db()
    assert (person.birthday, person.company, job.status) == (None, "", ImportJob.Status.REVERTED)


def test_a_revert_that_stops_part_way_can_be_run_again(staff_actor, monkeypatch):
    person = existing(staff_actor, name="Cy", phone="+5511960000002", company="Old")
    job = do_import(staff_actor, [["+5511960000002", "New"]], headers=["Phone", "Company"])

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(services, "_undo_batch", broken)
    with pytest.raises(InputRejected) as refused:
        services.revert_import(job=job, actor=staff_actor)
    assert refused.value.errors[0].code == "revert_incomplete"
    job.refresh_from_db()
    assert job.status == ImportJob.Status.DONE and job.reverted_at is None

    monkeypatch.undo()
    services.revert_import(job=job, actor=staff_actor)
    person.refresh_from_db()
    assert person.company == "Old"


@override_settings(CRM_IMPORT_SYNC_MAX_ROWS=5)
def test_old_mac_line_ends_are_counted_and_a_big_file_goes_to_the_background(staff_actor):
    body = csv_bytes([[f"Person {i}", f"+1 415 555 {1000 + i}"] for i in range(12)], headers=["Name", "Phone"])
    job = services.create_import_job(upload=SimpleUploadedFile("mac.csv", body.replace(b"\r\n", b"\r")), actor=staff_actor)
    assert job.rows_total == 12 and job.background


@override_settings(CRM_MAX_UPLOAD_BYTES=150_000)  # the csv field limit follows it
def test_a_stray_quote_found_past_the_header_is_a_message_not_a_500(admin_client):
    body = b'Name,Phone\nA,"' + b"x" * 300_000 + b"\nB,+5511980000001\n"
    upload = admin_client.post(
        reverse("admin:contacts_contact_import_upload"),
        {"file": SimpleUploadedFile("quote.csv", body), "mode": "create_update"},
    )
    assert upload.status_code == 302
    page = admin_client.get(upload["Location"], follow=True)
    assert page.status_code == 200
    assert "cannot be imported" in page.content.decode()
    assert not ImportJob.objects.exists()  # the unusable draft and its file are gone


def test_our_admin_export_imports_back_unchanged(staff_actor, admin_client):
    CustomFieldFactory(key="note", label="Note", type=CustomField.Type.TEXT)
    TagFactory(name="Lead")
    do_import(
        staff_actor, [["=SUM(1)", "a@example.com", "+1+1", "@home", "Lead"]],
        headers=["Name", "Email", "Company", "Note", "Tags"],
    )
    exported = export_via_admin(admin_client, "csv")
    assert b"'=SUM(1)" in exported  # neutralized on the way out
    job = services.create_import_job(upload=SimpleUploadedFile("export.csv", exported), actor=staff_actor)
    assert job.mapping["custom.note"] == "custom.note"  # our own custom columns map back by themselves

    preview = services.preview_import(job=job, mapping=job.mapping, mode="create_update", actor=staff_actor)

    assert [(row.action, row.diff) for row in preview.rows] == [("skip", {})]
    contact = Contact.objects.get()
    assert (contact.name, contact.company, contact.custom) == ("=SUM(1)", "+1+1", {"note": "@home"})


def test_the_failed_rows_file_opens_in_excel_as_utf8(staff_actor):
    job = do_import(staff_actor, [["José", "broken@"]], headers=["Name", "Email"])
    body = job.error_file.open("rb").read()
    assert body.startswith(b"\xef\xbb\xbf")
    assert list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))[1][0] == "José"


def test_utf8_with_one_damaged_byte_is_refused_not_read_as_windows_1252(staff_actor):
    body = "Name,Email\nJosé,jose@example.com\n".encode() + b"Bad \xff byte,bad@example.com\n"
    with pytest.raises(InputRejected) as refused:
        services.create_import_job(upload=SimpleUploadedFile("damaged.csv", body), actor=staff_actor)
    assert refused.value.errors[0].field == "file"
    assert "not valid UTF-8" in refused.value.errors[0].message
    legacy = "Name,Email\nJosé,jose@example.com\n".encode("cp1252")
    job = services.create_import_job(upload=SimpleUploadedFile("legacy.csv", legacy), actor=staff_actor)
    assert job.rows_total == 1


def test_a_workbook_is_read_from_the_sheet_it_was_saved_on(staff_actor):
    import openpyxl

    book = openpyxl.Workbook()
    book.active.append(["This sheet is instructions"])
    data = book.create_sheet("Contacts")
    data.append(["Name", "Phone"])
    data.append(["Ines", "+5511960000009"])
    book.active = 1
    buffer = io.BytesIO()
    book.save(buffer)
    job = services.create_import_job(upload=SimpleUploadedFile("two-sheets.xlsx", buffer.getvalue()), actor=staff_actor)
    assert job.rows_total == 1 and job.mapping == {"Name": "name", "Phone": "phone"}
    services.confirm_import(job=job, mapping=job.mapping, mode="create_update", actor=staff_actor)
    assert Contact.objects.get().phone_e164 == "+5511960000009"


@override_settings(CELERY_TASK_ALWAYS_EAGER=True)
def test_a_large_revert_runs_on_a_worker_not_in_the_request(admin_client, staff_actor, django_capture_on_commit_callbacks):
    job = do_import(staff_actor, [[f"+1415555{1000 + i}", f"Co {i}"] for i in range(6)], headers=["Phone", "Company"])
    assert Contact.objects.count() == 6
    url = f"/admin/contacts/contact/import-contacts/{job.pk}/revert/"
    with override_settings(CRM_IMPORT_SYNC_MAX_ROWS=3), django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url, follow=True)
    assert "is being reverted on a worker" in response.content.decode()
    job.refresh_from_db()
    assert job.status == ImportJob.Status.REVERTED and Contact.objects.count() == 0
    assert "6 created contacts deleted" in job.message


def test_a_revert_killed_part_way_is_finished_not_left_half_done(staff_actor):
    """A web worker killed mid-revert (a proxy timeout) ran no except block: the job said Reverted, half undone."""
    import datetime as dt

    from django.utils import timezone

    job = do_import(staff_actor, [[f"+1415555{2000 + i}", f"Co {i}"] for i in range(4)], headers=["Phone", "Company"])
    # What a killed revert leaves: the job claimed, one contact already deleted, the heartbeat gone stale.
    stale = timezone.now() - dt.timedelta(seconds=settings.CRM_IMPORT_STALE_AFTER + 60)
    ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.REVERTING, heartbeat_at=stale)
    Contact.objects.filter(pk=Contact.objects.order_by("pk").first().pk).delete()
    job.refresh_from_db()
    assert services.progress(job)["stalled"] and not services.progress(job)["finished"]

    assert services.recover_stale_jobs() == 1
    job.refresh_from_db()
    assert job.status == ImportJob.Status.REVERTED and Contact.objects.count() == 0
    assert "4 created contacts deleted" in job.message  # the stopped run's deletion counted too


def test_a_revert_in_progress_cannot_be_started_twice_but_a_stalled_one_can_be_finished(staff_actor):
    import datetime as dt

    from django.utils import timezone

    job = do_import(staff_actor, [["+14155553001", "Co"]], headers=["Phone", "Company"])
    ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.REVERTING, heartbeat_at=timezone.now())
    with pytest.raises(InputRejected) as refused:
        services.revert_import(job=job, actor=staff_actor)
    assert refused.value.errors[0].code == "invalid_state"
    ImportJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - dt.timedelta(hours=1))
    services.revert_import(job=job, actor=staff_actor)
    job.refresh_from_db()
    assert job.status == ImportJob.Status.REVERTED and not Contact.objects.exists()

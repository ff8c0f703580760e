"""Reverting an import leaves later work alone and reports what it skipped; row length checks; preview,
export and file-serving fixes found by black-box testing of the import and export."""

import importlib
import io
from html import unescape

import openpyxl
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import clear_url_caches, reverse

from contacts.importing import services
from contacts.models import Contact, ContactTag, HistoryEntry, ImportJob, Note, Source
from contacts.services import add_note, add_tags, remove_tag, update_contact, upsert_contact
from tests.contacts.factories import TagFactory, UserFactory
from tests.contacts.test_export import export_via_admin
from tests.contacts.test_import import csv_bytes, do_import, existing

pytestmark = pytest.mark.django_db


def reverted_entry(contact: Contact) -> HistoryEntry | None:
    return HistoryEntry.objects.filter(contact=contact, summary__startswith="Reverted import").first()


# --- revert: what cannot or must not be restored -------------------------------------------


def test_revert_restores_the_name_but_not_a_phone_another_contact_took_and_says_so(staff_actor):
    fatima = existing(staff_actor, name="Fatima Patel", phone="+1 702 555 0100", email="fatima.patel6@example.com")
    job = do_import(staff_actor, [["Fatima Moved", "(202) 555-0990", "fatima.patel6@example.com"]], headers=["Name", "Phone", "Email"])
    other = existing(staff_actor, name="Someone Else", phone="702-555-0100")

    job = services.revert_import(job=job, actor=staff_actor)

    fatima.refresh_from_db()
    assert (fatima.name, fatima.phone, fatima.phone_e164) == ("Fatima Patel", "(202) 555-0990", "+12025550990")
    other.refresh_from_db()
    assert other.phone_e164 == "+17025550100"
    assert reverted_entry(fatima).changes == {"name": ["Fatima Moved", "Fatima Patel"]}  # only what was restored
    assert f"#{fatima.pk} phone (now #{other.pk}'s)" in job.message
    assert "1 phone or email not restored" in job.message


def test_revert_leaves_a_field_sales_changed_since_and_restores_the_others(staff_actor):
    old = existing(staff_actor, name="Old", email="old@example.com", company="Acme")
    job = do_import(staff_actor, [["Old Renamed", "old@example.com", "ImpCo"]], headers=["Name", "Email", "Company"])
    old.refresh_from_db()
    update_contact(contact=old, data={"company": "SalesEdited"}, actor=staff_actor, source=Source.MANUAL)

    job = services.revert_import(job=job, actor=staff_actor)

    old.refresh_from_db()
    assert (old.name, old.company) == ("Old", "SalesEdited")
    assert reverted_entry(old).changes == {"name": ["Old Renamed", "Old"]}
    assert f"1 field left as is: changed by others since the import (#{old.pk} company)" in job.message


def test_revert_keeps_a_created_contact_with_a_later_note_and_deletes_the_untouched_one(staff_actor):
    job = do_import(staff_actor, [["Kept", "kept@example.com"], ["Gone", "gone@example.com"]], headers=["Name", "Email"])
    kept = Contact.objects.get(email_normalized="kept@example.com")
    add_note(contact=kept, body="Called, wants a demo", actor=staff_actor, source=Source.MANUAL)

    job = services.revert_import(job=job, actor=staff_actor)

    assert list(Contact.objects.values_list("name", flat=True)) == ["Kept"]
    assert Note.objects.filter(contact=kept).count() == 1
    assert job.status == "reverted"
    assert job.message.startswith("Reverted: 1 created contact deleted")
    assert f"1 created contact kept: changed by others since the import (#{kept.pk})" in job.message


def test_revert_keeps_a_tag_sales_removed_and_added_again_since(staff_actor):
    TagFactory(name="Lead")
    TagFactory(name="VIP")
    old = existing(staff_actor, name="Old", email="old@example.com")
    job = do_import(staff_actor, [["old@example.com", "Lead, VIP"]], headers=["Email", "Tags"])
    remove_tag(contact=old, tag="Lead", actor=staff_actor, source=Source.MANUAL)
    add_tags(contact=old, tags=["Lead"], actor=staff_actor, source=Source.MANUAL)

    job = services.revert_import(job=job, actor=staff_actor)

    assert list(ContactTag.objects.filter(contact=old).values_list("tag__name", flat=True)) == ["Lead"]
    assert f"#{old.pk} Lead" in job.message


def test_admin_revert_message_reports_what_was_skipped(admin_client, staff_actor):
    fatima = existing(staff_actor, name="Fatima Patel", phone="+1 702 555 0100", email="fatima.patel6@example.com")
    job = do_import(staff_actor, [["Fatima Moved", "(202) 555-0990", "fatima.patel6@example.com"]], headers=["Name", "Phone", "Email"])
    existing(staff_actor, name="Someone Else", phone="702-555-0100")

    response = admin_client.post(reverse("admin:contacts_contact_import_revert", args=[job.pk]), follow=True)

    html = response.content.decode()
    assert f"Import #{job.pk} was reverted: 0 created contacts deleted, 1 contact restored." in html
    assert "not restored: the old value now belongs to another contact" in html
    assert [m.level_tag for m in response.context["messages"]] == ["warning"]
    assert f"#{fatima.pk} phone" in html  # the progress page shows the job's report too


# --- row checks -----------------------------------------------------------------------------


def test_too_long_email_phone_and_extension_fail_their_row_only(staff_actor):
    long_email = "a" * 64 + "@" + ".".join(["b" * 60] * 4) + ".com"  # valid, but 312 characters
    rows = [
        ["Long Mail", "", long_email],
        ["Long Phone", "+1 202 555 0100" + " " * 60 + "1", ""],
        ["Long Ext", "+1 202 555 0101 ext. 1234567890123456", ""],
        ["Fine", "", "fine@example.com"],
    ]
    job = do_import(staff_actor, rows, headers=["Name", "Phone", "Email"])

    assert (job.status, job.created_count, job.failed_count) == ("done", 1, 3)
    assert list(Contact.objects.values_list("name", flat=True)) == ["Fine"]
    errors = job.error_file.open("rb").read().decode("utf-8-sig")
    assert "email: at most 254 characters" in errors
    assert "phone: at most 64 characters" in errors
    assert "phone: the extension has at most 12 digits" in errors


def test_preview_of_a_too_long_email_says_error_not_create(admin_client):
    body = csv_bytes([["Ann", "a" * 250 + "@example.com"]], headers=["Name", "Email"])
    admin_client.post(reverse("admin:contacts_contact_import_upload"), {"file": SimpleUploadedFile("long.csv", body), "mode": "create_update"})
    job = ImportJob.objects.get()
    html = admin_client.post(
        reverse("admin:contacts_contact_import_map", args=[job.pk]),
        {"mode": "create_update", "col_0": "name", "col_1": "email", "_preview": "1"},
    ).content.decode()
    assert "Create 0 · Update 0 · Skip 0 · Error 1" in html
    assert "email: at most 254 characters" in html


# --- preview ----------------------------------------------------------------------------------


def test_preview_lists_every_error_row_and_says_other_rows_are_not_listed(admin_client):
    rows = [[f"P{i}", f"p{i}@example.com"] for i in range(600)]
    rows[450][1] = "bad@"  # file line 452 (line 1 is the header)
    rows[550][1] = "worse@@"
    body = csv_bytes(rows, headers=["Name", "Email"])
    admin_client.post(reverse("admin:contacts_contact_import_upload"), {"file": SimpleUploadedFile("big.csv", body), "mode": "create_update"})
    job = ImportJob.objects.get()

    response = admin_client.post(
        reverse("admin:contacts_contact_import_map", args=[job.pk]),
        {"mode": "create_update", "col_0": "name", "col_1": "email", "_preview": "1"},
    )

    html = unescape(response.content.decode())
    assert "Error 2" in html
    lines = {row.line: row for row in response.context["preview"].rows}
    assert lines[452].action == lines[552].action == "error"
    assert "'bad@' is not a valid email address" in html and "'worse@@' is not a valid email address" in html
    assert "398 other rows (create, update or skip) are not listed" in html


# --- admin export -------------------------------------------------------------------------------


def test_admin_xlsx_export_has_empty_cells_and_numbers_and_imports_again(admin_client, staff_actor):
    ann = existing(staff_actor, name="Ann", email="ann@example.com")  # no birthday
    book = openpyxl.load_workbook(io.BytesIO(export_via_admin(admin_client, "xlsx")))
    header = [c.value for c in book.active[1]]
    values = dict(zip(header, [c.value for c in book.active[2]], strict=True))
    assert values["id"] == ann.pk
    assert values["birthday"] is None

    exported = io.BytesIO()
    book.save(exported)
    job = services.create_import_job(upload=SimpleUploadedFile("export.xlsx", exported.getvalue()), actor=staff_actor)
    mapping = {h: (h if h in ("name", "email", "birthday", "company") else "") for h in header}
    job = services.confirm_import(job=job, mapping=mapping, mode="create_update", actor=staff_actor)
    assert (job.status, job.failed_count) == ("done", 0)


def test_admin_csv_export_starts_with_a_utf8_bom(admin_client, staff_actor):
    existing(staff_actor, name="Zoë Ångström", email="zoe@example.com")
    body = export_via_admin(admin_client, "csv")
    assert body.startswith(b"\xef\xbb\xbf")
    assert "Zoë Ångström" in body.decode("utf-8-sig")


# --- files are served to staff only, even with DEBUG ---------------------------------------------


@pytest.fixture
def debug_urls(settings):
    """The URLconf as `make run` builds it (DEBUG=1)."""
    import crm_hub.urls

    settings.DEBUG = True
    importlib.reload(crm_hub.urls)
    clear_url_caches()
    yield
    settings.DEBUG = False
    importlib.reload(crm_hub.urls)
    clear_url_caches()


def test_import_and_error_files_are_not_public_media_even_with_debug(debug_urls, client, admin_client, staff_actor):
    job = do_import(staff_actor, [["Bad", "bad@"]], headers=["Name", "Email"])
    assert job.file and job.error_file
    client.logout()
    for stored in (job.file, job.error_file):
        assert client.get(f"/media/{stored.name}").status_code == 404

    file_url = reverse("admin:contacts_contact_import_file", args=[job.pk])
    errors_url = reverse("admin:contacts_contact_import_errors", args=[job.pk])
    assert client.get(file_url).status_code == client.get(errors_url).status_code == 302  # to the login page
    admin_client.force_login(UserFactory(username="boss", is_staff=True, is_superuser=True))
    download = admin_client.get(file_url)
    assert download.status_code == 200 and b"Bad,bad@" in b"".join(download.streaming_content)
    page = admin_client.get(reverse("admin:contacts_importjob_change", args=[job.pk])).content.decode()
    assert file_url in page and errors_url in page and "/media/" not in page


def test_contact_files_are_not_public_media_even_with_debug(debug_urls, client, staff_actor):
    from contacts.services import add_file

    contact = upsert_contact(data={"name": "Ann"}, actor=staff_actor, source=Source.MANUAL).contact
    stored = add_file(contact=contact, upload=SimpleUploadedFile("id.txt", b"passport 123", content_type="text/plain"),
                      actor=staff_actor, source=Source.MANUAL)
    assert client.get(f"/media/{stored.file.name}").status_code == 404
    assert client.get(reverse("contacts:file", args=[contact.pk, stored.pk])).status_code == 302  # login first

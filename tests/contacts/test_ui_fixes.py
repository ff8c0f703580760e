"""Web UI fixes: uploads typed by their content, export in the list's order, bad ids, all edit errors at once, search words."""

import csv
import io
import re
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from openpyxl import Workbook

from contacts import services
from contacts.models import Contact, ContactFile, Source
from crm_hub.actors import Actor
from crm_hub.errors import InputRejected
from tests.contacts.ui_helpers import make_contact, names_in, sales_pipeline
from tests.forms_app.factories import CONTACT_FIELDS, make_form

pytestmark = pytest.mark.django_db

EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 48
HTML = b"<!DOCTYPE html><html><body><script>fetch('/contacts/')</script></body></html>"


def csv_rows(response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))


def office_package(main_part: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr(main_part, "<document/>")
    return buffer.getvalue()


def xlsx_bytes() -> bytes:
    workbook = Workbook()
    workbook.active.append(["Name", "Phone"])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


# --- Uploads: the type comes from the file, not from the sender --------------------------------


def upload(name: str, content: bytes, claimed: str) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type=claimed)


@pytest.mark.parametrize(
    ("name", "content", "claimed"),
    [
        ("evil.exe", EXE, "application/pdf"),
        ("evil.pdf", EXE, "application/pdf"),
        ("page.png", HTML, "image/png"),
        ("page.txt", HTML, "text/plain"),
        ("notes.txt", b"  <html><p>hi</p></html>", "text/plain"),
        ("list.csv", b"name,phone\nAna,1\n<script>alert(1)</script>\n", "text/csv"),
        ("run.txt", b"#!/bin/sh\nrm -rf /\n", "text/plain"),
        ("binary.txt", b"abc\x00\x01\x02def", "text/plain"),
        ("photo.jpg", b"\x89PNG\r\n\x1a\n" + b"\x00" * 16, "image/jpeg"),
        ("letter.docx", office_package("xl/workbook.xml"), "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
        ("archive.xlsx", b"PK\x03\x04 not really a zip", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
        ("old.doc", EXE, "application/msword"),
        ("noextension", b"%PDF-1.4\n", "application/pdf"),
    ],
)
def test_upload_whose_content_is_not_its_claimed_type_is_refused_and_not_stored(signed_in, staff_user, name, content, claimed):
    contact = make_contact(staff_user, name="Ana")
    response = signed_in.post(f"/contacts/{contact.pk}/files/", {"file": upload(name, content, claimed)}, follow=True)
    assert "are not accepted" in response.content.decode() or "does not match" in response.content.decode()
    assert not ContactFile.objects.exists()


def test_refusal_says_what_is_wrong_with_the_file(staff_user):
    contact = make_contact(staff_user, name="Ana")
    actor = Actor.for_user(staff_user)
    with pytest.raises(InputRejected) as exe:
        services.add_file(contact=contact, upload=upload("evil.exe", EXE, "application/pdf"), actor=actor, source=Source.MANUAL)
    with pytest.raises(InputRejected) as fake_pdf:
        services.add_file(contact=contact, upload=upload("evil.pdf", EXE, "application/pdf"), actor=actor, source=Source.MANUAL)
    assert [(e.field, e.code) for e in exe.value.errors] == [("file", "unsupported_file_type")]
    assert exe.value.errors[0].message == "Files of type application/x-msdos-program are not accepted."
    assert fake_pdf.value.errors[0].message == "evil.pdf is not a real PDF: its content does not match its .pdf extension."


@pytest.mark.parametrize(
    ("name", "content", "detected"),
    [
        ("quote.pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "application/pdf"),
        ("photo.PNG", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image/png"),
        ("photo.jpeg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "image/jpeg"),
        ("anim.gif", b"GIF89a\x01\x00\x01\x00", "image/gif"),
        ("pic.webp", b"RIFF\x24\x00\x00\x00WEBPVP8 ", "image/webp"),
        ("notes.txt", "Olá, João — a <b>bold</b> plan\r\n".encode(), "text/plain"),
        ("excel.csv", "name;city\r\nJosé;São Paulo\r\n".encode("cp1252"), "text/csv"),
        ("wide.txt", "hello".encode("utf-16"), "text/plain"),
        ("old.doc", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 24, "application/msword"),
        ("old.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 24, "application/vnd.ms-excel"),
        ("letter.docx", office_package("word/document.xml"),
         "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
        ("book.xlsx", xlsx_bytes(), "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    ],
)
def test_upload_is_stored_with_the_type_its_content_shows_whatever_the_sender_claims(signed_in, staff_user, name, content, detected):
    contact = make_contact(staff_user, name="Ana")
    response = signed_in.post(
        f"/contacts/{contact.pk}/files/", {"file": upload(name, content, "application/octet-stream")}, follow=True
    )
    assert f"Uploaded {name}" in response.content.decode()
    stored = contact.files.get()
    assert stored.content_type == detected
    download = signed_in.get(f"/contacts/{contact.pk}/files/{stored.pk}/")
    assert download["Content-Type"] == detected and b"".join(download.streaming_content) == content


def test_a_checked_type_that_settings_do_not_allow_is_refused(signed_in, staff_user, settings):
    settings.CRM_ALLOWED_UPLOAD_TYPES = ["application/pdf"]
    contact = make_contact(staff_user, name="Ana")
    response = signed_in.post(f"/contacts/{contact.pk}/files/", {"file": upload("a.png", b"\x89PNG\r\n\x1a\n", "application/pdf")}, follow=True)
    assert "Files of this kind (.png) are not accepted. Allowed: PDF." in response.content.decode()
    assert not ContactFile.objects.exists()


@pytest.fixture
def visitor():
    return Client(enforce_csrf_checks=True, REMOTE_ADDR="203.0.113.9")


def post_form(visitor, form, data, files):
    page = visitor.get(f"/f/{form.slug}/")
    token = re.search(r'name="form_token" value="([^"]+)"', page.content.decode()).group(1)
    return visitor.post(f"/f/{form.slug}/", {"form_token": token, **data, **files})


@pytest.fixture
def cv_form():
    return make_form(fields=[dict(CONTACT_FIELDS[0]), {"id": "fcv", "type": "file", "label": "CV", "maps_to": "contact.files"}])


def test_public_form_refuses_an_executable_sent_as_pdf_on_the_file_field(visitor, cv_form):
    response = post_form(visitor, cv_form, {"fname": "Eve"}, {"fcv": upload("evil.exe", EXE, "application/pdf")})
    html = response.content.decode()
    assert response.status_code == 400
    error = re.search(r'id="f-fcv-error"[^>]*>(.*?)</div>', html, re.S)
    assert error and "application/x-msdos-program are not accepted" in error.group(1)
    assert not Contact.objects.exists() and not ContactFile.objects.exists()


def test_public_form_refuses_html_sent_as_png(visitor, cv_form):
    response = post_form(visitor, cv_form, {"fname": "Eve"}, {"fcv": upload("cat.png", HTML, "image/png")})
    assert response.status_code == 400 and "does not match its .png extension" in response.content.decode()
    assert not ContactFile.objects.exists()


def test_public_form_stores_a_real_pdf_with_its_detected_type(visitor, cv_form):
    response = post_form(visitor, cv_form, {"fname": "Di"}, {"fcv": upload("cv.pdf", b"%PDF-1.4\nbody", "application/x-anything")})
    assert response.status_code == 302
    stored = ContactFile.objects.get()
    assert (stored.name, stored.content_type, stored.source) == ("cv.pdf", "application/pdf", "form")


# --- Export follows the list's sort ---------------------------------------------------------------


@pytest.fixture
def form_people(staff_user):
    # Created in an order that is neither alphabetical nor its reverse.
    for name in ("Cy Form", "Ana Form", "Bo Form"):
        make_contact(staff_user, name=name, source=Source.FORM)
    make_contact(staff_user, name="Al Manual", source=Source.MANUAL)


@pytest.mark.parametrize(
    ("sort", "expected"),
    [("name", ["Ana Form", "Bo Form", "Cy Form"]), ("-name", ["Cy Form", "Bo Form", "Ana Form"])],
)
def test_export_keeps_the_list_filter_columns_and_sort(signed_in, form_people, sort, expected):
    query = {"source": "form", "sort": sort, "cols": ["source"]}
    assert names_in(signed_in.get("/contacts/", query)) == expected
    response = signed_in.get("/contacts/export/", {**query, "format": "csv"})
    assert response.streaming
    rows = csv_rows(response)
    assert rows[0] == ["Name", "Source"]
    assert rows[1:] == [[name, "Form"] for name in expected]


def test_export_sorted_by_a_column_that_can_be_empty_puts_empty_values_last(signed_in, staff_user):
    bo = make_contact(staff_user, name="Bo", owner=staff_user)
    make_contact(staff_user, name="Nobody's")
    ana = make_contact(staff_user, name="Ana", owner=staff_user)
    response = signed_in.get("/contacts/export/", {"sort": "owner", "format": "csv"})
    assert [row[0] for row in csv_rows(response)[1:]] == [bo.name, ana.name, "Nobody's"]


def test_bulk_export_of_all_matching_follows_the_sort(signed_in, form_people):
    response = signed_in.post("/contacts/bulk/", {"query": "source=form&sort=name", "scope": "all", "action": "export_csv"})
    assert [row[0] for row in csv_rows(response)[1:]] == ["Ana Form", "Bo Form", "Cy Form"]


# --- Ids that are not numbers are a 400 naming the field ------------------------------------------


def test_stage_change_with_a_non_numeric_stage_is_400_naming_the_field(signed_in, staff_user):
    sales_pipeline()
    contact = make_contact(staff_user, name="Ana")
    for value in ("abc", "1.5", "²"):
        response = signed_in.post(f"/contacts/{contact.pk}/stage/", {"stage": value})
        assert response.status_code == 400 and response.content.decode().startswith("stage:")
    # A number that names no stage (even one too big for the column): said on the contact page, nothing moved.
    gone = signed_in.post(f"/contacts/{contact.pk}/stage/", {"stage": "9" * 21}, follow=True)
    assert "no longer exists" in gone.content.decode()
    assert not contact.stage_memberships.exists()


@pytest.mark.parametrize(("field", "bad"), [("contact", "abc"), ("stage", "x"), ("stage", "")])
def test_board_move_with_a_non_numeric_id_is_400_naming_the_field(signed_in, staff_user, field, bad):
    _pipeline, (lead, _qualified, _won) = sales_pipeline()
    contact = make_contact(staff_user, name="Ana")
    response = signed_in.post("/pipeline/move/", {"contact": contact.pk, "stage": lead.pk, field: bad})
    assert response.status_code == 400 and response.content.decode().startswith(f"{field}:")
    assert not contact.stage_memberships.exists()


# --- Edit shows every error in one round ------------------------------------------------------------


def test_edit_with_an_invalid_email_and_a_phone_held_by_another_shows_both_errors_at_once(signed_in, staff_user):
    other = make_contact(staff_user, name="Bo", phone="+1 202 555 0102")
    contact = make_contact(staff_user, name="Ana", phone="+1 202 555 0101", email="ana@example.com")
    response = signed_in.post(f"/contacts/{contact.pk}/edit/", {"name": "Ana", "phone": "(202) 555-0102", "email": "not-an-email"})
    html = response.content.decode()
    assert "is not a valid email address" in html
    assert f'Already used by <a href="/contacts/{other.pk}/">Bo (#{other.pk})</a>.' in html
    contact.refresh_from_db()
    assert (contact.phone_e164, contact.email) == ("+12025550101", "ana@example.com")


def test_inline_edit_also_shows_every_error_at_once(signed_in, staff_user):
    other = make_contact(staff_user, name="Bo", email="bo@example.com")
    contact = make_contact(staff_user, name="Ana")
    response = signed_in.post(
        f"/contacts/{contact.pk}/edit/", {"name": "Ana", "phone": "12", "email": "BO@example.com"}, HTTP_HX_REQUEST="true"
    )
    html = response.content.decode()
    assert "is not a valid phone number" in html and f'Already used by <a href="/contacts/{other.pk}/">Bo (#{other.pk})</a>.' in html


# --- Search: whitespace and word order ------------------------------------------------------------


def test_search_tolerates_repeated_spaces_and_any_word_order(signed_in, staff_user):
    make_contact(staff_user, name="Diego Kowalski", company="Acme Tools", email="dk@example.com")
    make_contact(staff_user, name="Diego Nowak", company="Globex")
    for typed in ("Diego Kowalski", "Diego   Kowalski", "kowalski diego", "  KOWALSKI\tdiego ", "diego acme", "dk kowal"):
        assert names_in(signed_in.get("/contacts/", {"q": typed})) == ["Diego Kowalski"], typed
    assert sorted(names_in(signed_in.get("/contacts/", {"q": "diego"}))) == ["Diego Kowalski", "Diego Nowak"]
    assert names_in(signed_in.get("/contacts/", {"q": "kowalski globex"})) == []
    # A phone typed with spaces is still one phone, not words.
    make_contact(staff_user, name="Ana", phone="+1 202 555 0101")
    assert names_in(signed_in.get("/contacts/", {"q": "+1  202  555   0101"})) == ["Ana"]

"""Import files as people really bring them: huge cells, legacy encodings, odd XLSX, duplicate headers, the error file."""

import codecs
import csv
import io
import json
import re
import zipfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse

from contacts.importing import services
from contacts.models import Contact, ImportJob
from crm_hub.errors import InputRejected
from tests.contacts.test_import import csv_bytes

pytestmark = pytest.mark.django_db


def start(actor, body: bytes, name: str = "people.csv") -> ImportJob:
    return services.create_import_job(upload=SimpleUploadedFile(name, body), actor=actor)


def confirm(actor, job: ImportJob, mapping: dict | None = None) -> ImportJob:
    return services.confirm_import(
        job=job, mapping=mapping or job.mapping, mode="create_update", actor=actor
    )


def xlsx_bytes(rows: list[list], *, write_only: bool = False) -> bytes:
    import openpyxl

    book = openpyxl.Workbook(write_only=write_only)
    sheet = book.create_sheet() if write_only else book.active
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def with_sheet_xml(body: bytes, change) -> bytes:
    """Return the workbook with its first sheet's XML passed through ``change``."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(body)) as source, zipfile.ZipFile(out, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                data = change(data)
            target.writestr(item, data)
    return out.getvalue()


def error_rows(job: ImportJob) -> list[list[str]]:
    return list(csv.reader(io.StringIO(job.error_file.open("rb").read().decode("utf-8-sig"))))


def stored_files(settings) -> list[Path]:
    return [p for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file()]


# --- a cell over csv's 128 KiB field limit ---------------------------------------------------


def long_cell_file() -> bytes:
    rows = [[f"P{i}", f"p{i}@example.com"] for i in range(10)]
    rows[4][0] = "x" * (200 * 1024)
    return csv_bytes(rows, headers=["Name", "Email"])


def test_a_cell_over_128_kib_fails_its_row_in_preview_and_import_and_the_others_import(
    admin_client,
):
    client = admin_client
    client.post(
        reverse("admin:contacts_contact_import_upload"),
        {"file": SimpleUploadedFile("long.csv", long_cell_file()), "mode": "create_update"},
    )
    job = ImportJob.objects.get()
    map_url = reverse("admin:contacts_contact_import_map", args=[job.pk])
    assert client.get(map_url).status_code == 200
    post = {"mode": "create_update", "col_0": "name", "col_1": "email"}
    preview = client.post(map_url, {**post, "_preview": "1"})
    assert preview.status_code == 200
    html = preview.content.decode()
    assert "Create 9 · Update 0 · Skip 0 · Error 1" in html
    assert "name: at most 200 characters" in html

    client.post(map_url, {**post, "_confirm": "1"})
    job.refresh_from_db()
    assert (job.status, job.created_count, job.failed_count) == ("done", 9, 1)
    assert not Contact.objects.filter(email_normalized="p4@example.com").exists()
    assert error_rows(job)[1][:2] == ["x" * (200 * 1024), "p4@example.com"]


def test_a_cell_over_128_kib_fails_its_row_in_the_command(tmp_path):
    path = tmp_path / "long.csv"
    path.write_bytes(long_cell_file())
    out = io.StringIO()
    call_command("import_contacts", str(path), "--no-progress", stdout=out)
    assert "created 9" in out.getvalue() and "failed 1" in out.getvalue()


# --- encodings ----------------------------------------------------------------------------


def test_the_encoding_is_detected_per_file_cp1252_or_utf8_with_or_without_bom(staff_actor):
    body = (
        "Nome,Email,Société\nJosé Müller,jose@example.com,“Café” €\nZoë,zoe@example.com,\n".encode(
            "cp1252"
        )
    )
    job = start(staff_actor, body)
    assert list(job.mapping) == ["Nome", "Email", "Société"]
    assert job.rows_total == 2
    preview = services.preview_import(
        job=job, mapping=job.mapping, mode="create_update", actor=staff_actor
    )
    assert preview.rows[0].diff["name"] == ["", "José Müller"]
    job = confirm(staff_actor, job, {"Nome": "name", "Email": "email", "Société": "company"})
    assert job.created_count == 2
    jose = Contact.objects.get(email_normalized="jose@example.com")
    assert (jose.name, jose.company) == ("José Müller", "“Café” €")
    assert not Contact.objects.filter(name__contains="\ufffd").exists()

    # A file that is all valid UTF-8 stays UTF-8 (not read as cp1252 "JosÃ©"), BOM or not.
    text = "Nome,Email,Société\nJosé Müller,jose@example.com,Ação Ltda\n"
    for body in (text.encode(), codecs.BOM_UTF8 + text.encode()):
        job = confirm(
            staff_actor,
            start(staff_actor, body),
            {"Nome": "name", "Email": "email", "Société": "company"},
        )
        assert job.updated_count == 1
        assert Contact.objects.get(email_normalized="jose@example.com").company == "Ação Ltda"
        Contact.objects.filter(email_normalized="jose@example.com").update(company="")


def test_excel_unicode_text_in_utf16_is_imported(staff_actor):
    body = "Name\tEmail\r\nZoë\tzoe@example.com\r\n".encode("utf-16")
    job = start(staff_actor, body, name="people.txt")
    assert (list(job.mapping), job.rows_total) == (["Name", "Email"], 1)
    confirm(staff_actor, job)
    assert Contact.objects.get().name == "Zoë"


# --- XLSX --------------------------------------------------------------------------------


def test_xlsx_without_a_dimension_counts_its_real_rows_and_runs_in_the_background(
    staff_actor, settings
):
    settings.CRM_IMPORT_SYNC_MAX_ROWS = 3
    body = xlsx_bytes(
        [["Name", "Email"], *([f"P{i}", f"p{i}@example.com"] for i in range(5))], write_only=True
    )
    assert b"<dimension" not in zipfile.ZipFile(io.BytesIO(body)).read("xl/worksheets/sheet1.xml")
    job = start(staff_actor, body, name="people.xlsx")
    assert (job.rows_total, job.background) == (5, True)


def test_xlsx_with_a_wrong_dimension_is_read_and_counted_to_its_last_row(staff_actor):
    body = xlsx_bytes([["Name", "Email"], *([f"P{i}", f"p{i}@example.com"] for i in range(3))])
    body = with_sheet_xml(
        body, lambda xml: re.sub(rb'<dimension ref="[^"]*"', b'<dimension ref="A1"', xml)
    )
    job = start(staff_actor, body, name="people.xlsx")
    assert job.mapping == {"Name": "name", "Email": "email"}
    assert job.rows_total == 3
    assert confirm(staff_actor, job).created_count == 3


def test_xlsx_error_lines_are_the_sheet_row_numbers(staff_actor, tmp_path):
    rows = [
        ["Name", "Email"],
        ["Ann", "ann@example.com"],
        [None, None],
        [None, None],
        ["Bad", "bad@"],
        ["Bob", "bob@example.com"],
    ]
    body = xlsx_bytes(rows, write_only=True)
    job = start(staff_actor, body, name="people.xlsx")
    preview = services.preview_import(
        job=job, mapping=job.mapping, mode="create_update", actor=staff_actor
    )
    assert [o.line for o in preview.rows if o.action == "error"] == [5]
    assert [o.line for o in preview.rows if o.action == "create"] == [2, 6]

    path = tmp_path / "people.xlsx"
    path.write_bytes(body)
    out = io.StringIO()
    call_command("import_contacts", str(path), "--dry-run", "--no-progress", stdout=out)
    assert "line 5: email: 'bad@' is not a valid email address" in out.getvalue()


def test_xlsx_renamed_to_csv_is_read_as_a_workbook(staff_actor):
    body = xlsx_bytes([["Name", "Email"], ["Ann", "ann@example.com"], ["Bob", "bob@example.com"]])
    job = start(staff_actor, body, name="people.csv")
    assert (job.mapping, job.rows_total) == ({"Name": "name", "Email": "email"}, 2)
    assert confirm(staff_actor, job).created_count == 2


def test_an_old_xls_workbook_is_refused_with_a_clear_message(staff_actor):
    with pytest.raises(InputRejected) as exc:
        start(staff_actor, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 600, name="people.csv")
    assert exc.value.errors[0].field == "file"
    assert ".xls" in exc.value.errors[0].message and "CSV" in exc.value.errors[0].message
    assert ImportJob.objects.count() == 0


# --- mapping memory and duplicate headers ---------------------------------------------------


def test_the_error_file_imported_again_gets_the_remembered_mapping(staff_actor):
    headers = ["Who", "Cell", "Mail"]
    mapping = {"Who": "name", "Cell": "phone", "Mail": "email"}
    job = start(
        staff_actor,
        csv_bytes(
            [["Ann", "(561) 555-0192", "ann@example.com"], ["Bob", "", "bob@"]], headers=headers
        ),
    )
    job = confirm(staff_actor, job, mapping)
    rows = error_rows(job)
    assert rows[0] == [*headers, "error"]
    rows[1][2] = "bob@example.com"
    again = start(staff_actor, csv_bytes(rows[1:], headers=rows[0]), name="people-errors.csv")
    assert again.mapping == {**mapping, "error": ""}
    again = confirm(staff_actor, again)
    assert (again.created_count, again.failed_count) == (1, 0)
    assert Contact.objects.get(name="Bob").email == "bob@example.com"


def test_the_remembered_mapping_applies_to_the_same_headers_in_another_order(staff_actor):
    mapping = {"Who": "name", "Cell": "phone", "Mail": "email"}
    confirm(
        staff_actor,
        start(
            staff_actor,
            csv_bytes([["Ann", "", "ann@example.com"]], headers=["Who", "Cell", "Mail"]),
        ),
        mapping,
    )
    again = start(
        staff_actor, csv_bytes([["bob@example.com", "Bob", ""]], headers=["Mail", "Who", "Cell"])
    )
    assert again.mapping == mapping


def test_duplicate_headers_are_told_apart_and_each_can_be_mapped(staff_actor):
    headers = ["Name", "Phone", "Phone", "Email", "Email"]
    rows = [["Ann", "", "(561) 555-0192", "", "ann@example.com"], ["Bad", "", "12", "bad@", ""]]
    job = start(staff_actor, csv_bytes(rows, headers=headers))
    assert job.mapping == {
        "Name": "name",
        "Phone": "phone",
        "Phone (2)": "",
        "Email": "email",
        "Email (2)": "",
    }
    mapping = {"Name": "name", "Phone": "", "Phone (2)": "phone", "Email": "", "Email (2)": "email"}
    job = confirm(staff_actor, job, mapping)
    assert (job.created_count, job.failed_count) == (1, 1)
    ann = Contact.objects.get()
    assert (ann.phone_e164, ann.email_normalized) == ("+15615550192", "ann@example.com")
    assert error_rows(job)[0] == ["Name", "Phone", "Phone (2)", "Email", "Email (2)", "error"]
    assert error_rows(job)[1][:5] == ["Bad", "", "12", "bad@", ""]


def test_duplicate_headers_can_be_mapped_on_the_admin_page(admin_client):
    client = admin_client
    body = csv_bytes([["Ann", "(561) 555-0192", ""]], headers=["Name", "Phone", "Phone"])
    client.post(
        reverse("admin:contacts_contact_import_upload"),
        {"file": SimpleUploadedFile("dup.csv", body), "mode": "create_update"},
    )
    job = ImportJob.objects.get()
    map_url = reverse("admin:contacts_contact_import_map", args=[job.pk])
    client.post(
        map_url,
        {"mode": "create_update", "col_0": "name", "col_1": "phone", "col_2": "", "_confirm": "1"},
    )
    job.refresh_from_db()
    assert (job.status, job.created_count) == ("done", 1)
    assert Contact.objects.get().phone_e164 == "+15615550192"


# --- the management command's --mapping ----------------------------------------------------


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("[1, 2]", "must be a JSON object"),
        ('{"Who": ["name"]}', "must be a string"),
        ('{"Who": "nickname"}', "Unknown target"),
        ('{"Nobody": "name"}', "has no column 'Nobody'"),
    ],
)
def test_a_bad_mapping_in_the_command_is_a_clear_error_and_leaves_nothing_behind(
    tmp_path, settings, given, message
):
    path = tmp_path / "people.csv"
    path.write_bytes(csv_bytes([["Ann"]], headers=["Who"]))
    for dry_run in ([], ["--dry-run"]):
        with pytest.raises(CommandError, match=re.escape(message)):
            call_command(
                "import_contacts", str(path), "--mapping", given, *dry_run, stdout=io.StringIO()
            )
        assert ImportJob.objects.count() == 0
        assert stored_files(settings) == []


def test_the_command_accepts_a_mapping_for_a_renamed_duplicate_column(tmp_path):
    path = tmp_path / "people.csv"
    path.write_bytes(
        csv_bytes([["Ann", "", "+44 20 7946 0958"]], headers=["Name", "Phone", "Phone"])
    )
    mapping = json.dumps({"Phone": "", "Phone (2)": "phone"})
    call_command(
        "import_contacts", str(path), "--mapping", mapping, "--no-progress", stdout=io.StringIO()
    )
    assert Contact.objects.get().phone_e164 == "+442079460958"

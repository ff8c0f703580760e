"""Black-box findings on messy import files: quoting, rows wider than the header, NUL characters, impossible
dates, formula cells and repeated error columns in the failed-rows file, damaged UTF-16, files that repeat a
person, rows with nothing to match by, and Outlook's "Title"."""

import csv
import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.urls import reverse

from contacts.importing import readers, services
from contacts.models import Contact, CustomField, HistoryEntry, ImportChange, ImportJob
from crm_hub.errors import InputRejected
from tests.contacts.factories import CustomFieldFactory, TagFactory
from tests.contacts.test_import import csv_bytes
from tests.contacts.test_import_files import confirm, error_rows, start, stored_files, xlsx_bytes

pytestmark = pytest.mark.django_db


def preview(actor, job: ImportJob, mapping: dict | None = None) -> services.Preview:
    return services.preview_import(job=job, mapping=mapping or job.mapping, mode="create_update", actor=actor)


def error_file(job: ImportJob) -> bytes:
    return job.error_file.open("rb").read()


def admin_preview(client, body: bytes, post: dict, name: str = "people.csv"):
    client.post(
        reverse("admin:contacts_contact_import_upload"),
        {"file": SimpleUploadedFile(name, body), "mode": "create_update"},
    )
    job = ImportJob.objects.latest("pk")
    map_url = reverse("admin:contacts_contact_import_map", args=[job.pk])
    return job, map_url, client.post(map_url, {"mode": "create_update", **post, "_preview": "1"})


# --- 1. quoting is RFC 4180's, whatever apostrophes the file holds ---------------------------


def test_our_failed_rows_file_reads_back_exactly_and_its_quoted_commas_stay_in_one_cell(staff_actor):
    TagFactory(name="lead")
    TagFactory(name="vip")
    headers = ["Name", "Email", "Tags", "Company"]
    rows = [[f"P{i}", f"p{i}@@example.com", "", "Acme"] for i in range(5)]
    rows.append(["Ann", "ann@@example.com", "lead, vip", 'Acme "Best" Co, Ltd'])
    job = confirm(staff_actor, start(staff_actor, csv_bytes(rows, headers=headers)))
    assert job.failed_count == 6
    body = error_file(job)
    # Every reason quotes its value ('p0@@example.com'): csv.Sniffer took those apostrophes for quotes.
    assert b"'ann@@example.com'" in body

    again = start(staff_actor, body, name="people-errors.csv")
    assert list(again.mapping) == [*headers, "error"]
    read_back = [row.cells for row in preview(staff_actor, again).rows]
    assert read_back == error_rows(job)[1:]
    assert read_back[5][:4] == ["Ann", "ann@@example.com", "lead, vip", 'Acme "Best" Co, Ltd']

    fixed = start(staff_actor, body.replace(b"@@", b"@"), name="people-errors.csv")
    assert confirm(staff_actor, fixed).created_count == 6
    ann = Contact.objects.get(email_normalized="ann@example.com")
    assert ann.company == 'Acme "Best" Co, Ltd'
    assert sorted(ann.tags.values_list("name", flat=True)) == ["lead", "vip"]


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_other_delimiters_are_found_and_quoting_still_follows_rfc_4180(staff_actor, delimiter):
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter)
    writer.writerow(["Name", "Company", "Email"])
    writer.writerow(["Ann", f'Acme "Best" Co{delimiter} Ltd, it\'s', "ann@example.com"])
    writer.writerow(["Bob's", "Bobco, Inc", "bob@example.com"])
    job = confirm(staff_actor, start(staff_actor, out.getvalue().encode()))
    assert (job.created_count, job.failed_count) == (2, 0)
    # Whitespace runs in a name or company read as one space (a tab included), as the API stores them.
    assert Contact.objects.get(name="Ann").company == " ".join(f'Acme "Best" Co{delimiter} Ltd, it\'s'.split())
    assert Contact.objects.get(name="Bob's").company == "Bobco, Inc"


# --- 2. a row wider than the header fails, and keeps every cell in the failed-rows file -------


def test_a_row_with_more_cells_than_the_header_fails_and_the_error_file_keeps_them(staff_actor):
    body = (
        b"Name,Email,Company\r\n"
        b"Ann,ann@example.com,Acme, Inc\r\n"
        b"Bob,bob@example.com,Bobco,,\r\n"  # trailing empty cells are only formatting
        b"Cy,cy@example.com,\r\n"
    )
    job = start(staff_actor, body)
    outcomes = {row.line: row for row in preview(staff_actor, job).rows}
    assert outcomes[2].action == "error"
    assert outcomes[2].reason == "line 2 has 4 cells, the header has 3: check for an unquoted comma in a value"
    assert (outcomes[3].action, outcomes[4].action) == ("create", "create")

    job = confirm(staff_actor, job)
    assert (job.created_count, job.failed_count) == (2, 1)
    assert not Contact.objects.filter(email_normalized="ann@example.com").exists()
    rows = error_rows(job)
    assert rows[0] == ["Name", "Email", "Company", "error"]
    assert rows[1] == ["Ann", "ann@example.com", "Acme", " Inc", outcomes[2].reason]


def test_a_semicolon_file_names_the_semicolon(staff_actor):
    body = b"Name;Email;Company\nAnn;ann@example.com;Acme; Inc\nBob;bob@example.com;Bobco\n"
    rows = preview(staff_actor, start(staff_actor, body)).rows
    assert rows[0].reason == "line 2 has 4 cells, the header has 3: check for an unquoted semicolon in a value"
    assert rows[1].action == "create"


def test_an_xlsx_value_right_of_the_last_header_fails_its_row(staff_actor, tmp_path):
    body = xlsx_bytes(
        [
            ["Name", "Email", None],
            ["Ann", "ann@example.com", None, None, "forgotten"],
            ["Bob", "bob@example.com", None, None],
        ]
    )
    path = tmp_path / "people.xlsx"
    path.write_bytes(body)
    out = io.StringIO()
    call_command("import_contacts", str(path), "--dry-run", "--no-progress", stdout=out)
    assert "would create 1" in out.getvalue() and "1 row(s) have errors" in out.getvalue()
    assert "line 2 has 5 cells, the header has 2: check for values to the right of the last header" in out.getvalue()

    job = confirm(staff_actor, start(staff_actor, body, name="people.xlsx"))
    assert (job.created_count, job.failed_count) == (1, 1)
    assert error_rows(job)[1][:5] == ["Ann", "ann@example.com", "", "", "forgotten"]


# --- 3. NUL characters (and lone surrogates) fail their row, not the batch ---------------------


def test_a_nul_character_fails_its_row_with_the_column_named_and_the_others_import(admin_client):
    CustomFieldFactory(key="note", label="Note", type=CustomField.Type.TEXT)
    body = (
        b"Name,Email,Note,Ignored\r\n"
        b"A\x00nn,ann@example.com,fine,\r\n"
        b"Bob,bob@example.com,b\x00ad,\r\n"
        b"Cy,cy@example.com,ok,any\x00thing\r\n"
    )
    post = {"col_0": "name", "col_1": "email", "col_2": "custom.note", "col_3": ""}
    job, map_url, page = admin_preview(admin_client, body, post)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Create 1 · Update 0 · Skip 0 · Error 2" in html
    assert "name: holds a NUL character" in html and "custom.note: holds a NUL character" in html

    admin_client.post(map_url, {"mode": "create_update", **post, "_confirm": "1"})
    job.refresh_from_db()
    assert (job.status, job.created_count, job.failed_count) == ("done", 1, 2)
    assert Contact.objects.get().custom == {"note": "ok"}
    assert [row[:3] for row in error_rows(job)[1:]] == [
        ["A\x00nn", "ann@example.com", "fine"],
        ["Bob", "bob@example.com", "b\x00ad"],
    ]


def test_a_nul_in_a_header_is_dropped(staff_actor):
    job = start(staff_actor, b"Na\x00me,Email\r\nAnn,ann@example.com\r\n")
    assert job.mapping == {"Name": "name", "Email": "email"}
    assert confirm(staff_actor, job).created_count == 1


def test_a_lone_surrogate_fails_its_row_and_the_failed_rows_file_is_still_written(staff_actor, monkeypatch):
    # No reader produces one today (strict UTF-8 and UTF-16, cp1252, XML all refuse it); a decoder
    # that passes bad bytes through as surrogates stands in for the next reader that might.
    monkeypatch.setattr(readers, "_text_encoding", lambda binary: ("utf-8", "surrogateescape"))
    body = b"Name,Email\r\nAnn \xff,ann@example.com\r\nBob,bob@example.com\r\n"
    job = start(staff_actor, body)
    rows = preview(staff_actor, job).rows
    assert (rows[0].action, rows[0].reason) == ("error", "name: holds a lone surrogate (an invalid character)")
    job = confirm(staff_actor, job)
    assert (job.status, job.created_count, job.failed_count) == ("done", 1, 1)
    assert error_rows(job)[1][:2] == ["Ann \ufffd", "ann@example.com"]


# --- 4. a custom date that does not exist -------------------------------------------------------


def test_an_impossible_custom_date_fails_its_row_in_preview_and_import(staff_actor, admin_client):
    CustomFieldFactory(key="renewal", label="Renewal", type=CustomField.Type.DATE)
    rows = [["Ann", "ann@example.com", "2027-02-30"], ["Bob", "bob@example.com", "2027-13-01"],
            ["Cy", "cy@example.com", "2027-03-01"], ["Di", "di@example.com", "0000-01-01"]]
    body = csv_bytes(rows, headers=["Name", "Email", "Renewal"])
    post = {"col_0": "name", "col_1": "email", "col_2": "custom.renewal"}
    _job, _url, page = admin_preview(admin_client, body, post)
    assert page.status_code == 200
    assert page.content.decode().count("custom.renewal: Expected a date as YYYY-MM-DD") == 3

    job = confirm(staff_actor, start(staff_actor, body))
    assert (job.status, job.created_count, job.failed_count) == ("done", 1, 3)
    assert Contact.objects.get().custom == {"renewal": "2027-03-01"}


# --- 5. the failed-rows file is formula-safe, and a fixed one imports the original values -------


def test_the_failed_rows_file_is_neutralized_and_a_fixed_one_gives_back_the_original_values(staff_actor):
    CustomFieldFactory(key="note", label="Note", type=CustomField.Type.TEXT)
    headers = ["Name", "Email", "Company", "=Note", "Other"]
    mapping = {"Name": "name", "Email": "email", "Company": "company", "=Note": "custom.note", "Other": ""}
    job = confirm(
        staff_actor,
        start(staff_actor, csv_bytes([["=SUM(1)", "bad@", "+1+1", "@home", "-2"]], headers=headers)),
        mapping,
    )
    rows = error_rows(job)
    assert rows[0] == ["Name", "Email", "Company", "'=Note", "Other", "error"]
    assert rows[1][:5] == ["'=SUM(1)", "bad@", "'+1+1", "'@home", "'-2"]

    rows[1][1] = "ann@example.com"
    again = start(staff_actor, csv_bytes(rows[1:], headers=rows[0]), name="people-errors.csv")
    assert again.mapping == {**mapping, "error": ""}  # the remembered mapping, headers as they were
    assert confirm(staff_actor, again).created_count == 1
    ann = Contact.objects.get()
    assert (ann.name, ann.email, ann.company, ann.custom) == ("=SUM(1)", "ann@example.com", "+1+1", {"note": "@home"})


# --- 6. an error file of an error file keeps one error column -----------------------------------


def test_an_error_file_of_an_error_file_has_one_error_column_and_keeps_the_mapping(staff_actor):
    headers = ["Who", "Cell", "Mail"]
    mapping = {"Who": "name", "Cell": "phone", "Mail": "email"}
    first = confirm(staff_actor, start(staff_actor, csv_bytes([["Bob", "", "bob@"]], headers=headers)), mapping)
    second = start(staff_actor, error_file(first), name="people-errors.csv")
    assert second.mapping == {**mapping, "error": ""}
    second = confirm(staff_actor, second)
    rows = error_rows(second)
    assert rows == [[*headers, "error"], ["Bob", "", "bob@", "email: 'bob@' is not a valid email address"]]

    third = start(staff_actor, error_file(second).replace(b"bob@,", b"bob@example.com,"), name="people-errors-errors.csv")
    assert third.mapping == {**mapping, "error": ""}
    assert confirm(staff_actor, third).created_count == 1


def test_an_old_error_file_with_two_error_columns_still_gets_the_remembered_mapping(staff_actor):
    mapping = {"Who": "name", "Mail": "email"}
    confirm(staff_actor, start(staff_actor, csv_bytes([["Ann", "ann@example.com"]], headers=["Who", "Mail"])), mapping)
    old = csv_bytes([["Bob", "bob@example.com", "email: 'bob@' ...", "email: 'bob@' ..."]],
                    headers=["Who", "Mail", "error", "error"])
    job = start(staff_actor, old, name="people-errors-errors.csv")
    assert job.mapping == {**mapping, "error": "", "error (2)": ""}
    assert confirm(staff_actor, job).created_count == 1


# --- 7. damaged UTF-16 --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "Name\tEmail\r\nZoë\tzoe@example.com\r\n".encode("utf-16") + b"\x00",  # an odd number of bytes
        "Name\tEmail\r\n".encode("utf-16") + "Zo".encode("utf-16-le") + b"\x00\xd8" + "\tz@example.com\r\n".encode("utf-16-le"),
    ],
    ids=["odd-byte-count", "unpaired-surrogate"],
)
def test_damaged_utf16_is_refused_with_a_message_and_leaves_no_file(staff_actor, admin_client, settings, body):
    with pytest.raises(InputRejected) as refused:
        start(staff_actor, body, name="people.txt")
    assert refused.value.errors[0].field == "file"
    assert "not valid UTF-16 text" in refused.value.errors[0].message
    assert not ImportJob.objects.exists()
    assert stored_files(settings) == []

    page = admin_client.post(
        reverse("admin:contacts_contact_import_upload"),
        {"file": SimpleUploadedFile("people.txt", body), "mode": "create_update"},
    )
    assert page.status_code == 200
    assert "not valid UTF-16 text" in page.content.decode()


# --- 8. a file that repeats a person with other values, imported again ------------------------


def test_importing_again_a_file_that_repeats_a_person_changes_nothing_and_writes_no_history(staff_actor):
    headers = ["Name", "Phone", "Company"]
    rows = [["Ann D", "+1 561 555 0192", "Acme"], ["Ann E", "(561) 555-0192", "Acme"]]
    first = confirm(staff_actor, start(staff_actor, csv_bytes(rows, headers=headers)))
    assert (first.created_count, first.updated_count, first.skipped_count) == (1, 0, 1)
    ann = Contact.objects.get()
    entries = HistoryEntry.objects.filter(contact=ann).count()

    job = start(staff_actor, csv_bytes(rows, headers=headers))
    assert [(row.action, row.reason, row.diff) for row in preview(staff_actor, job).rows] == [
        ("skip", "no changes", {}), ("skip", "no changes", {})
    ]
    again = confirm(staff_actor, job)
    assert (again.created_count, again.updated_count, again.skipped_count) == (0, 0, 2)
    assert HistoryEntry.objects.filter(contact=ann).count() == entries
    assert not ImportChange.objects.filter(job=again).exists()
    ann.refresh_from_db()
    assert (ann.name, ann.phone) == ("Ann E", "+1 561 555 0192")

    # Matched by email, another number and back in another spelling: the phone did not change either.
    Contact.objects.filter(pk=ann.pk).update(email="ann@example.com", email_normalized="ann@example.com")
    rows = [["Ann E", "+1 415 555 0100", "ann@example.com"], ["Ann E", "561-555-0192", "ann@example.com"]]
    again = confirm(staff_actor, start(staff_actor, csv_bytes(rows, headers=["Name", "Phone", "Email"])))
    assert (again.created_count, again.updated_count, again.skipped_count) == (0, 0, 2)
    ann.refresh_from_db()
    assert (ann.phone, ann.phone_e164) == ("+1 561 555 0192", "+15615550192")
    assert HistoryEntry.objects.filter(contact=ann).count() == entries


def test_only_what_a_repeated_person_really_changed_is_written_and_reverted(staff_actor):
    headers = ["Name", "Phone", "Company"]
    confirm(staff_actor, start(staff_actor, csv_bytes([["Ann E", "+1 561 555 0192", "Acme"]], headers=headers)))
    rows = [["Ann D", "+1 561 555 0192", "Beta"], ["Ann E", "+1 561 555 0192", ""]]
    job = confirm(staff_actor, start(staff_actor, csv_bytes(rows, headers=headers)))
    assert (job.updated_count, job.skipped_count) == (1, 1)  # one contact updated; the second row repeats it
    ann = Contact.objects.get()
    assert (ann.name, ann.company) == ("Ann E", "Beta")
    assert HistoryEntry.objects.filter(contact=ann).latest("pk").changes == {"company": ["Acme", "Beta"]}
    assert ImportChange.objects.get(job=job).before == {"company": "Acme"}

    services.revert_import(job=job, actor=staff_actor)
    ann.refresh_from_db()
    assert (ann.name, ann.company) == ("Ann E", "Acme")


# --- 9. rows with nothing to match them by --------------------------------------------------------


def test_a_row_without_phone_or_email_is_created_and_the_preview_says_it_will_be_again(staff_actor, admin_client):
    body = csv_bytes([["Solo", ""], ["Ann", "ann@example.com"]], headers=["Name", "Email"])
    _job, _url, page = admin_preview(admin_client, body, {"col_0": "name", "col_1": "email"})
    assert "no phone or email: a new contact is created each time this row is imported" in page.content.decode()

    job = start(staff_actor, body)
    rows = preview(staff_actor, job).rows
    assert [(row.action, row.reason) for row in rows] == [
        ("create", "no phone or email: a new contact is created each time this row is imported"),
        ("create", ""),
    ]
    confirm(staff_actor, job)
    confirm(staff_actor, start(staff_actor, body))
    assert Contact.objects.filter(name="Solo").count() == 2  # still created: a name alone is a contact
    assert Contact.objects.filter(name="Ann").count() == 1


# --- 10. Outlook's "Title" and "Job Title" -------------------------------------------------------


def test_job_title_maps_to_position_and_a_bare_title_beside_it_is_left_alone(staff_actor):
    outlook = ["Title", "First Name", "Middle Name", "Last Name", "Suffix", "Company", "Department",
               "Job Title", "Business Street", "E-mail Address", "Mobile Phone"]
    job = start(staff_actor, csv_bytes([["Ms.", "Ann", "", "Lee", "", "Acme", "", "CTO", "", "ann@example.com", ""]],
                                       headers=outlook))
    assert job.mapping["Job Title"] == "position"
    assert job.mapping["Title"] == ""
    assert {h: t for h, t in job.mapping.items() if t} == {
        "First Name": "first_name", "Last Name": "last_name", "Company": "company", "Job Title": "position",
        "E-mail Address": "email", "Mobile Phone": "phone",
    }
    confirm(staff_actor, job)
    assert Contact.objects.values_list("name", "position").get() == ("Ann Lee", "CTO")

    # Alone, "Title" still means the job title, as in most CRMs' exports.
    assert start(staff_actor, csv_bytes([["Bob", "CEO"]], headers=["Name", "Title"])).mapping["Title"] == "position"


def test_a_cell_with_a_control_character_fails_its_row_with_the_reason(staff_actor):
    from tests.contacts.test_import import dry_run

    result, outcomes = dry_run(staff_actor, [["Bell\u0007 Man", "+1 561 555 0101", "bell@example.com"],
                                             ["Fine Person", "+1 561 555 0102", "fine@example.com"]],
                               headers=["Name", "Phone", "Email"])
    assert [o.action for o in outcomes] == ["error", "create"]
    assert outcomes[0].reason.startswith("name:") and "U+0007" in outcomes[0].reason


def test_a_batch_that_postgresql_fails_to_break_a_deadlock_is_written_again(staff_actor, monkeypatch):
    from psycopg.errors import DeadlockDetected

    from contacts.importing.engine import Engine
    from tests.contacts.test_import import do_import

    real_apply, calls = Engine._apply, []

    def deadlocked_once(self, batch, result):
        calls.append(len(batch))
        if len(calls) == 1:
            raise DeadlockDetected("deadlock detected")
        return real_apply(self, batch, result)

    monkeypatch.setattr(Engine, "_apply", deadlocked_once)
    monkeypatch.setattr("contacts.importing.engine.time.sleep", lambda seconds: None)
    job = do_import(staff_actor, [["Ana Lima", "+1 561 555 0111", "ana@example.com", "", ""],
                                  ["Bo Chen", "+1 561 555 0112", "bo@example.com", "", ""]])
    job.refresh_from_db()
    assert (job.status, job.created_count, job.failed_count) == ("done", 2, 0)
    assert calls == [2, 2]


def _file_with_a_stray_quote(at: int, rows: int = 30) -> bytes:
    lines = ["Name,Phone,Email,Company"]
    for n in range(rows):
        company = '"Acme, Inc' if n == at else "Acme"
        lines.append(f"Person {n},+1 617 555 {1000 + n},p{n}@example.com,{company}")
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize("at", [10, 28])  # 28: the row before the last swallows the last
def test_a_stray_quote_that_swallows_rows_is_named_not_lost(staff_actor, at):
    from contacts.importing.readers import UnreadableFile, open_rows

    with pytest.raises(UnreadableFile) as refused, open_rows(io.BytesIO(_file_with_a_stray_quote(at)), "csv") as (_h, rows):
        list(rows)
    assert f"Line {at + 2}: a quote opened in this row" in str(refused.value)


def test_a_quoted_cell_over_several_lines_is_still_a_cell(staff_actor):
    from contacts.importing.readers import open_rows

    data = b'Name,Phone,Street\nAna,+1 617 555 1000,"Rua 1\nApto 2, fundos"\nBo,+1 617 555 1001,Main St\n'
    with open_rows(io.BytesIO(data), "csv") as (_headers, rows):
        assert [r[2] for r in rows] == ["Rua 1\nApto 2, fundos", "Main St"]


def test_an_import_stopped_by_a_stray_quote_says_where(staff_actor):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from contacts.importing import services as import_services

    upload = SimpleUploadedFile("stray.csv", _file_with_a_stray_quote(1500, rows=3000), content_type="text/csv")
    job = import_services.create_import_job(upload=upload, actor=staff_actor, mode="create_update")
    job = import_services.confirm_import(job=job, mapping=job.mapping, mode="create_update", actor=staff_actor,
                                         inline=True)
    job.refresh_from_db()
    assert job.status == "failed" and "Line 1502: a quote opened in this row" in job.message


def test_a_person_repeated_in_a_later_batch_counts_once(staff_actor, settings):
    from contacts.models import ImportChange
    from tests.contacts.test_import import do_import, existing

    settings.CRM_IMPORT_BATCH_SIZE = 2
    known = existing(staff_actor, name="Known", phone="+1 561 555 0300", company="Old")
    rows = [
        ["New Person", "+1 561 555 0301", "new@example.com", "Acme", ""],
        ["Known", "+1 561 555 0300", "", "First", ""],
        ["New Person", "(561) 555-0301", "", "Acme Inc", ""],   # batch 2: repeats a contact batch 1 created
        ["Known", "561-555-0300", "", "Second", ""],           # batch 2: repeats a contact batch 1 updated
    ]
    job = do_import(staff_actor, rows)
    job.refresh_from_db()
    assert (job.created_count, job.updated_count, job.skipped_count, job.failed_count) == (1, 1, 2, 0)
    known.refresh_from_db()
    assert known.company == "Second"  # the later row still merges in
    assert Contact.objects.get(phone_e164="+15615550301").company == "Acme Inc"
    # One undo record a contact: the updated one's keeps the value before the import.
    assert sorted(ImportChange.objects.filter(job=job).values_list("created", flat=True)) == [False, True]
    assert ImportChange.objects.get(job=job, created=False).before == {"company": "Old"}
    from contacts.importing import services as import_services

    job, report = import_services.revert_import_reporting(job=job, actor=staff_actor)
    assert (report.deleted, report.restored) == (1, 1)
    known.refresh_from_db()
    assert known.company == "Old" and not Contact.objects.filter(phone_e164="+15615550301").exists()


@pytest.mark.parametrize("data", [
    b'Name,Phone,Email,Address\nAddr Real,+1 561 555 7120,ar@example.com,"1 Main St\nSpringfield, IL, 62704, USA"\n'
    b"Next,+1 561 555 7121,nx@example.com,2 Side St\n",
    b'Name,Phone,Street\n"Multi\nline, name, x",+1 561 555 7122,Main\n',
])
def test_a_quoted_cell_whose_second_line_has_commas_is_still_a_cell(data):
    from contacts.importing.readers import open_rows

    with open_rows(io.BytesIO(data), "csv") as (_headers, rows):
        cells = list(rows)
    assert len(cells) in (1, 2) and any("\n" in cell for row in cells for cell in row)


def test_rows_repeating_an_existing_contact_count_it_updated_once(staff_actor):
    from tests.contacts.test_import import do_import, dry_run, existing

    eve = existing(staff_actor, name="Eve", phone="+1 561 555 0192", email="eve@example.com")
    rows = [
        ["Eve", "561-555-0192", "", "EveCorp", ""],
        ["Eve again", "(561) 555 0192", "", "EveCorp3", ""],
        ["Eve by email", "", "EVE@example.com", "EveCorp2", ""],
    ]
    preview, outcomes = dry_run(staff_actor, rows)
    assert (preview.created, preview.updated, preview.skipped) == (0, 1, 2)
    assert [o.action for o in outcomes] == ["update", "skip", "skip"]
    assert outcomes[1].reason == f"repeats contact #{eve.pk}, which a row above updated; merged into it"
    job = do_import(staff_actor, rows)
    job.refresh_from_db()
    assert (job.created_count, job.updated_count, job.skipped_count) == (0, 1, 2)
    eve.refresh_from_db()
    assert (eve.name, eve.company) == ("Eve by email", "EveCorp2")


def test_a_dry_run_counts_a_person_repeated_in_a_later_batch_as_the_import_will(staff_actor, settings):
    from tests.contacts.test_import import do_import, dry_run

    settings.CRM_IMPORT_BATCH_SIZE = 2
    rows = [
        ["Aaa One", "+1 617 955 4201", "aaa1@yy.example", "", ""],
        ["Bbb Two", "+1 617 955 4202", "bbb2@yy.example", "", ""],
        ["Aaa Again", "(617) 955-4201", "", "", ""],
    ]
    preview, _outcomes = dry_run(staff_actor, rows)
    assert not ImportJob.objects.exists()  # the dry run's own job was rolled back with the rest
    job = do_import(staff_actor, rows)
    job.refresh_from_db()
    assert (preview.created, preview.updated, preview.skipped) == (job.created_count, job.updated_count, job.skipped_count) == (2, 0, 1)


def test_a_second_confirm_of_the_same_draft_does_not_run_the_import_again(staff_actor):
    from contacts.importing import services as import_services
    from tests.contacts.test_import import upload

    rows = [["Dbl One", "+1 617 955 7001", "dbl1@yy.example", "", ""], ["Dbl Two", "+1 617 955 7002", "dbl2@yy.example", "", ""]]
    job = import_services.create_import_job(upload=upload(rows), actor=staff_actor, mode="create_update")
    first_view, second_view = ImportJob.objects.get(pk=job.pk), ImportJob.objects.get(pk=job.pk)  # two requests
    import_services.confirm_import(job=first_view, mapping=job.mapping, mode="create_update", actor=staff_actor)
    with pytest.raises(InputRejected) as refused:
        import_services.confirm_import(job=second_view, mapping=job.mapping, mode="create_update", actor=staff_actor)
    assert refused.value.errors[0].code == "invalid_state"
    job.refresh_from_db()
    assert (job.status, job.created_count, job.skipped_count) == ("done", 2, 0)


def test_a_revert_says_which_created_contacts_were_merged_or_deleted_since(staff_actor):
    from contacts import services as contact_services
    from contacts.importing import services as import_services
    from contacts.models import Source
    from tests.contacts.test_import import do_import, existing

    keeper = existing(staff_actor, name="Keeper", email="keeper@example.com")
    job = do_import(staff_actor, [
        ["Merge Me", "+1 617 955 6001", "mergeme@yy.example", "MergeCo", ""],
        ["Delete Me", "+1 617 955 6002", "deleteme@yy.example", "", ""],
        ["Plain", "+1 617 955 6003", "plain@yy.example", "", ""],
    ])
    merge_me = Contact.objects.get(phone_e164="+16179556001")
    contact_services.merge_contacts(keep=keeper, other=merge_me, actor=staff_actor, source=Source.MANUAL)
    Contact.objects.filter(phone_e164="+16179556002").delete()
    job, report = import_services.revert_import_reporting(job=job, actor=staff_actor)
    assert report.deleted == 1
    assert report.merged_contacts == [f"#{merge_me.pk} into #{keeper.pk}"]
    assert len(report.gone_contacts) == 1
    described = report.describe()
    assert "1 created contact not deleted: merged into another contact since" in described
    assert "1 created contact already deleted by someone else" in described
    assert Contact.objects.filter(pk=keeper.pk).exists()


def test_a_multiple_choice_cell_may_separate_options_with_semicolons_as_tags_do(staff_actor):
    from tests.contacts.test_import import dry_run

    CustomFieldFactory(key="sports", label="Sports", type="multiple_choice", choices=["Golf", "Tennis", "Chess"])
    result, outcomes = dry_run(staff_actor, [["Ana", "+1 561 555 0310", "Golf; Tennis"]], headers=["Name", "Phone", "Sports"])
    assert outcomes[0].action == "create" and outcomes[0].diff["custom.sports"] == [None, ["Golf", "Tennis"]]


def test_a_birthday_cell_with_a_time_of_day_is_read_as_its_date(staff_actor):
    from tests.contacts.test_import import dry_run

    _result, outcomes = dry_run(staff_actor, [["Ana", "+1 561 555 0311", "2001-01-01T13:45:00"]], headers=["Name", "Phone", "Birthday"])
    assert outcomes[0].action == "create" and outcomes[0].diff["birthday"] == ["", "2001-01-01"]

